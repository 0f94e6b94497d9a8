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
    # Held-out rows left out of the threshold as likely unconfirmed anomalies: above
    # it and near a confirmed row (calibration.unconfirmed_siblings); not counted in
    # calibration_rows (0 = none, no confirmed rows, or a model file from before it).
    calibration_left_out: int = 0
    # With confirmed rows, the share of the kept held-out scores whose exponential
    # tail sets the threshold and the p-values above it (calibration.exponential_tail;
    # 0 = the plain order statistic: no confirmed rows, or a model file from before it).
    calibration_tail: float = 0.0
    # Rows of the training file judged anomalous by robust training (0 = model files
    # from before it, or --contamination 0).
    training_outliers: int = 0
    # Confirmed anomalies (fit --known-anomalies / --label-column; 0 = none, or a
    # model file from before them): how many the fit trained against, how many of the
    # training rows they matched (left out of the normal rows), and how many the
    # model flags at its threshold. The held-out counts are honest ones: calibration
    # fits each kept a block of the confirmed rows out of their training and flagged
    # ``known_heldout_flagged`` of those ``known_heldout`` (0 without calibration fits).
    known_anomalies: int = 0
    known_in_data: int = 0
    known_flagged: int = 0
    known_heldout: int = 0
    known_heldout_flagged: int = 0
    # With ``contamination`` a share: the threshold flags that share of the training
    # rows (calibration.share_threshold_record: share, rows scored, a threshold per
    # score kind). None: held-out scores set it at ``fpr`` (auto, 0, or a model file
    # from before it, whatever its contamination); the model file then lacks the key.
    share_threshold: dict | None = None
    # Confirmed normals (fit --known-normals / --verdicts / the word `normal` in
    # --label-column; 0 = none, or a model file from before them): how many the fit
    # trained as normal and pulled down, how many training rows have their values
    # (dismissed rows of the training file), and how many came from outside it and
    # joined the training rows. ``verdicts_reviewed``: rows with a verdict in the
    # filled review files given (--verdicts), before any was merged or left out.
    known_normals: int = 0
    known_normals_in_data: int = 0
    known_normals_added: int = 0
    # How many of them the model still flags at its threshold (in-sample).
    known_normals_flagged: int = 0
    verdicts_reviewed: int = 0
    # The Monte Carlo draws the held-out scores took, and scoring takes (scoring.py):
    # "sobol", randomized quasi-Monte Carlo; "iid" for model files from before it.
    draws: str = "iid"

    def to_dict(self) -> dict:
        """The model file's ``training`` section: every field, but share_threshold only
        where it is set and the dismissals' counts only where there are any, so that
        models fitted without them stay byte for byte as they were."""
        record = dict(vars(self))
        if record.get("share_threshold") is None:
            record.pop("share_threshold", None)
        for key in VERDICT_COUNTS:
            if not record.get(key):
                record.pop(key, None)
        return record


VERDICT_COUNTS = ("known_normals", "known_normals_in_data", "known_normals_added",
                  "known_normals_flagged", "verdicts_reviewed")


@dataclass
class TrainingOutliers:
    """The training file's rows judged anomalous: 0-based row numbers, sorted, and
    their anomaly scores (the detector's score kind)."""

    rows: np.ndarray
    scores: np.ndarray

    def renumbered(self, order: np.ndarray) -> TrainingOutliers:
        """The same rows, numbered in the data as given: the fit saw its rows in the
        canonical ``order`` (``order[i]`` is the given row at position ``i``)."""
        rows = order[self.rows]
        by_row = np.argsort(rows, kind="stable")
        return TrainingOutliers(rows[by_row], self.scores[by_row])


def known_anomalies_text(training: dict) -> str:
    """The confirmed anomalies of a fit, in words, from its ``training`` record (for
    the fit line, `info` and the report); 'none' for model files from before them."""
    count = training.get("known_anomalies", 0)
    if not count:
        return "none"
    # Rows of the training data with a confirmed row's values: the confirmed rows
    # themselves, and any exact duplicates, which may be more.
    matched = training.get("known_in_data", 0)
    text = (f"{count} trained against ({matched} training row{'' if matched == 1 else 's'} "
            f"with their values kept out of the normal rows); the model flags "
            f"{training.get('known_flagged', 0)} of {count} at its threshold")
    heldout = training.get("known_heldout", 0)
    if heldout:
        text += (f"; held out of their calibration fit, {training.get('known_heldout_flagged', 0)}"
                 f" of {heldout} were flagged")
    return text


def verdicts_text(training: dict) -> str:
    """The verdicts a fit used, in words (fit line, `info`, the report): confirmed
    anomalies, dismissed normals and rows reviewed; 'none' without any."""
    anomalies, normals = training.get("known_anomalies", 0), training.get("known_normals", 0)
    reviewed = training.get("verdicts_reviewed", 0)
    if not (anomalies or normals or reviewed):
        return "none"
    text = (f"{anomalies} confirmed anomal{'y' if anomalies == 1 else 'ies'}, {normals} "
            f"dismissed as normal, {reviewed} row{'' if reviewed == 1 else 's'} reviewed")
    added = training.get("known_normals_added", 0)
    if added:
        text += f" ({added} dismissed row{'' if added == 1 else 's'} from outside the data "
        text += "joined the training rows)"
    if normals:
        text += (f"; the model flags {training.get('known_normals_flagged', 0)} of the "
                 f"{normals} dismissed at its threshold")
    return text
