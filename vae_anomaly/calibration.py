"""The held-out rows that set the threshold, and the threshold they set.

The validation rows held out of the main fit (``validation_size``), the extra
calibration fits that hold out more rows on small files (``calibration_folds``),
the split-conformal threshold (``threshold_at``) and p-values
(``conformal_p_values``); with confirmed anomalies, the held-out rows left out as
their likely siblings (``unconfirmed_siblings``) and the exponential tail that then
sets the threshold and the p-values above it (``calibrated_threshold``,
``calibrated_p_values``). With ``contamination`` a share, the threshold is instead
the one that flags that share of the training rows (``share_threshold``), as in
scikit-learn's outlier detectors; the p-values stay conformal. docs/method.md gives
the reasoning and the counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .rejection import MAX_CONTAMINATION

MIN_CALIBRATION_ROWS = 200
# A 1% threshold set on 200 held-out scores is their 2nd largest, and the false-positive
# rate it gives swings from 0.1% to 4% between refits. Small files therefore get up to
# MAX_CALIBRATION_FITS extra fits, each holding out other rows, until at least
# CALIBRATION_TARGET_ROWS held-out scores set the threshold or the fits run out
# (docs/method.md gives the counts for each validation size). More fits
# narrow it further but multiply the fit time: 4 fits to reach 1,000 rows took a
# 3,000-row fit from 39 s to 173 s.
CALIBRATION_TARGET_ROWS = 600
MAX_CALIBRATION_FITS = 2
# Below this many validation rows (files under about 330 rows) no extra fit runs: such
# files are too small for a steady 1% threshold either way, and every fit redoes the
# preprocessing, which dominates on wide tables (30 rows of 10,000 columns).
MIN_ROWS_FOR_CALIBRATION_FITS = 100


def validation_size(n: int, fraction: float) -> int:
    """Rows held out: ``fraction`` of them, but at least 200 (up to 30% of the data),
    because the threshold is a high quantile of their scores and 25 scores cannot
    place a 99th percentile."""
    wanted = max(round(n * fraction), min(MIN_CALIBRATION_ROWS, round(n * 0.3)))
    return int(min(n - 1, max(1, wanted)))


def calibration_folds(train_index: np.ndarray, val_index: np.ndarray, seed: int,
                      most: int = MAX_CALIBRATION_FITS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(training rows, held-out rows) of each extra calibration fit.

    Each fit holds out a fresh block of the main fit's training rows, as large as
    its validation set, and trains on all the other rows: the same number of
    rows as the main fit. Fits are added until at least CALIBRATION_TARGET_ROWS
    rows have been held out once each, ``most`` fits at most: with 300 to 599
    validation rows one fit (600 to 1,198 rows held out), with 200 to 299 two
    (600 to 897), with 100 to 199 the two fits run out first (300 to 597).
    """
    block = len(val_index)
    if not MIN_ROWS_FOR_CALIBRATION_FITS <= block < CALIBRATION_TARGET_ROWS:
        return []
    wanted = math.ceil((CALIBRATION_TARGET_ROWS - block) / block)
    fits = min(most, wanted, len(train_index) // block)
    order = np.random.default_rng([seed, 1]).permutation(train_index)
    folds = []
    for fold in range(fits):
        held_out = np.sort(order[fold * block:(fold + 1) * block])
        rest = np.sort(np.concatenate([np.setdiff1d(train_index, held_out), val_index]))
        folds.append((rest, held_out))
    return folds


def fold_seed(seed: int, fold: int) -> int:
    """A training seed for calibration fit ``fold``, independent of the main fit's."""
    return int(np.random.SeedSequence([seed, fold]).generate_state(1, dtype=np.uint64)[0] >> 1)


def threshold_at(calibration_scores: np.ndarray, fpr: float) -> float:
    """The (1 - fpr) quantile of normal scores, as the ceil((n+1)(1-fpr))-th smallest.

    With exchangeable normal rows this order statistic keeps the false-positive
    rate at most ``fpr``; with too few scores for that, it is the largest one.
    """
    ordered = np.sort(np.asarray(calibration_scores, dtype=np.float64))
    rank = math.ceil((len(ordered) + 1) * (1 - fpr))
    return float(ordered[min(rank, len(ordered)) - 1])


# With confirmed anomalies, the held-out rows still hold their unconfirmed siblings,
# and once training has pushed their scores up, a few of them at the top of these
# heavy-tailed scores raise the 1% order statistic far (8 of 12 benchmark sets fell
# under 0.5% FPR). The rows above the threshold that lie near a confirmed row leave
# it, and the threshold is set again, while such rows are at least SIBLING_ENRICHMENT
# times as common above the threshold as among all the rows kept: past that point
# the tail is normal rows that happen to lie near a confirmed one (campaign, where
# anomalies sit among normal rows, went to 3.5% FPR at 3 times). At most
# MAX_CONTAMINATION of the held-out rows leave (rejection.py's bound).
SIBLING_ENRICHMENT = 5.0


def unconfirmed_siblings(scores: np.ndarray, near_known: np.ndarray, fpr: float) -> np.ndarray:
    """True for the held-out rows the threshold leaves out as likely anomalies: those
    above it and near a confirmed row (``near_known``), see SIBLING_ENRICHMENT."""
    left_out = np.zeros(len(scores), dtype=bool)
    most = int(MAX_CONTAMINATION * len(scores))
    while near_known[~left_out].any():
        kept = ~left_out
        above = kept & (scores > threshold_at(scores[kept], fpr))
        leaving = above & near_known
        if (not leaving.any() or leaving.sum() < SIBLING_ENRICHMENT * above.sum()
                * near_known[kept].mean() or left_out.sum() + leaving.sum() > most):
            break
        left_out |= leaving
    return left_out


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{calibration scores >= s}) / (n + 1) for each score s (calibration sorted)."""
    n = len(calibration_scores)
    at_least = n - np.searchsorted(calibration_scores, scores, side="left")
    return (1.0 + at_least) / (n + 1.0)


# With confirmed anomalies the held-out rows are known to be contaminated, and
# unconfirmed_siblings leaves out only the siblings that lie near a confirmed row. The others
# sit at the top of these heavy-tailed scores, where a 1% order statistic of about
# 600 rows is set by its 6 largest. So the threshold of such a model comes from an
# exponential tail (peaks over a threshold) fitted to the kept scores above their
# (1 - TAIL_SHARE) quantile, its scale from the median excess: the few largest
# scores move a median little, and a negative ELBO, a sum of squared residuals and
# log-probabilities, has an exponential tail. On clean scores it is no steadier
# than the order statistic, so models fitted without confirmed rows keep that. On
# the benchmark's dirty files, with 1%, 10% and 25% of the planted rows confirmed,
# 8, 11 and 10 of 12 sets flagged 0.5-2% of test normals, from 5, 9 and 7
# (docs/benchmarks.md). With fewer than MIN_TAIL_ROWS scores above the quantile
# (under 400 held-out rows) the order statistic stays.
TAIL_SHARE = 0.05
MIN_TAIL_ROWS = 20


@dataclass(frozen=True)
class ExponentialTail:
    """Scores above ``start`` (a ``share`` of the calibration scores) fall off as
    exp(-(s - start) / scale)."""

    start: float
    scale: float
    share: float

    def threshold(self, fpr: float) -> float:
        return self.start + self.scale * math.log(self.share / fpr)

    def p_values(self, scores: np.ndarray) -> np.ndarray:
        return self.share * np.exp(-(scores - self.start) / self.scale)


def _tail_rows(rows: int, share: float) -> int:
    """How many of ``rows`` scores a tail of ``share`` is fitted to: 0 where they are
    fewer than MIN_TAIL_ROWS (or share is 0), and the order statistic stays."""
    above = math.floor(share * rows)
    return above if above >= MIN_TAIL_ROWS else 0


def exponential_tail(calibration_scores: np.ndarray, share: float) -> ExponentialTail | None:
    """The exponential tail of the sorted ``calibration_scores`` above their (1 - share)
    quantile; None for share 0, too few scores above it, or no spread among them."""
    n = len(calibration_scores)
    above = _tail_rows(n, share)
    if not above:
        return None
    start = float(calibration_scores[n - above - 1])
    scale = float(np.median(calibration_scores[n - above:] - start)) / math.log(2)
    return ExponentialTail(start, scale, above / n) if scale > 0 else None


def calibrated_threshold(calibration_scores: np.ndarray, fpr: float, tail_share: float) -> float:
    """The threshold for ``fpr``: from the exponential tail where the model has one
    (``tail_share`` > 0) and ``fpr`` lies inside it, else ``threshold_at``."""
    tail = exponential_tail(calibration_scores, tail_share)
    if tail is None or fpr >= tail.share:
        return threshold_at(calibration_scores, fpr)
    return tail.threshold(fpr)


def calibrated_p_values(calibration_scores: np.ndarray, scores: np.ndarray,
                        tail_share: float) -> np.ndarray:
    """Conformal p-values, and above the tail's start (where the model has one) the
    tail's, so that a row is flagged at ``calibrated_threshold`` exactly when its
    p-value is below the false-positive rate."""
    p_values = conformal_p_values(calibration_scores, scores)
    tail = exponential_tail(calibration_scores, tail_share)
    if tail is not None:
        beyond = scores > tail.start
        p_values[beyond] = tail.p_values(scores[beyond])
    return p_values


def share_threshold(scores: np.ndarray, share: float) -> float:
    """The anomaly score above which ``share`` of ``scores`` lie, set as scikit-learn's
    IsolationForest sets ``offset_`` (``score_samples`` is the negated score):
    the ``share`` percentile of the negated scores, interpolated linearly. With no
    ties, ceil(share * (n - 1)) of the n scores are above it: 30 of 300 at 0.1."""
    negated = -np.asarray(scores, dtype=np.float64)
    return float(-np.percentile(negated, 100 * share))


def share_threshold_record(scores: dict[str, np.ndarray], share: float) -> dict:
    """What the model file keeps of a threshold set by ``contamination`` (its training
    summary's ``share_threshold``): the share, how many training rows were scored,
    and the threshold of each score kind, which loading cannot recompute."""
    rows = len(next(iter(scores.values())))  # every kind scores the same rows
    return {"share": share, "rows": rows,
            "thresholds": {kind: share_threshold(values, share)
                           for kind, values in scores.items()}}


def share_source(record: dict) -> str:
    """A threshold set by ``contamination``, in words (fit line, info, report)."""
    return (f"flags {100 * record['share']:.1f}% of the {record['rows']} training rows, "
            f"as --contamination {record['share']:g} asks")


def calibration_source(training: dict) -> str:
    """Where a model's threshold came from, in words, from its ``training`` summary:
    the training rows a ``contamination`` share flags, or the held-out scores (model
    files from before the calibration fits lack the counts)."""
    if training.get("share_threshold"):
        return share_source(training["share_threshold"])
    rows = training.get("calibration_rows") or training["validation_rows"]
    fits = training.get("calibration_fits", 0)
    return (f"set on {rows} held-out scores" + (f" from {fits + 1} fits" if fits else "")
            + "".join(f", {note}" for note in calibration_notes(training)))


def threshold_source(training: dict, fpr: float) -> str:
    """Where a model's threshold came from, with the false-positive rate it targets
    when held-out scores set it (`info`, the report)."""
    if training.get("share_threshold"):
        return calibration_source(training)
    return f"target false-positive rate {fpr}, {calibration_source(training)}"


def calibration_notes(training: dict) -> list[str]:
    """What set a model's threshold beside its held-out scores, in words, from its
    ``training`` summary (fit line, info, report): the held-out rows unconfirmed_siblings
    left out, and the exponential tail; empty for neither, as in model files from
    before them."""
    rows = training.get("calibration_rows") or training["validation_rows"]
    left_out = training.get("calibration_left_out", 0)
    share = training.get("calibration_tail", 0.0)
    return ([f"{left_out} more left out as near confirmed anomalies"] if left_out else []) + (
        [f"an exponential tail above their {round(100 * (1 - share))}th percentile"]
        if _tail_rows(rows, share) else [])
