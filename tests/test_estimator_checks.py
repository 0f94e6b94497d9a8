"""VAEAnomalyDetector is a real scikit-learn estimator: it passes scikit-learn's own
estimator checks, every one of them (``contamination`` a share flags that share of the
training rows, as check_outliers_train and check_outliers_fit_predict expect), and
works inside Pipeline, clone and pickle with numpy input, while pandas and Arrow input
keep every feature (issue 28)."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from conftest import make_records
from vae_anomaly import InputError, VAEAnomalyDetector

FAST = {"epochs": 2, "calibration_fits": 0}


@parametrize_with_checks([VAEAnomalyDetector(**FAST)])
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    return np.column_stack([x, 2 * x[:, 0] + rng.normal(scale=0.1, size=n)]) * 50 + 1000


def test_a_pipeline_with_numpy_input_fits_and_flags_broken_rows():
    pipeline = make_pipeline(StandardScaler(), VAEAnomalyDetector(seed=0, calibration_fits=0))
    pipeline.fit(blobs(600, seed=0))
    normal = blobs(400, seed=1)
    broken = normal[:40].copy()
    # Column 3 off its relation to column 0 by 30 noise sds, within its own range.
    broken[:, 3] += 150
    flags = pipeline.predict(np.vstack([normal, broken]))
    assert set(np.unique(flags)) <= {-1, 1}
    assert (flags[:400] == -1).mean() < 0.05
    assert (flags[400:] == -1).mean() > 0.8
    detector = pipeline[-1]
    assert detector.n_features_in_ == 4 and not hasattr(detector, "feature_names_in_")


def test_clone_then_fit_gives_the_same_scores_for_the_same_seed():
    X = blobs(300, seed=2)
    original = VAEAnomalyDetector(seed=5, **FAST).fit(X)
    copy = clone(original)
    assert not hasattr(copy, "model_")
    np.testing.assert_array_equal(copy.fit(X).score_samples(X), original.score_samples(X))


def test_pickling_round_trips_with_identical_predictions():
    frame = make_records(200, seed=3)
    detector = VAEAnomalyDetector(seed=0, exclude="id", **FAST).fit(frame)
    again = pickle.loads(pickle.dumps(detector))
    new = make_records(50, seed=4)
    pd.testing.assert_frame_equal(again.score(new, explain=2), detector.score(new, explain=2))
    np.testing.assert_array_equal(again.predict(new), detector.predict(new))


def test_conventions_score_samples_decision_function_and_predict_agree():
    frame = make_records(300, seed=6)
    detector = VAEAnomalyDetector(seed=0, exclude="id", **FAST).fit(frame, y=np.ones(300))
    new = make_records(80, seed=7)
    scores = detector.score(new)
    np.testing.assert_array_equal(detector.score_samples(new), -scores["anomaly_score"])
    decision = detector.decision_function(new)
    assert detector.offset_ == -detector.threshold_
    np.testing.assert_array_equal(decision < 0, scores["is_anomaly"] == 1)
    np.testing.assert_array_equal(detector.predict(new), np.where(decision < 0, -1, 1))
    np.testing.assert_array_equal(
        VAEAnomalyDetector(seed=0, exclude="id", **FAST).fit_predict(frame),
        detector.predict(frame))


def test_a_row_scores_the_same_in_any_subset_or_order():
    frame = make_records(300, seed=8)
    detector = VAEAnomalyDetector(seed=0, exclude="id", **FAST).fit(frame)
    new = make_records(60, seed=9)
    whole = detector.score(new)["anomaly_score"].to_numpy()
    order = np.random.default_rng(0).permutation(60)[:25]
    part = detector.score(new.iloc[order])["anomaly_score"].to_numpy()
    np.testing.assert_array_equal(part, whole[order])


def test_frames_set_feature_names_and_keep_matching_by_name():
    frame = make_records(200, seed=10)
    detector = VAEAnomalyDetector(seed=0, exclude="id", **FAST).fit(frame)
    assert detector.n_features_in_ == 6
    assert list(detector.feature_names_in_) == list(frame.columns)
    new = make_records(30, seed=11)
    reordered = new[list(reversed(new.columns))].assign(extra=1)  # by name, as before
    np.testing.assert_array_equal(detector.score_samples(reordered), detector.score_samples(new))


def test_unfitted_and_misshapen_input_raise_scikit_learn_errors():
    detector = VAEAnomalyDetector(**FAST)
    with pytest.raises(NotFittedError, match="not fitted yet; call fit"):
        detector.predict(blobs(5, seed=0))
    with pytest.raises(InputError, match="not fitted yet"):  # still our own type too
        detector.score(blobs(5, seed=0))
    detector.fit(blobs(100, seed=0))
    with pytest.raises(ValueError, match="X has 3 features, but VAEAnomalyDetector is "
                                         "expecting 4 features as input"):
        detector.predict(blobs(5, seed=0)[:, :3])
    with pytest.raises(ValueError, match="minimum of 10 is required"):
        VAEAnomalyDetector(**FAST).fit(blobs(3, seed=0))
    assert issubclass(InputError, ValueError)


def test_callbacks_are_a_fit_argument_not_a_constructor_attribute():
    heard = []

    class Recorder:
        def on_epoch_end(self, stats):
            heard.append(stats.epoch)

    detector = VAEAnomalyDetector(**FAST)
    assert "callbacks" not in vars(detector)
    detector.fit(blobs(100, seed=0), callbacks=[Recorder()])
    assert heard == [1, 2]
