"""Metrics for a labelled file scored by the detector (``vae-anomaly evaluate``).

The metrics are scikit-learn's, so ROC-AUC here equals sklearn's on the same scores.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    precision_recall_fscore_support,
    roc_auc_score,
)

from .data import is_text, plain_array
from .errors import InputError
from .logical_types import looks_numeric, missing_mask, parse_numbers

_TRUE_TEXT = {"1", "true", "yes", "anomaly"}
_FALSE_TEXT = {"0", "false", "no", "normal"}


def parse_labels(values, column: str, source: str, first_row: int = 0) -> np.ndarray:
    """0/1 labels from numbers 0/1 or text true/false, yes/no; 1 means anomaly.
    Rows in messages count from ``first_row`` (the chunk's place in its file)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = plain_array(values)
    missing = missing_mask(values)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise InputError(f"label column `{column}` in {source} is empty at row "
                         f"{first_row + row + 1}; every row needs a label (1 = anomaly, 0 = normal)")
    if pa.types.is_boolean(values.type):
        return values.to_numpy(zero_copy_only=False).astype(np.int64)
    if is_text(values.type):
        text = pc.utf8_lower(pc.utf8_trim_whitespace(values)).to_numpy(zero_copy_only=False)
        known = np.isin(text, list(_TRUE_TEXT | _FALSE_TEXT))
        if not known.all() and looks_numeric(values):  # e.g. "1.0" from a float column
            return _zero_one(parse_numbers(values, column, source, first_row), column, source,
                             first_row)
        if not known.all():
            row = int(np.flatnonzero(~known)[0])
            raise InputError(f"label column `{column}` in {source} has value {text[row]!r} at "
                             f"row {first_row + row + 1}; use 1/0 or true/false (1 = anomaly)")
        return np.isin(text, list(_TRUE_TEXT)).astype(np.int64)
    return _zero_one(parse_numbers(values, column, source, first_row), column, source, first_row)


def _zero_one(numbers: np.ndarray, column: str, source: str, first_row: int) -> np.ndarray:
    if not np.isin(numbers, [0.0, 1.0]).all():
        row = int(np.flatnonzero(~np.isin(numbers, [0.0, 1.0]))[0])
        raise InputError(f"label column `{column}` in {source} has value {numbers[row]:g} at "
                         f"row {first_row + row + 1}; use 1/0 or true/false (1 = anomaly)")
    return numbers.astype(np.int64)


def classification_metrics(labels: np.ndarray, scores: np.ndarray, flagged: np.ndarray,
                           threshold: float) -> dict:
    """ROC-AUC, average precision, precision/recall/F1 and the confusion matrix at the
    threshold, and the threshold that would maximise F1."""
    both_classes = 0 < labels.sum() < len(labels)
    tn, fp, fn, tp = (int(n) for n in confusion_matrix(labels, flagged, labels=[0, 1]).ravel())
    rates = precision_recall_fscore_support(labels, flagged, average="binary", zero_division=0)
    # None, not 0, where a rate has nothing to count: precision with no row flagged,
    # recall with no anomaly in the file, and F1 without both.
    precision = float(rates[0]) if tp + fp else None
    recall = float(rates[1]) if tp + fn else None
    f1 = float(rates[2]) if precision is not None and recall is not None else None
    result = {
        "rows": int(len(labels)),
        "anomalies": int(labels.sum()),
        "roc_auc": float(roc_auc_score(labels, scores)) if both_classes else None,
        "average_precision": float(average_precision_score(labels, scores)) if both_classes
        else None,
        "threshold": float(threshold),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_positive_rate": float(fp / (fp + tn)) if fp + tn else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
    }
    result.update(_best_f1(labels, scores) if both_classes else
                  {"best_f1": None, "best_f1_threshold": None})
    return result


def _best_f1(labels: np.ndarray, scores: np.ndarray) -> dict:
    precision, recall, cuts = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros_like(precision), where=(precision + recall) > 0)[:-1]
    best = int(np.argmax(f1))
    # precision_recall_curve flags scores >= cut; our flag is score > threshold, so
    # report the largest score below the cut (or just under it) as the threshold.
    below = scores[scores < cuts[best]]
    threshold = float(below.max()) if len(below) else float(np.nextafter(cuts[best], -np.inf))
    return {"best_f1": float(f1[best]), "best_f1_threshold": threshold}
