"""``Detector``: the detector the CLI is a thin shell over: fit on a table, score,
explain, save. The public ``VAEAnomalyDetector`` (estimator.py) is this class with
scikit-learn's conventions on top; the commands use ``Detector`` itself, so that
none of them waits for scikit-learn to import.

Example:
    >>> import pandas as pd
    >>> detector = Detector(seed=0, exclude=["transaction_id"])
    >>> detector.fit(pd.read_csv("sample_data/train.csv"))       # doctest: +SKIP
    >>> scores = detector.score(pd.read_csv("sample_data/new.csv"))  # doctest: +SKIP
    >>> detector.save("model.vae")                                # doctest: +SKIP

The parts live beside it: parameter checks in params.py, the fit of one split in
fitting.py, the threshold and its calibration fits in calibration.py, and
``load`` / ``loads`` in loading.py.
"""

from __future__ import annotations

import dataclasses
import platform
import time
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ._version import __version__
from .artifact import write_model
from .calibration import (MAX_CALIBRATION_FITS, TAIL_SHARE, calibrated_p_values,
                          calibrated_threshold, calibration_folds, fold_seed,
                          share_threshold_record, unconfirmed_siblings, validation_size)
from .data import to_arrow
from .defaults import DEFAULT_BETA, DEFAULT_DRAWS, DEFAULT_FPR, DEFAULT_SAMPLES, SCORE_KINDS
from .errors import InputError
from .explanation import column_contributions, top_columns
from .fit_summary import FitSummary
from .fitting import Dismissal, Exposure, FitLabel, SplitFit, fit_split, unlabelled
from .health import HealthMonitor
from .known import (KnownRows, check_verdicts_agree, keys_learned_once, resolve_known,
                    resolve_normals)
from .params import check_params, check_score_options, names, resolve_device
from .preprocessing import EncodedBatch, Preprocessor
from .scoring import ScoreParts, row_keys, score_rows
from .training import TrainingCallback, TrainingConfig

MIN_TRAINING_ROWS = 10
SCORE_COLUMNS = ("anomaly_score", "is_anomaly", "p_value", "reconstruction_nll", "kl_divergence",
                 "score_std_error")
EXPLANATION_COLUMN = "top_columns"


class Detector:
    """A Variational Autoencoder anomaly detector for tables of mixed types.

    Parameters mirror ``vae-anomaly fit``; ``None`` means "sized from the data".
    Fit on normal records only; higher ``anomaly_score`` means more anomalous.
    """

    def __init__(self, *, latent_dim: int | None = None, epochs: int | None = None,
                 batch_size: int | None = None, beta: float = DEFAULT_BETA,
                 fpr: float = DEFAULT_FPR, samples: int = DEFAULT_SAMPLES,
                 validation_fraction: float = 0.1, learning_rate: float | None = None,
                 categorical: Sequence[str] = (),
                 exclude: Sequence[str] = (), score_kind: str = "elbo", device: str = "auto",
                 seed: int = 0, calibration_fits: int = MAX_CALIBRATION_FITS,
                 contamination: float | str = "auto"):
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.beta = beta
        self.fpr = fpr
        self.samples = samples
        self.validation_fraction = validation_fraction
        self.learning_rate = learning_rate
        # Kept as given, as scikit-learn's clone() expects; fit reads them with names().
        self.categorical = categorical
        self.exclude = exclude
        self.score_kind = score_kind
        self.device = device
        self.seed = seed
        self.calibration_fits = calibration_fits
        self.contamination = contamination

    # ----- fitting -----------------------------------------------------------------
    def fit(self, frame: pd.DataFrame | pa.Table, source: str = "the training data", *,
            callbacks: Sequence[TrainingCallback] = (), known_anomalies=None,
            known_normals=None) -> Detector:
        """Learn normal behaviour from ``frame`` and set the threshold on held-out rows:
        the main fit's, and on small files those of extra calibration fits.
        ``callbacks`` hear about every epoch (the CLI's progress bar).
        ``known_anomalies``: rows confirmed as anomalous, a table (a DataFrame or an
        Arrow table with the feature columns) or a boolean mask over ``frame``'s rows.
        Training pushes their scores up (outlier exposure), and the training rows
        they match leave the normal rows, held-out ones included (known.py).
        ``known_normals``: rows dismissed as normal, in the same forms. They train as
        normal (robust training never rejects them) and training pulls their scores
        below the threshold's quantile; held out, they stay calibration rows; rows
        that are not rows of ``frame`` join the training rows. Rows are matched by
        their values, and values both confirmed and dismissed are an InputError."""
        check_params(self)
        started = time.perf_counter()
        frame = to_arrow(frame)
        if frame.num_rows < MIN_TRAINING_ROWS:
            raise InputError(f"{source} has {frame.num_rows} row(s); fit needs at least "
                             f"{MIN_TRAINING_ROWS} rows of normal records")
        device = resolve_device(self.device)
        self.draws_ = DEFAULT_DRAWS  # the held-out scores' draws, and every score's after
        with keys_learned_once():
            known = self._known(frame, known_anomalies, source)
            normals = self._known_normals(frame, known_normals, source)
        check_verdicts_agree(known, normals)
        frame, order = self._in_canonical_order(frame, source)
        if known is not None:
            known = dataclasses.replace(known, in_data=known.in_data[order])
        dismissal = self._dismissal(normals, order, source)
        train_index, val_index = self._split(frame.num_rows, known)
        folds = calibration_folds(train_index, val_index, self.seed, self.calibration_fits)
        exposures = _exposures(known, len(folds), self.seed)
        main = self._fit_on(frame, train_index, val_index, self.seed, device,
                            _labelled(callbacks, 0, len(folds)), source,
                            exposure=exposures[0], dismissal=dismissal)
        self.preprocessor_, self.model_ = main.preprocessor, main.model
        self.config_ = main.model.config
        fits = [main] + [
            self._fit_on(frame, fold_train, fold_val, fold_seed(self.seed, fold), device,
                         _labelled(callbacks, fold, len(folds)), source,
                         judge_outliers=False, exposure=exposures[fold], dismissal=dismissal)
            for fold, (fold_train, fold_val) in enumerate(folds, start=1)]
        calibration = [fit.heldout for fit in fits]
        scores = {kind: np.concatenate([parts.score(kind) for parts in calibration])
                  for kind in SCORE_KINDS}
        kept = ~self._siblings(scores[self.score_kind], fits)
        self.calibration_scores_ = {kind: np.sort(values[kept]) for kind, values in scores.items()}
        self.calibration_tail_ = TAIL_SHARE if known is not None else 0.0
        self.share_threshold_ = self._share_threshold(frame, known, source)
        self.training_outliers_ = main.outliers.renumbered(order)
        result = main.result
        added = 0 if dismissal is None else dismissal.outside.num_rows
        self.summary_ = FitSummary(
            rows=frame.num_rows, train_rows=len(train_index) + added,
            validation_rows=len(val_index),
            epochs_run=len(result.history), best_epoch=result.best_epoch,
            stopped_early=result.stopped_early, seconds=time.perf_counter() - started,
            # The main fit's epochs; the fit labels only matter to live callbacks.
            device=str(device), history=[unlabelled(s.to_dict()) for s in result.history],
            calibration_rows=int(kept.sum()), calibration_fits=len(calibration) - 1,
            calibration_left_out=int(len(kept) - kept.sum()),
            calibration_tail=self.calibration_tail_,
            training_outliers=len(main.outliers.rows), share_threshold=self.share_threshold_,
            **self._known_counts(known, fits), **_normal_counts(normals, known),
            **self._dismissed_flagged(normals), draws=self.draws_)
        return self

    def _dismissed_flagged(self, normals: KnownRows | None) -> dict[str, int]:
        """How many dismissed rows the model still flags at its threshold (in-sample:
        it trained on them), as ``score`` scores them."""
        if normals is None:
            return {}
        parts = self.default_scores(self.encode(normals.table, source=normals.source))
        flagged = parts.score(self.score_kind) > self.threshold_for(self.score_kind)
        return {"known_normals_flagged": int(flagged.sum())}

    def _known_normals(self, frame: pa.Table, known_normals, source: str) -> KnownRows | None:
        if isinstance(known_normals, pd.DataFrame):
            known_normals = to_arrow(known_normals)
        return resolve_normals(frame, known_normals, source,
                               categorical=names(self.categorical), exclude=names(self.exclude))

    @staticmethod
    def _dismissal(normals: KnownRows | None, order: np.ndarray,
                   source: str) -> Dismissal | None:
        """The confirmed normals as each fit takes them, in the rows' canonical order;
        those from outside the data sorted by their values' keys, so that their order
        as given does not change the model either."""
        if normals is None:
            return None
        outside = (normals.outside if normals.outside is not None
                   else np.zeros(len(normals), bool))
        rows = np.flatnonzero(outside)
        rows = rows[np.argsort(normals.keys[rows], kind="stable")]
        return Dismissal(normals.in_data[order], normals.table.take(pa.array(rows, pa.int64())),
                         normals.source)

    def _share_threshold(self, frame: pa.Table, known: KnownRows | None,
                         source: str) -> dict | None:
        """With ``contamination`` a share, the threshold that flags that share of the
        rows given to fit, training and held-out alike, as scikit-learn's outlier
        detectors set theirs (calibration.share_threshold_record); None for auto and 0,
        whose threshold the held-out scores set. Rows matching a confirmed anomaly are
        not normal rows and count for nothing. The rows are scored as ``score`` scores
        them by default (on the CPU, same samples, seed and per-row draws), so that
        ``predict`` on them flags that share exactly."""
        if self.contamination == "auto" or self.contamination == 0:
            return None
        parts = self.default_scores(self.encode(frame, source=source))
        normal = slice(None) if known is None else ~known.in_data
        return share_threshold_record({kind: parts.score(kind)[normal] for kind in SCORE_KINDS},
                                      self.contamination)

    def _in_canonical_order(self, frame: pa.Table, source: str) -> tuple[pa.Table, np.ndarray]:
        """The rows sorted by their feature cells' content keys, and the permutation
        (``order[i]``: the given row now at ``i``). The split, the mini-batches and
        the scaling then follow the rows' values, not the order a file or a query
        happened to give them in, so the same rows make the same model."""
        kinds = Preprocessor().fit(frame, categorical=names(self.categorical),
                                   exclude=names(self.exclude), source=source)
        order = np.argsort(kinds.content_keys(frame, source), kind="stable")
        return frame.take(order), order

    def _siblings(self, scores: np.ndarray, fits: list[SplitFit]) -> np.ndarray:
        """The held-out rows the threshold leaves out as likely unconfirmed anomalies
        (calibration.unconfirmed_siblings); none without confirmed rows."""
        if fits[0].heldout_near_known is None:
            return np.zeros(len(scores), dtype=bool)
        near = np.concatenate([fit.heldout_near_known for fit in fits])
        if fits[0].heldout_dismissed is not None:  # a person said these are normal
            near &= ~np.concatenate([fit.heldout_dismissed for fit in fits])
        return unconfirmed_siblings(scores, near, self.fpr)

    def _known(self, frame: pa.Table, known_anomalies, source: str) -> KnownRows | None:
        if isinstance(known_anomalies, pd.DataFrame):
            known_anomalies = to_arrow(known_anomalies)
        known = resolve_known(frame, known_anomalies, source,
                              categorical=names(self.categorical), exclude=names(self.exclude))
        if known is None:
            return None
        if not isinstance(known_anomalies, KnownRows):  # the CLI has printed its notes
            for note in known.notes:
                warnings.warn(note, UserWarning, stacklevel=3)
        return known if len(known) else None

    def _known_counts(self, known: KnownRows | None, fits: list[SplitFit]) -> dict[str, int]:
        """FitSummary's counts of the confirmed anomalies: how many the model flags at
        its threshold, and how many the calibration fits flag of those they held out."""
        if known is None:
            return {}
        cut = self.threshold_for(self.score_kind)

        def flagged(parts: ScoreParts | None) -> int:
            return 0 if parts is None else int(np.sum(parts.score(self.score_kind) > cut))

        heldout = [fit.known for fit in fits[1:] if fit.known is not None]
        return dict(known_anomalies=len(known), known_in_data=int(known.in_data.sum()),
                    known_flagged=flagged(fits[0].known),
                    known_heldout=sum(len(parts) for parts in heldout),
                    known_heldout_flagged=sum(flagged(parts) for parts in heldout))

    def _fit_on(self, frame: pa.Table, train_index: np.ndarray, val_index: np.ndarray, seed: int,
                device, callbacks: Sequence[TrainingCallback], source: str,
                judge_outliers: bool = True, exposure: Exposure | None = None,
                dismissal: Dismissal | None = None) -> SplitFit:
        """One fit on ``train_index``, ``val_index`` held out (fitting.fit_split); a
        calibration fit (``judge_outliers`` False) judges no outliers."""
        return fit_split(frame, train_index, val_index, seed=seed, device=device,
                         callbacks=callbacks, source=source,
                         categorical=names(self.categorical), exclude=names(self.exclude),
                         latent_dim=self.latent_dim, training=self._training_config(),
                         samples=self.samples, score_seed=self.seed,
                         outlier_kind=self.score_kind if judge_outliers else None,
                         exposure=exposure, dismissal=dismissal)

    def _split(self, n: int, known: KnownRows | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Training and held-out rows; rows that are confirmed anomalies are neither."""
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = validation_size(n, self.validation_fraction)
        train_index, val_index = np.sort(order[n_val:]), np.sort(order[:n_val])
        if known is None or not known.in_data.any():
            return train_index, val_index
        train_index, val_index = (index[~known.in_data[index]]
                                  for index in (train_index, val_index))
        if len(train_index) < MIN_TRAINING_ROWS or len(val_index) == 0:
            raise InputError(f"{known.source} match {int(known.in_data.sum())} of the {n} "
                             "training rows, too few normal rows remain to fit and set a "
                             "threshold; fit on a file of mostly normal records")
        return train_index, val_index

    def _training_config(self) -> TrainingConfig:
        # The threshold's quantile: 1 - fpr, or 1 - the share with contamination a share.
        share = (self.fpr if self.contamination == "auto" or self.contamination == 0
                 else self.contamination)
        return TrainingConfig(epochs=self.epochs, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, beta=self.beta,
                              contamination=self.contamination,  # check_params parsed it
                              normal_quantile=1 - float(share))

    # ----- scoring -----------------------------------------------------------------
    def score(self, frame: pd.DataFrame | pa.Table, *, samples: int | None = None,
              seed: int | None = None, threshold: float | None = None, first_row: int = 0,
              source: str = "the data", device: str = "cpu", kind: str | None = None,
              explain: int = 0) -> pd.DataFrame:
        """Score every row: a DataFrame of SCORE_COLUMNS (index aligned with a pandas ``frame``).

        ``first_row`` is the frame's first row's place in its file, for messages; the
        Monte Carlo draws follow each row's content, so a row gets the same score in
        any chunk, order or subset.
        ``kind`` is 'elbo' or 'iwae'; ``explain`` > 0 adds ``top_columns``.
        """
        columns = self.score_columns(frame, samples=samples, seed=seed, threshold=threshold,
                                     first_row=first_row, source=source, device=device,
                                     kind=kind, explain=explain)
        index = frame.index if isinstance(frame, pd.DataFrame) else None
        return pd.DataFrame(columns, index=index)

    def score_columns(self, frame: pd.DataFrame | pa.Table, *, samples: int | None = None,
                      seed: int | None = None, threshold: float | None = None,
                      first_row: int = 0, source: str = "the data", device: str = "cpu",
                      health: HealthMonitor | None = None, kind: str | None = None,
                      explain: int = 0, encoded: EncodedBatch | None = None
                      ) -> dict[str, np.ndarray]:
        """Like ``score``, as a dict of numpy arrays keyed by SCORE_COLUMNS (plus
        ``top_columns`` when ``explain`` > 0).

        ``kind`` is 'elbo' or 'iwae' (default: the detector's ``score_kind``).
        A ``health`` monitor, if given, receives the batch's per-column counts.
        ``encoded``: the frame as ``encode`` gives it, when the caller encoded it
        already (score_file encodes the next chunk while this one is scored).
        """
        self._check_fitted()
        samples = self.samples if samples is None else samples
        kind = self.score_kind if kind is None else kind
        check_score_options(seed=seed, samples=samples, threshold=threshold, explain=explain)
        samples = int(samples)  # numpy integers, as plain ints
        if kind not in SCORE_KINDS:
            raise InputError(f"--score must be elbo or iwae (got {kind!r})")
        if encoded is None:
            encoded = self.encode(frame, source=source, first_row=first_row)
        if health is not None:
            health.add(encoded)
        rows = row_keys(encoded)  # draws follow each row's content (scoring.py)
        target = resolve_device(device)
        self.model_.to(target)
        seed = self.seed if seed is None else int(seed)
        parts = self._score_encoded(encoded, rows, samples, seed, target, iwae=kind == "iwae")
        score = parts.score(kind)
        cut = self.threshold_for(kind) if threshold is None else threshold
        columns = {
            "anomaly_score": score,
            "is_anomaly": (score > cut).astype(np.int64),
            "p_value": calibrated_p_values(self.calibration_scores_[kind], score,
                                           self.calibration_tail_),
            "reconstruction_nll": parts.reconstruction,
            "kl_divergence": parts.kl,
            "score_std_error": parts.score_std_error(kind),
        }
        if explain:
            columns[EXPLANATION_COLUMN] = self._explain(encoded, rows, samples, seed, target,
                                                        explain)
        return columns

    def encode(self, frame: pd.DataFrame | pa.Table, *, source: str = "the data",
               first_row: int = 0) -> EncodedBatch:
        """The rows as the network takes them (preprocessing.py); InputError names a
        cell that cannot be read, by its place in the file (``first_row`` on)."""
        self._check_fitted()
        return self.preprocessor_.transform(frame, source=source, first_row=first_row)

    def _explain(self, encoded: EncodedBatch, rows: np.ndarray, samples: int,
                 seed: int, device, top: int) -> np.ndarray:
        """top_columns for each row: see explanation.py (leave-one-column-out)."""

        def reconstruction(batch: EncodedBatch) -> np.ndarray:
            return self._score_encoded(batch, rows, samples, seed, device,
                                       iwae=False).reconstruction

        contributions = column_contributions(reconstruction, encoded,
                                             self.preprocessor_.typical_encoding(),
                                             self.preprocessor_.term_columns)
        return top_columns(contributions, self.preprocessor_.feature_names, top)

    def threshold_for(self, kind: str) -> float:
        """The threshold for score ``kind``: with ``contamination`` a share, the one that
        flagged that share of the training rows; else the (1 - fpr) quantile of its
        calibration scores (with confirmed rows, of their exponential tail:
        calibration.py)."""
        if self.share_threshold_ is not None:
            return self.share_threshold_["thresholds"][kind]
        return calibrated_threshold(self.calibration_scores_[kind], self.fpr,
                                    self.calibration_tail_)

    @property
    def threshold_(self) -> float:
        return self.threshold_for(self.score_kind)

    @property
    def validation_scores_(self) -> np.ndarray:
        """The held-out normal rows' scores (of ``score_kind``), sorted."""
        return self.calibration_scores_[self.score_kind]

    def default_scores(self, encoded: EncodedBatch, keys: np.ndarray | None = None) -> ScoreParts:
        """The rows' score parts as ``score`` gives them by default: on the CPU, with the
        model's samples, seed and per-row draws (``keys``: the rows' row_keys, if known)."""
        cpu = resolve_device("cpu")
        self.model_.to(cpu)
        keys = row_keys(encoded) if keys is None else keys
        return self._score_encoded(encoded, keys, self.samples, self.seed, cpu)

    def _score_encoded(self, encoded: EncodedBatch, row_ids: np.ndarray, samples: int, seed: int,
                       device, iwae: bool = True) -> ScoreParts:
        return score_rows(self.model_, encoded, row_ids, samples=samples, seed=seed,
                          device=device, draws=self.draws_, iwae=iwae)

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise InputError("this detector is not fitted yet; call fit() or load() first")

    # ----- persistence -------------------------------------------------------------
    def save(self, path) -> None:
        """Write the model file atomically (see artifact.py for its contents)."""
        self._check_fitted()
        tensors = {f"model.{k}": v for k, v in self.model_.state_dict().items()}
        for kind in SCORE_KINDS:
            tensors[f"calibration_scores.{kind}"] = torch.from_numpy(self.calibration_scores_[kind])
        tensors["training_outliers.rows"] = torch.from_numpy(self.training_outliers_.rows.astype(np.int64))
        tensors["training_outliers.scores"] = torch.from_numpy(
            self.training_outliers_.scores.astype(np.float64))
        write_model(path, self.metadata(), tensors)

    def metadata(self) -> dict:
        """Everything but the tensors: enough to rebuild and to describe the model."""
        self._check_fitted()
        return {
            "params": {**self.get_params(), "categorical": names(self.categorical),
                       "exclude": names(self.exclude)},
            "config": self.config_.to_dict(),
            "preprocessing": self.preprocessor_.to_state(),
            "threshold": float(self.threshold_),
            "thresholds": {kind: self.threshold_for(kind) for kind in SCORE_KINDS},
            "training": self.summary_.to_dict(),
            "versions": {"vae_anomaly": __version__, "torch": torch.__version__,
                         "python": platform.python_version()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    _PARAM_NAMES = ("latent_dim", "epochs", "batch_size", "beta", "fpr", "samples",
                    "validation_fraction", "learning_rate", "categorical", "exclude",
                    "score_kind", "device", "seed", "calibration_fits", "contamination")

    def get_params(self, deep: bool = True) -> dict:
        """The constructor arguments (scikit-learn's convention; ``deep`` has nothing
        nested to descend into)."""
        return {name: getattr(self, name) for name in self._PARAM_NAMES}

    def set_params(self, **params) -> Detector:
        """Change constructor arguments, as scikit-learn's ``set_params``; refit after.

        Example:
            >>> detector = Detector().set_params(beta=0.5, seed=7)
        """
        unknown = sorted(set(params) - set(self._PARAM_NAMES))
        if unknown:
            raise InputError(f"unknown parameter {unknown[0]!r}; the parameters are: "
                             f"{', '.join(self._PARAM_NAMES)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self


def _labelled(callbacks: Sequence[TrainingCallback], fit: int,
              calibration_fits: int) -> list[TrainingCallback]:
    """The callbacks, told which fit each epoch belongs to (0: the model's own)."""
    return [FitLabel(callback, fit, calibration_fits) for callback in callbacks]


def _exposures(known: KnownRows | None, calibration_fits: int, seed: int) -> list[Exposure | None]:
    """Each fit's confirmed anomalies: the main fit trains against and scores all of
    them; calibration fit j keeps block j of them out of its training and scores it."""
    if known is None:
        return [None] * (calibration_fits + 1)
    table, every = known.table, np.arange(len(known))
    order = np.random.default_rng([seed, 2]).permutation(len(known))
    blocks = np.array_split(order, calibration_fits) if calibration_fits else []
    return [Exposure(table, every, every, known.source)] + [
        Exposure(table, np.sort(np.setdiff1d(order, block)), np.sort(block), known.source)
        for block in blocks]


def _normal_counts(normals: KnownRows | None, known: KnownRows | None) -> dict[str, int]:
    """FitSummary's counts of the confirmed normals and of the rows reviewed."""
    reviewed = sum(rows.reviewed for rows in (normals, known) if rows is not None)
    if normals is None:
        return {"verdicts_reviewed": reviewed} if reviewed else {}
    outside = 0 if normals.outside is None else int(normals.outside.sum())
    return dict(known_normals=len(normals), known_normals_in_data=int(normals.in_data.sum()),
                known_normals_added=outside, verdicts_reviewed=reviewed)
