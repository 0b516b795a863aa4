"""Exceptions with messages meant for users.

The CLI prints ``str(error)`` as one line and exits non-zero; nothing derived from :class:`HimariError`
is ever shown as a traceback.
"""

from __future__ import annotations


class HimariError(Exception):
    """Base class for errors whose message is fit to show a user as is."""

    exit_code = 2


class DataError(HimariError):
    """Input data is unusable. The message names the file, the row and the problem."""

    def __init__(self, message: str, path: str | None = None, row: int | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}: "
            if row is not None:
                where = f"{path}: row {row}: "
        super().__init__(where + message)
        self.path = path
        self.row = row


class ConfigError(HimariError):
    """A configuration is invalid (unknown field, out-of-range value, inconsistent settings)."""


class LeakageError(HimariError):
    """An operation would let information from after a cut-off reach a fit or a decision before it."""


class RunDirError(HimariError):
    """A run directory is missing, incomplete or inconsistent with what is asked of it."""
