"""Errors that reach the user as one line: what went wrong, where, and how to fix it."""

__all__ = ["BenchError", "CheckpointError", "DataError", "PresetError", "RegistryError", "NonFiniteError"]


class BenchError(Exception):
    """Base class: `bench.cli.main` prints the message on one line and exits non-zero."""


class CheckpointError(BenchError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the architecture."""


class DataError(BenchError):
    """A dataset folder that is missing, empty, or not in the expected layout."""


class PresetError(BenchError):
    """An unknown preset, an unknown key, or a value of the wrong type."""


class RegistryError(BenchError):
    """A name registered twice, or asked for but never registered."""


class NonFiniteError(BenchError):
    """A NaN/inf loss or feature: numbers computed from it would be meaningless."""
