"""The package version, in a module of its own: the package's ``__init__`` imports
the detector, so modules that record or compare the version (detector, cli,
distributed) import it from here rather than from the package."""

__version__ = "0.1.0"
