"""``load`` and ``loads``: a ``VAEAnomalyDetector`` rebuilt from a model file (or,
for the commands, which need no scikit-learn, the plain ``Detector``), and
``read_checked``: the same file's parts with the same checks, without torch (for
`info`).

Everything the file says is checked on load, so that a damaged or hand-edited
file fails here with ``ModelFileError`` and not later, in the middle of scoring.
Loading never executes code from the file (artifact.py reads it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from .artifact import model_from_bytes, read_model
from .defaults import DEFAULT_FPR, DEFAULT_SAMPLES, DRAW_SCHEMES, SCORE_KINDS
from .errors import InputError, ModelFileError
from .fit_summary import FitSummary, TrainingOutliers
from .params import check_params, is_int, is_real
from .preprocessing import Preprocessor
from .rejection import MAX_CONTAMINATION_SHARE

if TYPE_CHECKING:
    from .detector import Detector
    from .estimator import VAEAnomalyDetector

T = TypeVar("T")


@dataclass
class ModelParts:
    """What a model file holds besides the network, each part rebuilt and checked."""

    metadata: dict
    preprocessor: Preprocessor
    summary: FitSummary
    calibration_scores: dict[str, np.ndarray]
    training_outliers: TrainingOutliers


def load(path, *, estimator: bool = True) -> VAEAnomalyDetector | Detector:
    """Load a model file written by ``save`` / ``vae-anomaly fit``. Never executes code.
    ``estimator=False`` gives the plain ``Detector``, without importing scikit-learn."""
    metadata, tensors = read_model(path)
    name = getattr(path, "name", path)
    return _checked(name, lambda: _rebuild(metadata, tensors, estimator))


def loads(payload: bytes, name: str = "the model", *,
          estimator: bool = True) -> VAEAnomalyDetector | Detector:
    """Load a model from model-file bytes (e.g. sent to a Dask worker); same checks as load."""
    metadata, tensors = model_from_bytes(payload, name=name)
    return _checked(name, lambda: _rebuild(metadata, tensors, estimator))


def read_checked(path) -> ModelParts:
    """A model file's parts with every check ``load`` makes but the network's own
    (its weights' names and shapes): `info` runs without importing torch."""
    metadata, arrays = read_model(path)
    name = getattr(path, "name", path)

    def check() -> ModelParts:
        parts = _parts(metadata, arrays)
        settings = SimpleNamespace(**{
            **{key: None for key in ("epochs", "batch_size", "latent_dim", "beta",
                                     "validation_fraction", "learning_rate")},
            "samples": DEFAULT_SAMPLES, "seed": 0, "fpr": DEFAULT_FPR, "score_kind": "elbo",
            "categorical": (), "exclude": (), "calibration_fits": 0, **metadata["params"]})
        check_params(settings, for_fit=False)
        _check_consistent(parts, metadata["config"])
        return parts

    return _checked(name, check)


def _checked(name, rebuild: Callable[[], T]) -> T:
    try:
        return rebuild()
    except InputError as exc:  # a parameter no fit would have accepted
        raise ModelFileError(f"{name} has an invalid setting ({exc}); "
                             "fit the model again") from None
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        reason = f"missing {exc}" if isinstance(exc, KeyError) else str(exc).splitlines()[0]
        raise ModelFileError(f"{name} has inconsistent contents ({reason[:200]}); "
                             "fit the model again") from None


def _parts(metadata: dict, tensors: dict[str, np.ndarray]) -> ModelParts:
    def numbers(key: str, dtype) -> np.ndarray:
        return np.array(tensors[key], dtype=dtype)  # a writable copy

    # Model files from before robust training hold no outliers.
    has_outliers = "training_outliers.rows" in tensors
    return ModelParts(
        metadata=metadata,
        preprocessor=Preprocessor.from_state(metadata["preprocessing"]),
        summary=FitSummary(**metadata["training"]),
        calibration_scores={kind: numbers(f"calibration_scores.{kind}", np.float64)
                            for kind in SCORE_KINDS},
        training_outliers=TrainingOutliers(
            numbers("training_outliers.rows", np.int64) if has_outliers
            else np.zeros(0, np.int64),
            numbers("training_outliers.scores", np.float64) if has_outliers else np.zeros(0)))


def _rebuild(metadata: dict, tensors: dict[str, np.ndarray],
             estimator: bool) -> VAEAnomalyDetector | Detector:
    import torch

    from .model import TabularVAE, VAEConfig

    if estimator:
        from .estimator import VAEAnomalyDetector as cls
    else:
        from .detector import Detector as cls
    parts = _parts(metadata, tensors)
    # Files from before the calibration fits were fitted without them.
    detector = cls(**{"calibration_fits": 0, **metadata["params"]})
    detector.preprocessor_ = parts.preprocessor
    detector.config_ = VAEConfig(**metadata["config"])
    detector.model_ = TabularVAE(detector.config_)
    # Copies: the arrays safetensors reads are read-only views of the file's bytes.
    weights = {k.removeprefix("model."): torch.from_numpy(np.array(v))
               for k, v in tensors.items() if k.startswith("model.")}
    detector.model_.load_state_dict(weights, strict=True)
    detector.model_.eval()
    detector.calibration_scores_ = parts.calibration_scores
    detector.calibration_tail_ = parts.summary.calibration_tail
    # Files without the record (from before it, or fitted with auto or 0) keep the
    # threshold their held-out scores set at fpr, whatever their contamination.
    detector.share_threshold_ = parts.summary.share_threshold
    detector.summary_ = parts.summary
    detector.draws_ = parts.summary.draws
    detector.training_outliers_ = parts.training_outliers
    detector.metadata_ = metadata
    # Everything the file says is checked now, so that a damaged or hand-edited file
    # fails here with ModelFileError and not later, in the middle of scoring.
    check_params(detector, for_fit=False)
    _check_consistent(parts, metadata["config"])
    return detector


def _check_consistent(parts: ModelParts, config: dict) -> None:
    """Raise ValueError where the parts of a model file do not fit together."""
    layout = parts.preprocessor.layout
    if (layout.n_numeric, layout.n_indicators, list(layout.category_sizes)) != (
            config["n_numeric"], config["n_indicators"], list(config["category_sizes"])):
        raise ValueError("its column descriptions do not match its network's inputs")
    for kind, scores in parts.calibration_scores.items():
        if scores.ndim != 1 or len(scores) == 0 or np.isnan(scores).any():
            raise ValueError(f"its held-out {kind} scores are empty or not numbers")
    summary = parts.summary
    if not (is_int(summary.best_epoch) and 0 <= summary.best_epoch <= len(summary.history)):
        raise ValueError("its training history does not hold its best epoch")
    tail = summary.calibration_tail
    if not (is_real(tail) and 0 <= tail < 0.5):
        raise ValueError(f"its calibration tail share {tail!r} is not between 0 and 0.5")
    if summary.draws not in DRAW_SCHEMES:
        raise ValueError(f"its Monte Carlo draws {summary.draws!r} are not one of "
                         f"{', '.join(DRAW_SCHEMES)}")
    if summary.share_threshold is not None and not _is_share_record(summary.share_threshold):
        raise ValueError("its contamination threshold is not a share with a threshold "
                         "for each score kind")


def _is_share_record(record) -> bool:
    """Whether a training summary's ``share_threshold`` is one fit could have written
    (calibration.share_threshold_record)."""
    try:
        share, rows, thresholds = record["share"], record["rows"], record["thresholds"]
        return (is_real(share) and 0 < share <= MAX_CONTAMINATION_SHARE
                and is_int(rows) and rows >= 1
                and all(is_real(thresholds[kind]) and not math.isnan(thresholds[kind])
                        for kind in SCORE_KINDS))
    except (KeyError, TypeError):
        return False
