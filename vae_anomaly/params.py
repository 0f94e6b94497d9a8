"""Checks on a detector's settings and on scoring options, before any work starts.

Every setting a fit or a score would otherwise trip over deep inside (or accept
silently) is refused here with an ``InputError`` naming the CLI option.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING

from .defaults import MAX_SAMPLES, SCORE_KINDS
from .errors import InputError
from .rejection import MAX_CONTAMINATION, MAX_CONTAMINATION_SHARE, parse_contamination

if TYPE_CHECKING:
    import torch

_WHOLE_NUMBERS = ("samples", "seed", "calibration_fits", "epochs", "batch_size", "latent_dim")
_REAL_NUMBERS = ("fpr", "beta", "validation_fraction", "learning_rate")


def check_params(d, for_fit: bool = True) -> None:
    """InputError for a setting of detector ``d`` no fit accepts; then its numbers as
    plain Python ones. A loaded model (``for_fit=False``) is held only to what
    scoring uses, so files written under older, looser rules still load."""
    whole = [name for name in ("samples", "seed") if not is_int(getattr(d, name))]
    if for_fit:
        whole += [name for name in ("calibration_fits",) if not is_int(getattr(d, name))]
        whole += [name for name in ("epochs", "batch_size", "latent_dim") if not
                  (getattr(d, name) is None or is_int(getattr(d, name)))]
    if whole:
        raise InputError(f"{option(whole[0])} must be a whole number "
                         f"(got {getattr(d, whole[0])!r})")
    checks = [
        (is_real(d.fpr) and 0 < d.fpr < 1,  # and not NaN
         f"--fpr must be between 0 and 1 (got {d.fpr})"),
        (1 <= d.samples <= MAX_SAMPLES,
         f"--samples must be between 1 and {MAX_SAMPLES} (got {d.samples})"),
        (0 <= d.seed < 2**63, f"--seed must be between 0 and 2**63 - 1 (got {d.seed})"),
        (d.score_kind in SCORE_KINDS,
         f"--score must be elbo or iwae (got {d.score_kind!r})"),
        (column_names(d.categorical) and column_names(d.exclude),
         f"--categorical and --exclude take column names (got {d.categorical!r} and "
         f"{d.exclude!r})"),
    ]
    if for_fit:
        checks += _fit_checks(d)
    for ok, message in checks:
        if not ok:
            raise InputError(message)
    _as_python_numbers(d)
    if for_fit:  # the CLI passes text: "0.05" is stored as 0.05, "AUTO" as "auto"
        d.contamination = parse_contamination(d.contamination)


def _fit_checks(d) -> list[tuple[bool, str]]:
    return [
        (is_real(d.beta) and math.isfinite(d.beta),
         f"--beta must be a finite number (got {d.beta})"),
        (not is_real(d.beta) or d.beta >= 0,
         f"--beta must be zero or more (got {d.beta})"),
        (d.learning_rate is None or (is_real(d.learning_rate)
                                     and 0 < d.learning_rate < math.inf),
         f"the learning rate must be a finite number above 0 (got {d.learning_rate})"),
        # Most rows must train: at 0.999 a 1,000-row file trained on one row.
        (is_real(d.validation_fraction) and 0 < d.validation_fraction <= 0.5,
         f"the validation fraction must be above 0 and at most 0.5 "
         f"(got {d.validation_fraction})"),
        (d.epochs is None or d.epochs >= 1, "--epochs must be at least 1"),
        (is_contamination(d.contamination),
         f"--contamination must be auto or a share between 0 and {MAX_CONTAMINATION_SHARE} "
         f"(got {d.contamination!r}): the expected share of anomalies in the training "
         f"rows, which the threshold flags; at most {MAX_CONTAMINATION} of the rows also "
         f"leave the gradient"),
        (0 <= d.calibration_fits <= 100,
         f"--calibration-fits must be between 0 and 100 (got {d.calibration_fits})"),
        (d.batch_size is None or d.batch_size >= 1, "--batch-size must be at least 1"),
        (d.latent_dim is None or 1 <= d.latent_dim <= 1024,
         f"--latent-dim must be between 1 and 1024 (got {d.latent_dim})"),
        (d.batch_size is None or d.batch_size <= 1_000_000,
         f"--batch-size must be at most 1000000 (got {d.batch_size})"),
    ]


def _as_python_numbers(detector) -> None:
    """numpy scalars (np.int64(7), np.float32(0.5)) become plain ints and floats,
    which torch's generators and the model file's JSON both need; values stay."""
    for names, kind in ((_WHOLE_NUMBERS, int), (_REAL_NUMBERS, float)):
        for name in names:
            if getattr(detector, name) is not None:
                setattr(detector, name, kind(getattr(detector, name)))


def check_score_options(*, seed=None, samples=None, threshold=None, explain=None,
                        chunk_size=None) -> None:
    """Reject scoring options that would otherwise fail deep inside (or silently)."""
    if chunk_size is not None and not (is_int(chunk_size) and chunk_size >= 1):
        raise InputError(f"--chunk-size must be at least 1 (got {chunk_size})")
    for name, value in (("seed", seed), ("samples", samples), ("explain", explain)):
        if value is not None and not is_int(value):
            raise InputError(f"--{name} must be a whole number (got {value!r})")
    if seed is not None and not 0 <= seed < 2**63:
        raise InputError(f"--seed must be between 0 and 2**63 - 1 (got {seed})")
    if samples is not None and not 1 <= samples <= MAX_SAMPLES:
        raise InputError(f"--samples must be between 1 and {MAX_SAMPLES} (got {samples})")
    if threshold is not None and not (is_real(threshold) and math.isfinite(threshold)):
        raise InputError(f"--threshold must be a finite number (got {threshold!r})")
    if explain is not None and explain < 0:
        raise InputError(f"--explain must be zero or more (got {explain})")


def resolve_device(requested: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an input error."""
    import torch  # here, not above: the parameter checks also serve torch-free `info`

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was requested but no CUDA GPU is available; "
                         "use --device auto or --device cpu")
    if requested not in ("cpu", "cuda"):
        raise InputError(f"unknown device {requested!r}; use auto, cpu or cuda")
    return torch.device(requested)


def names(value) -> list[str]:
    """Column names given as a list, or one name on its own (not its letters)."""
    return [value] if isinstance(value, str) else list(value)


def column_names(value) -> bool:
    """Whether ``value`` is one column name or a collection of them."""
    if isinstance(value, str):
        return True
    try:
        return all(isinstance(name, str) for name in value)
    except TypeError:
        return False


def is_contamination(value) -> bool:
    try:
        parse_contamination(value)
    except (TypeError, ValueError):
        return False
    return True


def is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def option(param: str) -> str:
    return "--" + param.replace("_", "-")
