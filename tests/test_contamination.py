"""`contamination` as scikit-learn and PyOD mean it: a share c is the expected share of
anomalies in the training data, and the threshold flags that share of the rows given to
fit (as IsolationForest's ``offset_``); "auto" and 0 keep the threshold that held-out
rows set at `fpr`, and their model files stay as they were."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_blobs
from sklearn.utils import shuffle
from typer.testing import CliRunner

from conftest import make_records, rewrite_metadata
from vae_anomaly import ModelFileError, VAEAnomalyDetector, load
from vae_anomaly.api import fit_file
from vae_anomaly.calibration import calibrated_p_values, calibrated_threshold
from vae_anomaly.cli import app
from vae_anomaly.defaults import SCORE_KINDS

runner = CliRunner()
FAST = {"epochs": 3, "calibration_fits": 0, "seed": 0}
# The training section of a model file as fitted before `contamination` set thresholds
# (commit 9312b6f): a fit with "auto" or 0 still writes exactly these keys.
TRAINING_KEYS_BEFORE = {
    "rows", "train_rows", "validation_rows", "epochs_run", "best_epoch", "stopped_early",
    "seconds", "device", "history", "calibration_rows", "calibration_fits",
    "calibration_left_out", "calibration_tail", "training_outliers", "known_anomalies",
    "known_in_data", "known_flagged", "known_heldout", "known_heldout_flagged",
    "draws"}  # the held-out scores' Monte Carlo draws, recorded since the Sobol points


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def checks_data() -> np.ndarray:
    """The 300 rows scikit-learn's check_outliers_train fits on."""
    X, _ = make_blobs(n_samples=300, random_state=0)
    return shuffle(X, random_state=7)


def held_out_thresholds(detector) -> dict[str, float]:
    """The thresholds the held-out scores set at fpr: the rule for auto, 0 and old files."""
    return {kind: calibrated_threshold(detector.calibration_scores_[kind], detector.fpr,
                                       detector.calibration_tail_) for kind in SCORE_KINDS}


# ----- the rule -----------------------------------------------------------------------
@pytest.mark.parametrize("share, flagged", [(0.05, 15), (0.1, 30), (0.5, 150)])
def test_a_share_flags_that_share_of_the_training_rows(share, flagged):
    X = checks_data()
    detector = VAEAnomalyDetector(contamination=share, **FAST)
    assert (detector.fit_predict(X) == -1).sum() == flagged
    for kind in SCORE_KINDS:  # each score kind has its own threshold at the share
        assert detector.score(X, kind=kind)["is_anomaly"].sum() == flagged
    # IsolationForest's rule, on the scores `score_samples` gives.
    assert detector.offset_ == np.percentile(detector.score_samples(X), 100 * share)


def test_rows_matching_confirmed_anomalies_do_not_count():
    frame = make_records(400, seed=1)
    known = np.zeros(400, dtype=bool)
    known[:8] = True
    detector = VAEAnomalyDetector(contamination=0.1, exclude="id", **FAST)
    detector.fit(frame, known_anomalies=known)
    assert detector.summary_.share_threshold["rows"] == 392
    # np.percentile's linear rule, as IsolationForest's: ceil(0.1 * 391) of 392 rows.
    assert (detector.predict(frame[~known]) == -1).sum() == math.ceil(0.1 * 391)


def test_a_share_above_the_rejection_bound_trains_as_the_bound_does():
    frame = make_records(300, seed=2)
    at_bound, above = (VAEAnomalyDetector(contamination=share, exclude="id", **FAST).fit(frame)
                       for share in (0.2, 0.4))
    for name, weights in at_bound.model_.state_dict().items():
        assert bool((weights == above.model_.state_dict()[name]).all()), name
    # Only the threshold follows the share; the p-values stay conformal on held-out rows.
    ours, theirs = at_bound.score(frame), above.score(frame)
    pd.testing.assert_series_equal(ours["p_value"], theirs["p_value"])
    assert (ours["is_anomaly"].sum(), theirs["is_anomaly"].sum()) == (60, 120)
    np.testing.assert_array_equal(
        ours["p_value"], calibrated_p_values(at_bound.calibration_scores_["elbo"],
                                             ours["anomaly_score"].to_numpy(), 0.0))


# ----- auto and 0 ---------------------------------------------------------------------
@pytest.mark.parametrize("setting", ["auto", 0])
def test_auto_and_0_keep_the_held_out_threshold_and_the_model_file_keys(setting):
    # 400 rows: two calibration fits run, as on the files they serve.
    detector = VAEAnomalyDetector(contamination=setting, epochs=3, seed=0, exclude="id")
    detector.fit(make_records(400, seed=12))
    metadata = detector.metadata()
    assert set(metadata["training"]) == TRAINING_KEYS_BEFORE
    assert metadata["thresholds"] == held_out_thresholds(detector)
    assert metadata["threshold"] == metadata["thresholds"]["elbo"]


# ----- the model file -----------------------------------------------------------------
@pytest.fixture(scope="module")
def share_model(tmp_path_factory):
    """A model fitted with contamination 0.1 on 300 records, saved, and those records."""
    folder = tmp_path_factory.mktemp("share")
    frame = make_records(300, seed=3)
    detector = VAEAnomalyDetector(contamination=0.1, exclude="id", **FAST).fit(frame)
    detector.save(folder / "model.vae")
    return folder, frame, detector


def test_a_saved_and_loaded_model_keeps_the_threshold(share_model):
    folder, frame, detector = share_model
    again = load(folder / "model.vae")
    for kind in SCORE_KINDS:
        assert again.threshold_for(kind) == detector.threshold_for(kind)
    np.testing.assert_array_equal(again.predict(frame), detector.predict(frame))
    assert (again.predict(frame) == -1).sum() == 30
    assert again.metadata_["training"]["share_threshold"] == {
        "share": 0.1, "rows": 300,
        "thresholds": {kind: detector.threshold_for(kind) for kind in SCORE_KINDS}}


def test_info_and_the_report_say_the_threshold_flags_the_share(share_model):
    folder, _, _ = share_model
    source = "flags 10.0% of the 300 training rows, as --contamination 0.1 asks"
    described = json.loads(invoke("info", folder / "model.vae", "--json").stdout)
    assert described["threshold_source"] == source
    wide = runner.invoke(app, ["info", str(folder / "model.vae")], env={"COLUMNS": "200"})
    assert f"{described['threshold']:.6g} ({source})" in wide.stdout
    assert invoke("report", folder / "model.vae", "-o", folder / "r.html").exit_code == 0
    html = (folder / "r.html").read_text()
    assert source in html and "Target false-positive rate" not in html


def test_a_file_from_before_the_share_rule_keeps_its_held_out_threshold(share_model, tmp_path):
    folder, frame, detector = share_model
    held_out = held_out_thresholds(detector)

    def as_before(metadata):  # as a numeric contamination was saved before the rule
        del metadata["training"]["share_threshold"]
        metadata["thresholds"], metadata["threshold"] = held_out, held_out["elbo"]

    path = tmp_path / "old.vae"
    path.write_bytes(rewrite_metadata((folder / "model.vae").read_bytes(), as_before))
    old = load(path)
    assert old.contamination == 0.1 and old.share_threshold_ is None
    for kind in SCORE_KINDS:
        assert old.threshold_for(kind) == held_out[kind]
    scored, before = old.score(frame), detector.score(frame)
    unchanged = ["anomaly_score", "p_value", "reconstruction_nll", "kl_divergence",
                 "score_std_error"]
    pd.testing.assert_frame_equal(scored[unchanged], before[unchanged])
    np.testing.assert_array_equal(scored["is_anomaly"],
                                  (scored["anomaly_score"] > held_out["elbo"]).astype(int))
    described = json.loads(invoke("info", path, "--json").stdout)
    assert described["threshold_source"].startswith("target false-positive rate 0.01, set on ")


def test_a_damaged_share_record_is_refused(share_model, tmp_path):
    folder, _, _ = share_model
    path = tmp_path / "damaged.vae"
    path.write_bytes(rewrite_metadata(
        (folder / "model.vae").read_bytes(),
        lambda metadata: metadata["training"]["share_threshold"]["thresholds"].pop("iwae")))
    with pytest.raises(ModelFileError, match="its contamination threshold is not a share"):
        load(path)


# ----- files and the command line -----------------------------------------------------
def test_fit_file_and_the_cli_flag_the_share_of_a_csv(tiny_dir, tmp_path):
    train = tiny_dir / "train.csv"
    result = fit_file(train, tmp_path / "api.vae", contamination=0.05, exclude=["id"], **FAST)
    assert result.summary.share_threshold["rows"] == 400
    model = tmp_path / "cli.vae"
    fit = invoke("fit", train, "--model", model, "--contamination", "0.05", "--epochs", 3,
                 "--calibration-fits", 0, "--exclude", "id")
    assert fit.exit_code == 0, fit.stderr
    threshold = load(model).threshold_
    assert threshold == result.threshold  # the same fit either way
    assert (f"; threshold {threshold:.4g} flags 5.0% of the 400 training rows, as "
            f"--contamination 0.05 asks; saved {model}") in fit.stderr
    scored = invoke("score", train, "--model", model, "--device", "cpu",
                    "-o", tmp_path / "scored.csv")
    assert scored.exit_code == 0, scored.stderr
    # ceil(0.05 * 399) = 20 of the 400 rows, as IsolationForest's percentile gives.
    assert pd.read_csv(tmp_path / "scored.csv")["is_anomaly"].sum() == 20
