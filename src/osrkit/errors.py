"""Errors that osrkit raises for problems a user can fix.

Every ``OsrkitError`` carries a one-line message that names the problem and what
to do about it; the CLI prints that line instead of a traceback.
"""

from __future__ import annotations


class OsrkitError(Exception):
    """Base class: a problem with the user's input, data or options."""


class DataError(OsrkitError):
    """A dataset or image is missing, corrupt or of the wrong shape."""


class ChecksumError(DataError):
    """A file's checksum does not match the expected one."""


class ConfigError(OsrkitError):
    """An option or configuration value is invalid."""


class OutputExistsError(OsrkitError):
    """The output folder already holds a run."""


class ModelFormatError(OsrkitError):
    """A model folder is missing files or is not an osrkit model."""
