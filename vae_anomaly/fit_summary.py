"""What a fit did, as the model file records it: ``FitSummary`` (its ``training``
section) and ``TrainingOutliers``. Kept apart from fitting.py, which needs torch,
so that `info` reads a model file without it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FitSummary:
    """What a detector's fit did, over all its fits (the model file's ``training``)."""

    rows: int
    train_rows: int
    validation_rows: int
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    seconds: float
    device: str
    history: list[dict]
    # Rows whose held-out scores set the threshold: the validation rows, plus those of
    # the extra calibration fits on small files (0 = model files from before them).
    # ``seconds`` covers all fits; ``history`` and the epochs are the main fit's.
    calibration_rows: int = 0
    calibration_fits: int = 0
    # Rows of the training file judged anomalous by robust training (0 = model files
    # from before it, or --contamination 0).
    training_outliers: int = 0


@dataclass
class TrainingOutliers:
    """The training file's rows judged anomalous: 0-based row numbers, sorted, and
    their anomaly scores (the detector's score kind)."""

    rows: np.ndarray
    scores: np.ndarray
