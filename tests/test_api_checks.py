"""The Python API refuses bad arguments with InputError, as the CLI does, and follows
scikit-learn's conventions (get_params / set_params / clone)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch
from sklearn.base import clone

from conftest import FAST_FIT, make_records
from vae_anomaly import load
from vae_anomaly import VAEAnomalyDetector
from vae_anomaly.errors import InputError

TINY_FIT = {**FAST_FIT, "epochs": 2}


@pytest.fixture(scope="module")
def fitted(tiny_model) -> VAEAnomalyDetector:
    return load(tiny_model)


@pytest.mark.parametrize("options, message", [
    ({"samples": 70_000}, "--samples must be between 1 and 65536 (got 70000)"),
    ({"samples": 0}, "--samples must be between 1 and 65536 (got 0)"),
    ({"samples": 1.5}, "--samples must be a whole number (got 1.5)"),
    ({"samples": True}, "--samples must be a whole number (got True)"),
    ({"seed": 2**64}, f"--seed must be between 0 and 2**63 - 1 (got {2**64})"),
    ({"seed": -1}, "--seed must be between 0 and 2**63 - 1 (got -1)"),
    ({"seed": 0.5}, "--seed must be a whole number (got 0.5)"),
    ({"threshold": math.nan}, "--threshold must be a finite number (got nan)"),
    ({"threshold": math.inf}, "--threshold must be a finite number (got inf)"),
    ({"explain": 1.5}, "--explain must be a whole number (got 1.5)"),
    ({"explain": -1}, "--explain must be zero or more (got -1)"),
])
def test_score_refuses_bad_options_as_the_cli_does(fitted, options, message):
    with pytest.raises(InputError) as error:
        fitted.score(make_records(5), **options)
    assert str(error.value) == message


def test_score_accepts_numpy_integers(fitted):
    frame = make_records(5)
    scores = fitted.score(frame, samples=np.int64(4), seed=np.int32(3))
    assert scores.equals(fitted.score(frame, samples=4, seed=3))


@pytest.mark.parametrize("params, message", [
    ({"seed": 1.5}, "--seed must be a whole number (got 1.5)"),
    ({"epochs": 2.5}, "--epochs must be a whole number (got 2.5)"),
    ({"latent_dim": "4"}, "--latent-dim must be a whole number (got '4')"),
    ({"calibration_fits": None}, "--calibration-fits must be a whole number (got None)"),
    ({"learning_rate": -1.0}, "the learning rate must be a finite number above 0 (got -1.0)"),
    ({"learning_rate": 0.0}, "the learning rate must be a finite number above 0 (got 0.0)"),
    ({"learning_rate": math.inf}, "the learning rate must be a finite number above 0 (got inf)"),
    ({"validation_fraction": 0.999},
     "the validation fraction must be above 0 and at most 0.5 (got 0.999)"),
    ({"beta": math.nan}, "--beta must be a finite number (got nan)"),
    ({"beta": "high"}, "--beta must be a finite number (got high)"),
    ({"beta": -0.5}, "--beta must be zero or more (got -0.5)"),
    ({"fpr": math.nan}, "--fpr must be between 0 and 1 (got nan)"),
])
def test_fit_refuses_bad_parameters_before_any_work(params, message):
    with pytest.raises(InputError) as error:
        VAEAnomalyDetector(**{**TINY_FIT, **params}).fit(make_records(50))
    assert str(error.value) == message


@pytest.mark.parametrize("columns", [["a", "b", "a"], [1, "1", "c"]])
def test_a_dataframe_whose_names_repeat_as_text_is_refused(columns):
    frame = pd.DataFrame(np.arange(30.0).reshape(10, 3), columns=columns)
    repeated = str(columns[0])
    with pytest.raises(InputError) as error:
        VAEAnomalyDetector(**TINY_FIT).fit(frame)
    assert str(error.value) == (f"column `{repeated}` appears twice in the DataFrame (as "
                                "text); give every column a unique name")


def test_an_arrow_table_with_a_repeated_name_is_refused(fitted):
    table = pa.Table.from_arrays([pa.array([1.0, 2.0])] * 2, names=["x", "x"])
    with pytest.raises(InputError, match="column `x` appears twice in the Arrow table"):
        fitted.score(table)


def test_a_model_file_saved_under_older_looser_fit_rules_still_loads(tiny_model, tmp_path):
    from conftest import rewrite_metadata

    def loose(meta):  # accepted by fit before 2026-11-25; not used by scoring
        meta["params"].update(validation_fraction=0.6, learning_rate=0.0)

    path = tmp_path / "old.vae"
    path.write_bytes(rewrite_metadata(tiny_model.read_bytes(), loose))
    frame = make_records(20, seed=4)
    assert load(path).score(frame).equals(load(tiny_model).score(frame))


def test_clone_and_set_params_follow_scikit_learn():
    detector = VAEAnomalyDetector(beta=0.5, exclude=("id",), seed=3)
    copy = clone(detector)
    assert copy is not detector and copy.get_params() == detector.get_params()
    assert copy.set_params(beta=1.0, epochs=4) is copy
    assert (copy.beta, copy.epochs, detector.beta) == (1.0, 4, 0.5)
    with pytest.raises(InputError, match="unknown parameter 'alpha'"):
        copy.set_params(alpha=1)


def test_one_column_name_on_its_own_means_that_column():
    detector = VAEAnomalyDetector(**TINY_FIT, exclude="id", categorical="member")
    detector.fit(make_records(60))
    assert detector.preprocessor_.ignored == {"id": "excluded with --exclude"}
    kinds = {c["name"]: c["kind"] for c in detector.preprocessor_.columns}
    assert kinds["member"] == "categorical"


def test_fit_leaves_the_callers_torch_random_stream_alone():
    torch.manual_seed(11)
    expected = torch.rand(3)
    torch.manual_seed(11)
    first = VAEAnomalyDetector(**TINY_FIT).fit(make_records(60, seed=5))
    assert torch.equal(torch.rand(3), expected)
    # ... and the fit itself still depends only on its own seed.
    torch.manual_seed(999)
    second = VAEAnomalyDetector(**TINY_FIT).fit(make_records(60, seed=5))
    frame = make_records(10, seed=6)
    assert first.score(frame).equals(second.score(frame))


def test_the_top_of_the_samples_range_scores_in_bounded_memory(fitted):
    """65,536 draws a row: a pass holds one row, not 1,024 (whose activations alone
    needed tens of GB, so this failed to allocate or was killed)."""
    frame = make_records(3, seed=8)
    many = fitted.score(frame, samples=65_536)
    assert np.isfinite(many["anomaly_score"]).all()
    assert (many["score_std_error"] < 0.5).all()  # 4,096x the default draws: a tight mean
    few = fitted.score(frame, samples=16)
    assert np.allclose(many["anomaly_score"], few["anomaly_score"],
                       atol=6 * few["score_std_error"].max())
