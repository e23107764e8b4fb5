"""The package version (read by hatchling and by ``certauth --version``)."""

__version__ = "0.1.0"
