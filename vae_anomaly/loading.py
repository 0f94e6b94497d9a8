"""``load`` and ``loads``: a ``VAEAnomalyDetector`` rebuilt from a model file.

Everything the file says is checked on load, so that a damaged or hand-edited
file fails here with ``ModelFileError`` and not later, in the middle of scoring.
Loading never executes code from the file (artifact.py reads it).
"""

from __future__ import annotations

import numpy as np
import torch

from .artifact import model_from_bytes, read_model
from .detector import VAEAnomalyDetector
from .errors import InputError, ModelFileError
from .fitting import FitSummary, TrainingOutliers
from .model import TabularVAE, VAEConfig
from .params import check_params, is_int
from .preprocessing import Preprocessor
from .scoring import SCORE_KINDS


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
    check_params(detector, for_fit=False)
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
    if not (is_int(summary.best_epoch) and 0 <= summary.best_epoch <= len(summary.history)):
        raise ValueError("its training history does not hold its best epoch")
