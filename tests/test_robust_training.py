"""Robust training on dirty "normal" files: rows whose loss stands far out leave the
gradient and the threshold, and the user is told which rows they were."""

import json
import math

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from conftest import make_records
from test_hostile_inputs import assert_one_line_error
from vae_anomaly import VAEAnomalyDetector, load
from vae_anomaly.artifact import read_model, write_model
from vae_anomaly.cli import app
from vae_anomaly.data import to_arrow
from vae_anomaly.rejection import (AUTO_CUT, MAX_CONTAMINATION, MAX_CONTAMINATION_SHARE,
                                   loss_cut, parse_contamination)

runner = CliRunner()
N_ROWS, N_BROKEN = 1500, 45


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def broken(frame: pd.DataFrame, rows: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """``rows`` of ``frame`` with y's relation to x reversed (y = -2x), as a bad export
    or a unit mix-up would leave them; the first third also with an absurd amount."""
    frame = frame.copy()
    noise = np.random.default_rng(seed).normal(scale=0.1, size=len(rows))
    frame.loc[rows, "y"] = (-2 * frame.loc[rows, "x"] + noise).round(4)
    frame.loc[rows[:len(rows) // 3], "amount"] = 1e6
    return frame


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """A training file of 1,500 rows, 3% of them broken, and the ids of those."""
    folder = tmp_path_factory.mktemp("dirty")
    rows = np.random.default_rng(0).choice(N_ROWS, N_BROKEN, replace=False)
    frame = broken(make_records(N_ROWS, seed=3), rows)
    frame.to_csv(folder / "train.csv", index=False)
    return folder, set(frame.loc[rows, "id"])


@pytest.fixture(scope="module")
def dirty_fit(dirty):
    """`fit` with default settings and --training-outliers, run once."""
    folder, _ = dirty
    result = invoke("fit", folder / "train.csv", "--model", folder / "model.vae",
                    "--training-outliers", folder / "outliers.csv", "--calibration-fits", 0)
    return folder, result


# ----- the rule ---------------------------------------------------------------------
def test_a_fixed_share_cuts_that_share_of_the_rows():
    losses = np.arange(1000, dtype=float)
    assert np.sum(losses > loss_cut(losses, 0.05)) == 50
    assert loss_cut(losses, 0.0) == math.inf
    # A larger share (the threshold's, up to 0.5) rejects MAX_CONTAMINATION of them.
    assert loss_cut(losses, 0.4) == loss_cut(losses, MAX_CONTAMINATION)


def test_auto_rejects_only_rows_far_beyond_the_rest():
    losses = np.random.default_rng(0).normal(size=10_000)
    assert not np.any(losses > loss_cut(losses, "auto"))  # a normal tail stays
    far = np.concatenate([losses, np.full(300, 2 * AUTO_CUT)])
    assert np.sum(far > loss_cut(far, "auto")) == 300
    # Never more than MAX_CONTAMINATION of the rows, however wide the tail.
    wide = np.concatenate([np.zeros(100), np.full(60, 1e6)])
    assert np.sum(wide > loss_cut(wide, "auto")) <= MAX_CONTAMINATION * len(wide)
    assert loss_cut(np.ones(50), "auto") == math.inf  # no spread: nothing stands out


@pytest.mark.parametrize("value, parsed", [("auto", "auto"), ("AUTO", "auto"), ("0", 0.0),
                                           ("0.05", 0.05), (0.2, 0.2), ("0.5", 0.5)])
def test_contamination_settings(value, parsed):
    assert parse_contamination(value) == parsed


@pytest.mark.parametrize("value", ["0.6", "-0.1", "nan", "lots"])
def test_fit_refuses_a_contamination_it_cannot_use(tmp_path, tiny_dir, value):
    result = invoke("fit", tiny_dir / "train.csv", "--model", tmp_path / "m.vae",
                    "--contamination", value)
    assert assert_one_line_error(result, 2) == (
        f"Error: --contamination must be auto or a share between 0 and "
        f"{MAX_CONTAMINATION_SHARE} (got '{value}'): the expected share of anomalies in "
        f"the training rows, which the threshold flags; at most {MAX_CONTAMINATION} of "
        f"the rows also leave the gradient")
    assert not (tmp_path / "m.vae").exists()


# ----- training -----------------------------------------------------------------------
def test_auto_leaves_a_fit_on_clean_data_exactly_as_without_it():
    frame = make_records(800, seed=4)
    plain = VAEAnomalyDetector(epochs=25, seed=0, contamination=0).fit(frame)
    auto = VAEAnomalyDetector(epochs=25, seed=0).fit(frame)
    assert auto.summary_.training_outliers == 0 and len(auto.training_outliers_.rows) == 0
    for name, weights in plain.model_.state_dict().items():
        assert torch_equal(weights, auto.model_.state_dict()[name]), name
    np.testing.assert_array_equal(plain.calibration_scores_["elbo"],
                                  auto.calibration_scores_["elbo"])


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_robust_training_finds_the_broken_rows_and_keeps_flagging_their_kind(dirty):
    folder, broken_ids = dirty
    frame = pd.read_csv(folder / "train.csv")
    fresh = make_records(2000, seed=9, first_id=50_000)
    fresh_broken = broken(fresh, np.arange(2000), seed=1)
    ranking, fpr = {}, {}
    for setting in (0, "auto"):
        # Default settings: the calibration fits steady the 1% threshold of a small file.
        detector = VAEAnomalyDetector(seed=0, contamination=setting)
        detector.fit(frame)
        flagged = set(frame.loc[detector.training_outliers_.rows, "id"])
        if setting == "auto":
            hits = len(flagged & broken_ids)
            assert hits / len(flagged) >= 0.8 and hits / len(broken_ids) >= 0.7, \
                (hits, len(flagged))
        else:
            assert not flagged
        scores = -np.concatenate([detector.score_samples(fresh),
                                  detector.score_samples(fresh_broken)])
        ranking[setting] = roc_auc_score(np.repeat([0, 1], 2000), scores)
        fpr[setting] = detector.predict(fresh).tolist().count(-1) / 2000
    # Their kind ranks higher: ROC-AUC of fresh broken rows against fresh normal ones,
    # measured 0.957 without and 0.970 with (seeds 1 and 2: +0.004, +0.011; on the
    # rows in file order +0.014, +0.014, +0.013). The recall at the threshold moves
    # with the broken rows among the held-out ones, which still set it (docs/method.md):
    # 0.40 / 0.48 on seed 0, but 0.40 / 0.29 on seed 2.
    assert ranking["auto"] >= ranking[0] + 0.005, ranking
    assert fpr["auto"] <= 0.03, fpr


def test_held_out_rows_judged_anomalous_are_reported_and_still_set_the_threshold():
    frame = make_records(1000, seed=5)
    detector = VAEAnomalyDetector(epochs=20, seed=0, calibration_fits=0, contamination=0.1)
    detector.fit(frame)
    # The split is drawn over the rows in their canonical order; outliers are numbered
    # as the rows were given.
    order = detector._in_canonical_order(to_arrow(frame), "x")[1]
    train_index, val_index = (order[index] for index in detector._split(len(frame)))
    outliers = detector.training_outliers_.rows
    assert np.isin(outliers, val_index).sum() >= 1  # past the training's cut
    assert detector.summary_.calibration_rows == len(val_index)
    assert len(detector.calibration_scores_["elbo"]) == len(val_index)
    # The training rows rejected in the best epoch: the share asked for.
    rejected = np.isin(outliers, train_index).sum()
    assert abs(rejected - 0.1 * len(train_index)) <= 1


# ----- what the user sees ---------------------------------------------------------------
def test_fit_says_how_many_training_rows_look_anomalous(dirty_fit):
    folder, result = dirty_fit
    assert result.exit_code == 0, result.stderr
    count = len(pd.read_csv(folder / "outliers.csv"))
    assert result.stderr.splitlines()[-1] == (
        f"Training rows judged anomalous: {count} of {N_ROWS} "
        f"({100 * count / N_ROWS:.1f}%); written to {folder / 'outliers.csv'}")


def test_the_outlier_file_holds_the_rows_with_their_numbers_and_scores(dirty, dirty_fit):
    folder, broken_ids = dirty
    outliers = pd.read_csv(folder / "outliers.csv")
    train = pd.read_csv(folder / "train.csv")
    assert list(outliers.columns) == ["row", "anomaly_score", *train.columns]
    hits = outliers["id"].isin(broken_ids).sum()
    assert hits / len(outliers) >= 0.8 and hits / len(broken_ids) >= 0.7
    # `row` is the 1-based data row of the training file; the cells are its own.
    pd.testing.assert_frame_equal(outliers[train.columns].reset_index(drop=True),
                                  train.iloc[outliers["row"] - 1].reset_index(drop=True))
    assert outliers["anomaly_score"].is_monotonic_decreasing
    # The score is the one `score` gives those rows of the file.
    scored = load(folder / "model.vae").score(train)["anomaly_score"].to_numpy()
    np.testing.assert_allclose(outliers["anomaly_score"], scored[outliers["row"] - 1],
                               rtol=1e-6)


def test_the_model_file_keeps_the_count_and_the_scores(dirty_fit):
    folder, _ = dirty_fit
    model = load(folder / "model.vae")
    outliers = pd.read_csv(folder / "outliers.csv")
    assert model.summary_.training_outliers == len(outliers)
    np.testing.assert_allclose(np.sort(model.training_outliers_.scores),
                               np.sort(outliers["anomaly_score"]), rtol=1e-12)
    info = invoke("info", folder / "model.vae", "--json")
    assert info.exit_code == 0, info.stderr
    assert json.loads(info.stdout)["training_outliers"] == (
        f"{len(outliers)} of {N_ROWS} training-file rows "
        f"({100 * len(outliers) / N_ROWS:.1f}%; --contamination auto)")
    assert "judged anomalous" in invoke("info", folder / "model.vae").stdout


def test_the_report_draws_the_outliers_in_the_histogram(dirty_fit):
    folder, _ = dirty_fit
    result = invoke("report", folder / "model.vae", "-o", folder / "r.html")
    assert result.exit_code == 0, result.stderr
    html = (folder / "r.html").read_text()
    assert "training rows judged anomalous" in html
    assert "Training rows judged anomalous" in html


def test_a_model_file_from_before_robust_training_reads_as_none_found(dirty_fit, tmp_path):
    folder, _ = dirty_fit
    metadata, tensors = read_model(folder / "model.vae")
    for name in ("training_outliers.rows", "training_outliers.scores"):
        del tensors[name]
    del metadata["training"]["training_outliers"]
    del metadata["params"]["contamination"]
    del metadata["tensor_sha256"]  # written anew for the tensors left
    write_model(tmp_path / "old.vae", metadata, tensors)
    old = load(tmp_path / "old.vae")
    assert old.summary_.training_outliers == 0 and len(old.training_outliers_.rows) == 0
    assert invoke("info", tmp_path / "old.vae").exit_code == 0
    assert invoke("report", tmp_path / "old.vae", "-o", tmp_path / "r.html").exit_code == 0


def test_training_outliers_as_parquet_and_with_none_found(tmp_path, tiny_dir):
    result = invoke("fit", tiny_dir / "train.csv", "--model", tmp_path / "m.vae",
                    "--epochs", 5, "--contamination", 0,
                    "--training-outliers", tmp_path / "none.parquet")
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(tmp_path / "none.parquet")
    assert table.num_rows == 0 and table.column_names[:2] == ["row", "anomaly_score"]
    assert "Training rows judged anomalous: 0 of 400 (0.0%)" in result.stderr


def test_training_outliers_must_not_overwrite_the_model_or_the_data(tmp_path, tiny_dir):
    same = invoke("fit", tiny_dir / "train.csv", "--model", tmp_path / "m.vae",
                  "--training-outliers", tmp_path / "m.vae")
    assert assert_one_line_error(same, 2) == (
        "Error: --training-outliers and --model name the same file; "
        "give the outliers a name of their own")
    data = invoke("fit", tiny_dir / "train.csv", "--model", tmp_path / "m.vae",
                  "--training-outliers", tiny_dir / "train.csv")
    assert assert_one_line_error(data, 2).startswith("Error: --training-outliers ")
    assert not (tmp_path / "m.vae").exists()


def test_a_training_column_named_like_an_added_one_is_refused(tmp_path):
    frame = make_records(300, seed=1).rename(columns={"member": "row"})
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = invoke("fit", tmp_path / "t.csv", "--model", tmp_path / "m.vae", "--epochs", 3,
                    "--training-outliers", tmp_path / "o.csv")
    assert assert_one_line_error(result, 2) == (
        "Error: the training data has a column `row`, which the --training-outliers file "
        "adds; rename that column")
    assert not (tmp_path / "o.csv").exists()


def test_a_tiny_file_keeps_held_out_rows_to_set_its_threshold():
    # Found by tests/test_properties.py: 12 rows of extremes once left no held-out
    # score at all, and the threshold could not be set.
    frame = pd.DataFrame({"a": [1e308, -1e308] * 6, "b": [0.0] * 11 + [5.0]})
    for setting in ("auto", 0.2):
        detector = VAEAnomalyDetector(epochs=5, seed=0, contamination=setting).fit(frame)
        assert len(detector.calibration_scores_["elbo"]) >= 1
        assert math.isfinite(detector.threshold_)


def test_a_contamination_given_as_text_is_stored_as_a_number(tmp_path, tiny_dir):
    result = invoke("fit", tiny_dir / "train.csv", "--model", tmp_path / "m.vae",
                    "--epochs", 3, "--contamination", "0.05")
    assert result.exit_code == 0, result.stderr
    assert load(tmp_path / "m.vae").get_params()["contamination"] == 0.05
    assert VAEAnomalyDetector(epochs=3, contamination="AUTO").fit(
        make_records(300)).contamination == "auto"
