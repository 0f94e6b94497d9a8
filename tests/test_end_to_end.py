"""End to end: sample_data with default settings through the CLI, and whole fits on shaped data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from conftest import SAMPLE_DATA
from vae_anomaly import VAEAnomalyDetector
from vae_anomaly.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def scored(tmp_path_factory, sample_model):
    folder = tmp_path_factory.mktemp("e2e")
    outputs = []
    for name in ("a.csv", "b.csv"):
        result = runner.invoke(app, ["score", str(SAMPLE_DATA / "new.csv"), "--model",
                                     str(sample_model), "-o", str(folder / name), "--seed", "3",
                                     "--quiet"])
        assert result.exit_code == 0, result.output
        outputs.append(folder / name)
    return outputs


def test_injected_anomalies_are_found(scored):
    frame = pd.read_csv(scored[0])
    auc = roc_auc_score(frame["label"], frame["anomaly_score"])
    assert auc >= 0.95, f"ROC-AUC {auc:.3f} on sample_data"


def test_false_alarms_stay_near_the_target_rate(scored):
    frame = pd.read_csv(scored[0])
    normals = frame[frame["label"] == 0]
    # Target 1%; with ~940 normals anything beyond 4% means a broken threshold.
    assert normals["is_anomaly"].mean() <= 0.04
    assert frame.loc[frame["label"] == 1, "is_anomaly"].mean() >= 0.5


def test_same_seed_gives_byte_identical_output(scored):
    assert scored[0].read_bytes() == scored[1].read_bytes()


def test_a_value_in_the_empty_middle_of_its_column_scores_above_its_two_modes():
    """The score is a density in the column's own units: the quantile map squeezes the
    empty gap of a two-humped column next to the median, and the map's slope (the
    change of variables) is what still tells the gap apart."""
    rng = np.random.default_rng(0)
    humps = np.concatenate([rng.normal(-3, 0.5, 400), rng.normal(3, 0.5, 400)])
    train = pd.DataFrame({"v": humps, "w": rng.normal(size=800)})
    detector = VAEAnomalyDetector(seed=0, epochs=40).fit(train)
    probe = pd.DataFrame({"v": np.r_[np.zeros(30), np.full(30, -3.0), np.full(30, 3.0)],
                          "w": rng.normal(size=90)})
    scores = detector.score(probe)["anomaly_score"].to_numpy()
    gap, modes = scores[:30], scores[30:]
    # About 4 nats apart (seeds 0-2: 3.7-3.9): the gap's slope is ~1/60 of a mode's.
    assert np.median(gap) - np.median(modes) > 3.0
    assert np.median(gap) > np.quantile(modes, 0.99)
