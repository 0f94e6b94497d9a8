"""The score's Monte Carlo draws: randomized quasi-Monte Carlo (scrambled-by-shift Sobol
points), an honest standard error from independent randomizations, and model files
from before it keeping their independent draws."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from typer.testing import CliRunner

from conftest import rewrite_metadata
from vae_anomaly import load
from vae_anomaly.cli import app
from vae_anomaly.errors import ModelFileError
from vae_anomaly.scoring import draw_count, row_keys, row_sobol_normals, score_rows, sobol_plan

runner = CliRunner()


@pytest.mark.parametrize("samples, plan, passes", [
    (1, (1, 1), 1), (2, (1, 2), 2), (3, (1, 3), 3), (4, (2, 2), 4), (5, (2, 2), 4),
    (8, (4, 2), 8), (12, (4, 3), 12), (16, (8, 2), 16), (20, (8, 2), 16), (64, (8, 8), 64),
])
def test_k_draws_are_r_randomizations_of_p_sobol_points(samples, plan, passes):
    assert sobol_plan(samples) == plan
    assert draw_count(samples) == passes and draw_count(samples, "iid") == samples
    assert row_sobol_normals(0, np.arange(3), samples, 2).shape == (passes, 3, 2)


def test_sobol_normals_are_standard_normal_stratified_and_tied_to_the_row():
    draws = row_sobol_normals(seed=3, rows=np.arange(20_000), samples=8, dim=5).numpy()
    assert draws.shape == (8, 20_000, 5) and np.isfinite(draws).all()
    # Every draw is N(0, 1) in every dim: a random shift makes each point uniform.
    for k in (0, 5):
        assert stats.kstest(draws[k, :, 1], "norm").pvalue > 1e-3
    assert abs(draws.mean()) < 0.01 and abs(draws.std() - 1) < 0.01
    # The 4 points of one randomization fill each dim's quarters once each (the Sobol
    # net under a digital shift); independent draws would do so for 3 rows in 32.
    quarters = np.floor(stats.norm.cdf(draws[:4]) * 4)
    assert (np.sort(quarters, axis=0) == np.arange(4)[:, None, None]).all()
    # The two randomizations are independent of each other.
    assert abs(np.corrcoef(draws[0, :, 0], draws[4, :, 0])[0, 1]) < 0.03
    # A row's draws depend on its id and the seed, not on the rest of the batch.
    alone = row_sobol_normals(seed=3, rows=np.array([12_345]), samples=8, dim=5).numpy()
    np.testing.assert_array_equal(alone[:, 0], draws[:, 12_345])
    assert not np.array_equal(row_sobol_normals(4, np.array([12_345]), 8, 5).numpy(), alone)
    assert not torch.equal(row_sobol_normals(3, [2**40 + 7], 8, 5),
                           row_sobol_normals(3, [7], 8, 5))


@pytest.fixture(scope="module")
def repeats(tiny_model, tiny_dir):
    """Each of 60 rows scored under 120 seeds (independent randomizations): per
    scheme and K, the reconstruction term's spread over the seeds and the mean of
    the squared standard errors reported."""
    detector = load(tiny_model)
    batch = detector.preprocessor_.transform(pd.read_csv(tiny_dir / "new.csv"))
    keys = row_keys(batch)
    out = {}
    for draws, samples in (("sobol", 8), ("iid", 8), ("iid", 16)):
        parts = [score_rows(detector.model_, batch, keys, samples=samples, seed=seed,
                            draws=draws) for seed in range(120)]
        estimates = np.stack([p.reconstruction for p in parts])
        errors = np.stack([p.std_error for p in parts])
        out[draws, samples] = (estimates.var(0, ddof=1), (errors**2).mean(0))
    return out


def test_the_standard_error_matches_the_spread_of_independent_repeats(repeats):
    variance, squared_error = repeats["sobol", 8]
    # Pooled over the rows: the mean squared SE against the variance over repeats.
    # 120 repeats of 60 rows put the ratio within a few percent of the truth; the
    # spread of the 8 points themselves, divided by sqrt(8), would claim 0.3 to 0.5.
    assert 0.85 < squared_error.sum() / variance.sum() < 1.18
    # Row by row too: no row's SE is off by half.
    ratio = squared_error / variance
    assert np.median(ratio) == pytest.approx(1.0, abs=0.2)
    assert ((ratio > 0.5) & (ratio < 2.0)).mean() > 0.9


def test_eight_sobol_passes_are_as_precise_as_sixteen_independent_draws(repeats):
    sobol, iid8, iid16 = (repeats[key][0].sum() for key in
                          (("sobol", 8), ("iid", 8), ("iid", 16)))
    assert sobol < 0.7 * iid8  # the same passes, a smaller error
    assert sobol < 1.15 * iid16  # half the passes, about the error (0.98x on sample_data)


def test_a_model_file_from_before_the_sobol_draws_keeps_its_independent_draws(
        tiny_model, tiny_dir, tmp_path):
    old_file = tmp_path / "old.vae"
    old_file.write_bytes(rewrite_metadata(tiny_model.read_bytes(),
                                          lambda meta: meta["training"].pop("draws")))
    old, new = load(old_file), load(tiny_model)
    assert (old.draws_, new.draws_) == ("iid", "sobol")
    frame = pd.read_csv(tiny_dir / "new.csv")
    batch = old.preprocessor_.transform(frame)
    expected = score_rows(old.model_, batch, row_keys(batch), samples=old.samples,
                          seed=old.seed, draws="iid")
    np.testing.assert_array_equal(old.score(frame)["anomaly_score"], expected.elbo)
    assert not np.array_equal(new.score(frame)["anomaly_score"], expected.elbo)
    info = json.loads(runner.invoke(app, ["info", str(old_file), "--json"]).stdout)
    assert info["draws"] == "iid"


def test_a_model_file_with_unknown_draws_is_refused(tiny_model, tmp_path):
    bad = tmp_path / "bad.vae"
    bad.write_bytes(rewrite_metadata(tiny_model.read_bytes(),
                                     lambda meta: meta["training"].update(draws="halton")))
    with pytest.raises(ModelFileError, match="its Monte Carlo draws 'halton' are not one "
                                             "of sobol, iid"):
        load(bad)


def test_samples_sets_the_passes_and_a_row_scores_the_same_in_any_company(tiny_model,
                                                                          tiny_dir):
    detector = load(tiny_model)
    frame = pd.read_csv(tiny_dir / "new.csv")
    whole = detector.score(frame, samples=12)
    alone = detector.score(frame.iloc[[7, 3]].reset_index(drop=True), samples=12)
    np.testing.assert_array_equal(alone["anomaly_score"], whole["anomaly_score"].iloc[[7, 3]])
    np.testing.assert_array_equal(alone["score_std_error"],
                                  whole["score_std_error"].iloc[[7, 3]])
    assert not np.array_equal(whole["anomaly_score"], detector.score(frame)["anomaly_score"])
    assert detector.score(frame, samples=1)["score_std_error"].isna().all()
