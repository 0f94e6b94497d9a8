"""vae-anomaly: flag anomalous records in tabular data with a Variational Autoencoder.

Example:
    >>> from vae_anomaly import VAEAnomalyDetector, load
"""

__version__ = "0.1.0"

from .detector import VAEAnomalyDetector, load  # noqa: E402
from .errors import (  # noqa: E402
    InputError,
    ModelFileError,
    OutputError,
    TrainingError,
    VAEAnomalyError,
)

__all__ = ["VAEAnomalyDetector", "load", "VAEAnomalyError", "InputError", "ModelFileError",
           "OutputError", "TrainingError", "__version__"]
