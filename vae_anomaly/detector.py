"""``VAEAnomalyDetector``: the library API the CLI is a thin shell over.

Example:
    >>> import pandas as pd
    >>> from vae_anomaly import VAEAnomalyDetector, load
    >>> detector = VAEAnomalyDetector(seed=0, exclude=["transaction_id"])
    >>> detector.fit(pd.read_csv("sample_data/train.csv"))       # doctest: +SKIP
    >>> scores = detector.score(pd.read_csv("sample_data/new.csv"))  # doctest: +SKIP
    >>> detector.save("model.vae"); same = load("model.vae")     # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from ._version import __version__
from .artifact import model_from_bytes, read_model, write_model
from .data import to_arrow
from .errors import InputError, ModelFileError
from .explanation import column_contributions, top_columns
from .health import HealthMonitor
from .model import TabularVAE, VAEConfig
from .preprocessing import EncodedBatch, Preprocessor
from .rejection import MAX_CONTAMINATION, parse_contamination
from .scoring import DEFAULT_SAMPLES, MAX_SAMPLES, ScoreParts, score_rows
from .training import (DEFAULT_BETA, EpochStats, Tensors, TrainingCallback, TrainingConfig,
                       TrainingResult, row_losses, train)

MIN_TRAINING_ROWS = 10
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
SCORE_COLUMNS = ("anomaly_score", "is_anomaly", "p_value", "reconstruction_nll", "kl_divergence",
                 "score_std_error")
EXPLANATION_COLUMN = "top_columns"
SCORE_KINDS = ("elbo", "iwae")


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an input error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but no CUDA GPU is available; "
                         "use --device auto or --device cpu")
    if requested not in ("cpu", "cuda"):
        raise InputError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return torch.device(requested)


@dataclass
class FitSummary:
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


@dataclass
class _Fit:
    preprocessor: Preprocessor
    model: TabularVAE
    result: TrainingResult
    heldout: ScoreParts  # the held-out rows judged normal
    outliers: TrainingOutliers


class VAEAnomalyDetector:
    """A Variational Autoencoder anomaly detector for tables of mixed types.

    Parameters mirror ``vae-anomaly fit``; ``None`` means "sized from the data".
    Fit on normal records only; higher ``anomaly_score`` means more anomalous.
    """

    def __init__(self, *, latent_dim: int | None = None, epochs: int | None = None,
                 batch_size: int | None = None, beta: float = DEFAULT_BETA, fpr: float = 0.01,
                 samples: int = DEFAULT_SAMPLES, validation_fraction: float = 0.1,
                 learning_rate: float | None = None, categorical: Sequence[str] = (),
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
        # Kept as given, as scikit-learn's clone() expects; fit reads them with _names.
        self.categorical = categorical
        self.exclude = exclude
        self.score_kind = score_kind
        self.device = device
        self.seed = seed
        self.calibration_fits = calibration_fits
        self.contamination = contamination
        self.callbacks: list[TrainingCallback] = []

    # ----- fitting -----------------------------------------------------------------
    def fit(self, frame: pd.DataFrame | pa.Table,
            source: str = "the training data") -> VAEAnomalyDetector:
        """Learn normal behaviour from ``frame`` and set the threshold on held-out rows."""
        self._check_params()
        started = time.perf_counter()
        frame = to_arrow(frame)
        if frame.num_rows < MIN_TRAINING_ROWS:
            raise InputError(f"{source} has {frame.num_rows} row(s); fit needs at least "
                             f"{MIN_TRAINING_ROWS} rows of normal records")
        device = resolve_device(self.device)
        train_index, val_index = self._split(frame.num_rows)
        folds = calibration_folds(train_index, val_index, self.seed, self.calibration_fits)
        main = self._fit_on(frame, train_index, val_index, self.seed, device,
                            self._labelled_callbacks(0, len(folds)), source)
        self.preprocessor_, self.model_, self.config_ = main.preprocessor, main.model, main.model.config
        calibration = [main.heldout]
        for fold, (fold_train, fold_val) in enumerate(folds, start=1):
            calibration.append(self._fit_on(
                frame, fold_train, fold_val, _fold_seed(self.seed, fold), device,
                self._labelled_callbacks(fold, len(folds)), source).heldout)
        self.calibration_scores_ = {
            kind: np.sort(np.concatenate([parts.score(kind) for parts in calibration]))
            for kind in SCORE_KINDS}
        self.training_outliers_ = main.outliers
        result = main.result
        self.summary_ = FitSummary(
            rows=frame.num_rows, train_rows=len(train_index), validation_rows=len(val_index),
            epochs_run=len(result.history), best_epoch=result.best_epoch,
            stopped_early=result.stopped_early, seconds=time.perf_counter() - started,
            # The main fit's epochs; the fit labels only matter to live callbacks.
            device=str(device), history=[_unlabelled(s.to_dict()) for s in result.history],
            calibration_rows=sum(len(parts) for parts in calibration),
            calibration_fits=len(calibration) - 1,
            training_outliers=len(main.outliers.rows))
        return self

    def _labelled_callbacks(self, fit: int, calibration_fits: int) -> list[TrainingCallback]:
        """The callbacks, told which fit each epoch belongs to (0: the model's own)."""
        return [_FitLabel(callback, fit, calibration_fits) for callback in self.callbacks]

    def _fit_on(self, frame: pa.Table, train_index: np.ndarray, val_index: np.ndarray, seed: int,
                device, callbacks: Sequence[TrainingCallback], source: str) -> _Fit:
        """Preprocessor and network learned from ``train_index`` (training stops early on
        ``val_index``), the model on the CPU; the scores of the ``val_index`` rows judged
        normal, and the rows of both judged anomalous."""
        # Held-out rows calibrate the threshold, so nothing may be fitted on them, the
        # scaling included: the quantile map's density would favour its own rows.
        preprocessor = Preprocessor().fit(frame, categorical=_names(self.categorical),
                                          exclude=_names(self.exclude), source=source,
                                          rows=train_index)
        encoded = preprocessor.transform(frame, source=source)
        preprocessor.note_heldout_unseen(encoded, val_index)
        layout = preprocessor.layout
        config = VAEConfig.sized_for(layout.n_numeric, layout.n_indicators,
                                     layout.category_sizes, self.latent_dim)
        # The initial weights come from the seed; the caller's random stream is left as
        # it was (training draws from its own generator, below).
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(seed)
            model = TabularVAE(config)
        model = model.to(device)
        generator = torch.Generator(device=device).manual_seed(seed)
        val_data = _tensors(encoded, val_index, device)
        result = train(model, _tensors(encoded, train_index, device), val_data,
                       self._training_config(), generator, callbacks)
        heldout_outlier = _heldout_outliers(model, val_data, result, self.beta, generator)
        normal_val = val_index[~heldout_outlier]
        # Held-out rows keep their row ids and the scoring seed, so these scores equal
        # what `score` gives them.
        heldout = score_rows(model, _subset(encoded, normal_val), normal_val,
                             samples=self.samples, seed=self.seed, device=device)
        outlier_rows = np.sort(np.concatenate([
            train_index[result.rejected.numpy()] if result.rejected is not None
            else np.zeros(0, dtype=train_index.dtype), val_index[heldout_outlier]]))
        outliers = TrainingOutliers(outlier_rows, score_rows(
            model, _subset(encoded, outlier_rows), outlier_rows, samples=self.samples,
            seed=self.seed, device=device).score(self.score_kind))
        return _Fit(preprocessor, model.cpu(), result, heldout, outliers)

    def _check_params(self, for_fit: bool = True) -> None:
        """InputError for a setting no fit accepts. A loaded model (``for_fit=False``)
        is held only to what scoring uses, so files written under older, looser
        rules still load."""
        whole = [name for name in ("samples", "seed") if not _is_int(getattr(self, name))]
        if for_fit:
            whole += [name for name in ("calibration_fits",) if not _is_int(getattr(self, name))]
            whole += [name for name in ("epochs", "batch_size", "latent_dim") if not
                      (getattr(self, name) is None or _is_int(getattr(self, name)))]
        if whole:
            raise InputError(f"{_option(whole[0])} must be a whole number "
                             f"(got {getattr(self, whole[0])!r})")
        checks = [
            (_is_real(self.fpr) and 0 < self.fpr < 1,  # and not NaN
             f"--fpr must be between 0 and 1 (got {self.fpr})"),
            (1 <= self.samples <= MAX_SAMPLES,
             f"--samples must be between 1 and {MAX_SAMPLES} (got {self.samples})"),
            (0 <= self.seed < 2**63, f"--seed must be between 0 and 2**63 - 1 (got {self.seed})"),
            (self.score_kind in SCORE_KINDS,
             f"--score must be elbo or iwae (got {self.score_kind!r})"),
            (_column_names(self.categorical) and _column_names(self.exclude),
             f"--categorical and --exclude take column names (got {self.categorical!r} and "
             f"{self.exclude!r})"),
        ]
        if for_fit:
            checks += self._fit_checks()
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        self._as_python_numbers()

    def _fit_checks(self) -> list[tuple[bool, str]]:
        return [
            (_is_real(self.beta) and math.isfinite(self.beta),
             f"--beta must be a finite number (got {self.beta})"),
            (not _is_real(self.beta) or self.beta >= 0,
             f"--beta must be zero or more (got {self.beta})"),
            (self.learning_rate is None or (_is_real(self.learning_rate)
                                            and 0 < self.learning_rate < math.inf),
             f"the learning rate must be a finite number above 0 (got {self.learning_rate})"),
            # Most rows must train: at 0.999 a 1,000-row file trained on one row.
            (_is_real(self.validation_fraction) and 0 < self.validation_fraction <= 0.5,
             f"the validation fraction must be above 0 and at most 0.5 "
             f"(got {self.validation_fraction})"),
            (self.epochs is None or self.epochs >= 1, "--epochs must be at least 1"),
            (_is_contamination(self.contamination),
             f"--contamination must be auto or a share between 0 and {MAX_CONTAMINATION} "
             f"(got {self.contamination!r})"),
            (0 <= self.calibration_fits <= 100,
             f"--calibration-fits must be between 0 and 100 (got {self.calibration_fits})"),
            (self.batch_size is None or self.batch_size >= 1, "--batch-size must be at least 1"),
            (self.latent_dim is None or 1 <= self.latent_dim <= 1024,
             f"--latent-dim must be between 1 and 1024 (got {self.latent_dim})"),
            (self.batch_size is None or self.batch_size <= 1_000_000,
             f"--batch-size must be at most 1000000 (got {self.batch_size})"),
        ]

    def _as_python_numbers(self) -> None:
        """numpy scalars (np.int64(7), np.float32(0.5)) become plain ints and floats,
        which torch's generators and the model file's JSON both need; values stay."""
        for name in ("samples", "seed", "calibration_fits", "epochs", "batch_size", "latent_dim"):
            if getattr(self, name) is not None:
                setattr(self, name, int(getattr(self, name)))
        for name in ("fpr", "beta", "validation_fraction", "learning_rate"):
            if getattr(self, name) is not None:
                setattr(self, name, float(getattr(self, name)))

    def _split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        order = np.random.default_rng(self.seed).permutation(n)
        n_val = validation_size(n, self.validation_fraction)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    def _training_config(self) -> TrainingConfig:
        return TrainingConfig(epochs=self.epochs, batch_size=self.batch_size,
                              learning_rate=self.learning_rate, beta=self.beta,
                              contamination=parse_contamination(self.contamination))

    # ----- scoring -----------------------------------------------------------------
    def score(self, frame: pd.DataFrame | pa.Table, *, samples: int | None = None,
              seed: int | None = None, threshold: float | None = None, first_row: int = 0,
              source: str = "the data", device: str = "cpu", kind: str | None = None,
              explain: int = 0) -> pd.DataFrame:
        """Score every row: a DataFrame of SCORE_COLUMNS (index aligned with a pandas ``frame``).

        ``first_row`` is the row id of the frame's first row, so that chunks of one
        file get the same draws, hence the same scores, as the file in one piece.
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
                      explain: int = 0) -> dict[str, np.ndarray]:
        """Like ``score``, as a dict of numpy arrays keyed by SCORE_COLUMNS (plus
        ``top_columns`` when ``explain`` > 0).

        ``kind`` is 'elbo' or 'iwae' (default: the detector's ``score_kind``).
        A ``health`` monitor, if given, receives the batch's per-column counts.
        """
        self._check_fitted()
        samples = self.samples if samples is None else samples
        kind = self.score_kind if kind is None else kind
        check_score_options(seed=seed, samples=samples, threshold=threshold, explain=explain)
        samples = int(samples)  # numpy integers, as plain ints
        if kind not in SCORE_KINDS:
            raise InputError(f"--score must be elbo or iwae (got {kind!r})")
        encoded = self.preprocessor_.transform(frame, source=source, first_row=first_row)
        if health is not None:
            health.add(encoded)
        rows = np.arange(first_row, first_row + len(encoded))
        target = resolve_device(device)
        self.model_.to(target)
        seed = self.seed if seed is None else int(seed)
        parts = self._score_encoded(encoded, rows, samples, seed, target)
        score = parts.score(kind)
        cut = self.threshold_for(kind) if threshold is None else threshold
        columns = {
            "anomaly_score": score,
            "is_anomaly": (score > cut).astype(np.int64),
            "p_value": conformal_p_values(self.calibration_scores_[kind], score),
            "reconstruction_nll": parts.reconstruction,
            "kl_divergence": parts.kl,
            "score_std_error": parts.score_std_error(kind),
        }
        if explain:
            columns[EXPLANATION_COLUMN] = self._explain(encoded, rows, samples, seed, target,
                                                        explain)
        return columns

    def _explain(self, encoded: EncodedBatch, rows: np.ndarray, samples: int,
                 seed: int, device, top: int) -> np.ndarray:
        """top_columns for each row: see explanation.py (leave-one-column-out)."""

        def reconstruction(batch: EncodedBatch) -> np.ndarray:
            return self._score_encoded(batch, rows, samples, seed, device).reconstruction

        contributions = column_contributions(reconstruction, encoded,
                                             self.preprocessor_.typical_encoding(),
                                             self.preprocessor_.term_columns)
        return top_columns(contributions, self.preprocessor_.feature_names, top)

    def threshold_for(self, kind: str) -> float:
        """The threshold for score ``kind``: the (1 - fpr) quantile of its calibration scores."""
        return threshold_at(self.calibration_scores_[kind], self.fpr)

    @property
    def threshold_(self) -> float:
        return self.threshold_for(self.score_kind)

    @property
    def validation_scores_(self) -> np.ndarray:
        """The held-out normal rows' scores (of ``score_kind``), sorted."""
        return self.calibration_scores_[self.score_kind]

    def _score_encoded(self, encoded: EncodedBatch, row_ids: np.ndarray, samples: int, seed: int,
                       device) -> ScoreParts:
        return score_rows(self.model_, encoded, row_ids, samples=samples, seed=seed,
                          device=device)

    def score_samples(self, frame: pd.DataFrame) -> np.ndarray:
        """scikit-learn convention: the opposite of the anomaly score (lower = more abnormal)."""
        return -self.score(frame)["anomaly_score"].to_numpy()

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """scikit-learn convention: -1 for anomalies, 1 for normal rows."""
        return np.where(self.score(frame)["is_anomaly"].to_numpy() == 1, -1, 1)

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
            "params": {**self.get_params(), "categorical": _names(self.categorical),
                       "exclude": _names(self.exclude)},
            "config": self.config_.to_dict(),
            "preprocessing": self.preprocessor_.to_state(),
            "threshold": float(self.threshold_),
            "thresholds": {kind: self.threshold_for(kind) for kind in SCORE_KINDS},
            "training": vars(self.summary_),
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

    def set_params(self, **params) -> VAEAnomalyDetector:
        """Change constructor arguments, as scikit-learn's ``set_params``; refit after.

        Example:
            >>> detector = VAEAnomalyDetector().set_params(beta=0.5, seed=7)
        """
        unknown = sorted(set(params) - set(self._PARAM_NAMES))
        if unknown:
            raise InputError(f"unknown parameter {unknown[0]!r}; the parameters are: "
                             f"{', '.join(self._PARAM_NAMES)}")
        for name, value in params.items():
            setattr(self, name, value)
        return self


def load(path) -> VAEAnomalyDetector:
    """Load a model file written by ``save`` / ``vae-anomaly fit``. Never executes code."""
    metadata, tensors = read_model(path)
    return _rebuild_checked(metadata, tensors, getattr(path, "name", path))


def loads(payload: bytes, name: str = "the model") -> VAEAnomalyDetector:
    """Load a model from model-file bytes (e.g. sent to a Dask worker); same checks as load."""
    metadata, tensors = model_from_bytes(payload, name=name)
    return _rebuild_checked(metadata, tensors, name)


def _rebuild_checked(metadata: dict, tensors: dict[str, torch.Tensor], name) -> VAEAnomalyDetector:
    try:
        return _rebuild(metadata, tensors)
    except InputError as exc:  # a parameter no fit would have accepted
        raise ModelFileError(f"{name} has an invalid setting ({exc}); "
                             "fit the model again") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise ModelFileError(f"{name} has inconsistent contents ({reason[:200]}); "
                             "fit the model again") from None


def _rebuild(metadata: dict, tensors: dict[str, torch.Tensor]) -> VAEAnomalyDetector:
    # Files from before the calibration fits were fitted without them.
    detector = VAEAnomalyDetector(**{"calibration_fits": 0, **metadata["params"]})
    detector.preprocessor_ = Preprocessor.from_state(metadata["preprocessing"])
    detector.config_ = VAEConfig(**metadata["config"])
    detector.model_ = TabularVAE(detector.config_)
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    detector.model_.load_state_dict(weights, strict=True)
    detector.model_.eval()
    detector.calibration_scores_ = {
        kind: tensors[f"calibration_scores.{kind}"].double().numpy() for kind in SCORE_KINDS}
    detector.summary_ = FitSummary(**metadata["training"])
    # Model files from before robust training hold no outliers.
    detector.training_outliers_ = TrainingOutliers(
        tensors["training_outliers.rows"].numpy() if "training_outliers.rows" in tensors
        else np.zeros(0, np.int64),
        tensors["training_outliers.scores"].double().numpy() if "training_outliers.scores"
        in tensors else np.zeros(0))
    detector.metadata_ = metadata
    # Everything the file says is checked now, so that a damaged or hand-edited file
    # fails here with ModelFileError and not later, in the middle of scoring.
    detector._check_params(for_fit=False)
    _check_consistent(detector)
    return detector


def _check_consistent(detector: VAEAnomalyDetector) -> None:
    """Raise ValueError where the parts of a loaded model do not fit together."""
    layout, config = detector.preprocessor_.layout, detector.config_
    if (layout.n_numeric, layout.n_indicators, list(layout.category_sizes)) != (
            config.n_numeric, config.n_indicators, list(config.category_sizes)):
        raise ValueError("its column descriptions do not match its network's inputs")
    for kind, scores in detector.calibration_scores_.items():
        if scores.ndim != 1 or len(scores) == 0 or np.isnan(scores).any():
            raise ValueError(f"its held-out {kind} scores are empty or not numbers")
    summary = detector.summary_
    if not (_is_int(summary.best_epoch) and 0 <= summary.best_epoch <= len(summary.history)):
        raise ValueError("its training history does not hold its best epoch")


def _names(value) -> list[str]:
    """Column names given as a list, or one name on its own (not its letters)."""
    return [value] if isinstance(value, str) else list(value)


def _column_names(value) -> bool:
    """Whether ``value`` is one column name or a collection of them."""
    if isinstance(value, str):
        return True
    try:
        return all(isinstance(name, str) for name in value)
    except TypeError:
        return False


def _is_contamination(value) -> bool:
    try:
        parse_contamination(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _option(param: str) -> str:
    return "--" + param.replace("_", "-")


def check_score_options(*, seed=None, samples=None, threshold=None, explain=None,
                        chunk_size=None) -> None:
    """Reject scoring options that would otherwise fail deep inside (or silently)."""
    if chunk_size is not None and not (_is_int(chunk_size) and chunk_size >= 1):
        raise InputError(f"--chunk-size must be at least 1 (got {chunk_size})")
    for name, value in (("seed", seed), ("samples", samples), ("explain", explain)):
        if value is not None and not _is_int(value):
            raise InputError(f"--{name} must be a whole number (got {value!r})")
    if seed is not None and not 0 <= seed < 2**63:
        raise InputError(f"--seed must be between 0 and 2**63 - 1 (got {seed})")
    if samples is not None and not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"--samples must be between 1 and {MAX_SAMPLES} (got {samples})")
    if threshold is not None and not (_is_real(threshold) and math.isfinite(threshold)):
        raise InputError(f"--threshold must be a finite number (got {threshold!r})")
    if explain is not None and explain < 0:
        raise InputError(f"--explain must be zero or more (got {explain})")


def validation_size(n: int, fraction: float) -> int:
    """Rows held out: ``fraction`` of them, but at least 200 (up to 30% of the data),
    because the threshold is a high quantile of their scores and 25 scores cannot
    place a 99th percentile."""
    wanted = max(round(n * fraction), min(MIN_CALIBRATION_ROWS, round(n * 0.3)))
    return int(min(n - 1, max(1, wanted)))


class _FitLabel:
    """Passes epochs on to ``callback`` marked with the fit they belong to."""

    def __init__(self, callback: TrainingCallback, fit: int, calibration_fits: int):
        self.callback, self.fit, self.calibration_fits = callback, fit, calibration_fits

    def on_epoch_end(self, stats: EpochStats) -> None:
        self.callback.on_epoch_end(dataclasses.replace(
            stats, fit=self.fit, calibration_fits=self.calibration_fits))


def _unlabelled(epoch: dict) -> dict:
    return {key: value for key, value in epoch.items() if key not in ("fit", "calibration_fits")}


def calibration_source(training: dict) -> str:
    """Where a model's threshold came from, in words, from its ``training`` summary
    (model files from before the calibration fits lack the counts)."""
    rows = training.get("calibration_rows") or training["validation_rows"]
    fits = training.get("calibration_fits", 0)
    return f"set on {rows} held-out scores" + (f" from {fits + 1} fits" if fits else "")


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


def _fold_seed(seed: int, fold: int) -> int:
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


def conformal_p_values(calibration_scores: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """(1 + #{calibration scores >= s}) / (n + 1) for each score s (calibration sorted)."""
    n = len(calibration_scores)
    at_least = n - np.searchsorted(calibration_scores, scores, side="left")
    return (1.0 + at_least) / (n + 1.0)


def _heldout_outliers(model: TabularVAE, val_data: Tensors, result: TrainingResult, beta: float,
                      generator: torch.Generator) -> np.ndarray:
    """Which held-out rows robust training would have rejected: those past its loss cut,
    and at least as large a share of them as of the training rows, those with the
    highest losses. The share as well as the cut: the model never trained on these
    rows, and a far-out row among them can sit under the cut (a row that is learned is
    not far out), while a cut nearer the bulk would take their normal rows too."""
    outlier = np.zeros(len(val_data), dtype=bool)
    if result.rejected is None or not result.rejected.any():
        return outlier
    losses = row_losses(model, val_data, beta, generator)
    outlier |= losses > result.loss_cut
    count = round(float(result.rejected.float().mean()) * len(val_data))
    if count:
        outlier[np.argsort(losses, kind="stable")[len(losses) - count:]] = True
    return outlier


def _subset(encoded: EncodedBatch, index) -> EncodedBatch:
    return EncodedBatch(encoded.numeric[index], encoded.indicators[index],
                        encoded.categories[index], encoded.nll_offset[index])


def _tensors(encoded: EncodedBatch, index: np.ndarray, device) -> Tensors:
    part = _subset(encoded, index)
    return Tensors(torch.from_numpy(part.numeric).to(device),
                   torch.from_numpy(part.indicators).to(device),
                   torch.from_numpy(part.categories).to(device))
