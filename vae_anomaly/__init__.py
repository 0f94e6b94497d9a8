"""vae-anomaly: flag anomalous records in tabular data with a Variational Autoencoder.

Example:
    >>> from vae_anomaly import VAEAnomalyDetector, load
"""

from ._version import __version__
from .detector import VAEAnomalyDetector
from .errors import (
    InputError,
    ModelFileError,
    OutputError,
    TrainingError,
    VAEAnomalyError,
)
from .loading import load

__all__ = ["VAEAnomalyDetector", "load", "VAEAnomalyError", "InputError", "ModelFileError",
           "OutputError", "TrainingError", "__version__"]
