"""Exception types raised by the library.

The library never prints or exits; the CLI maps each exception to a one-line
``Error: ...`` message and the documented exit code (``exit_code``).
"""

from __future__ import annotations


class VAEAnomalyError(Exception):
    """Base class for every error the library raises on purpose."""

    exit_code = 2


class InputError(VAEAnomalyError, ValueError):
    """The data file is missing, unreadable or does not match the model. Also a
    ValueError, as scikit-learn expects of bad input."""


class ModelFileError(VAEAnomalyError):
    """The model file is missing, corrupt, foreign or from a newer version."""


class TrainingError(VAEAnomalyError):
    """Training could not produce a usable model (e.g. the loss diverged)."""


class OutputError(VAEAnomalyError):
    """The output destination cannot be written."""
