"""Which training rows to leave out of the gradient: those whose loss stands out in
the tail of all training rows' losses (the training file's unlabelled anomalies).

Pure functions on a vector of per-row losses; training.py applies them each epoch.
The ``contamination`` setting they read is also the share of the training rows the
threshold flags, when it is a share (calibration.share_threshold).
"""

from __future__ import annotations

import math

import numpy as np

# The most of a training file that can be judged anomalous. Above it the "anomalies"
# are a second kind of normal, not outliers.
MAX_CONTAMINATION = 0.2
# The largest contamination share accepted, scikit-learn's bound for its outlier
# detectors: the threshold flags up to this share of the training rows, while robust
# training leaves at most MAX_CONTAMINATION of them out of the gradient.
MAX_CONTAMINATION_SHARE = 0.5
# `auto` rejects a row whose loss lies more than this many robust standard
# deviations (1.4826 x the median absolute deviation) above the median. 20, far out:
# at 12 a fit of the clean sample_data file rejected 14 of its 3,000 rows, at 16
# four, at 20 none, while 39 of the 45 broken rows of tests/test_robust_training.py
# were still found, and no other row. Nearer cuts took clean rows of heavy-tailed
# sets (at 8, 98 of pendigits' 3,357, ROC-AUC -0.016) and found few planted
# anomalies (docs/method.md, "Dirty training files").
AUTO_CUT = 20.0


def parse_contamination(value) -> float | str:
    """'auto', or a share in [0, MAX_CONTAMINATION_SHARE]; ValueError otherwise."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    share = float(value)
    if not (0 <= share <= MAX_CONTAMINATION_SHARE):  # also refuses NaN
        raise ValueError(share)
    return share


def loss_cut(losses: np.ndarray, contamination: float | str) -> float:
    """The loss above which a row is rejected (``inf``: none is); a share above
    MAX_CONTAMINATION rejects MAX_CONTAMINATION of the rows."""
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) == 0:
        return math.inf
    if contamination == "auto":
        return _auto_cut(losses)
    if contamination <= 0:
        return math.inf
    share = min(contamination, MAX_CONTAMINATION)
    keep = max(1, len(losses) - int(round(share * len(losses))))
    return float(np.partition(losses, keep - 1)[keep - 1])


def _auto_cut(losses: np.ndarray) -> float:
    median = np.median(losses)
    spread = 1.4826 * np.median(np.abs(losses - median))
    if not spread > 0:
        return math.inf
    cut = median + AUTO_CUT * spread
    if np.mean(losses > cut) <= MAX_CONTAMINATION:
        return float(cut)
    return float(np.quantile(losses, 1 - MAX_CONTAMINATION))  # never more rows than that
