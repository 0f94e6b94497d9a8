"""vae-anomaly: flag anomalous records in tabular data with a Variational Autoencoder.

Example:
    >>> from vae_anomaly import VAEAnomalyDetector, load
"""

from ._version import __version__
from .errors import (
    InputError,
    ModelFileError,
    OutputError,
    TrainingError,
    VAEAnomalyError,
)

__all__ = ["VAEAnomalyDetector", "load", "VAEAnomalyError", "InputError", "ModelFileError",
           "OutputError", "TrainingError", "__version__"]

# The estimator and `load` need torch and scikit-learn, which take seconds to import:
# they load on first use (PEP 562), so that `vae-anomaly --help` and `info` answer at once.
_LAZY = {"VAEAnomalyDetector": "estimator", "load": "loading"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
