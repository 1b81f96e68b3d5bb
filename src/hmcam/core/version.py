"""The package version, in one place: pyproject.toml reads it here; run records and checkpoints cite it."""

__version__ = "0.1.0"
