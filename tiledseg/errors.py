"""The one exception family of tiledseg.

Every error a user can cause derives from :class:`TiledsegError`, itself a
``ValueError``, so callers can catch one class. Messages name the value that is
wrong and say how to fix it; the command line prints them as one line and exits
with status 2.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BlockSizeError",
    "BlocksFailedError",
    "ClusterConfigError",
    "DamagedChunkError",
    "InputDataError",
    "MissingExtraError",
    "ModelFileError",
    "OutputExistsError",
    "TiledsegError",
]


class TiledsegError(ValueError):
    """Base class of every error caused by the user's input or settings."""


class InputDataError(TiledsegError):
    """An image, label or truth array that cannot be used as given."""


class DamagedChunkError(InputDataError):
    """A stored chunk of an input array that cannot be read (damaged or truncated)."""


class BlockSizeError(TiledsegError):
    """A processing block that is not positive or too small for the halo."""


class ModelFileError(TiledsegError):
    """A model file that is missing, truncated, tampered with or not a tiledseg model."""


class OutputExistsError(TiledsegError):
    """An output that exists already and may not be overwritten."""


class MissingExtraError(TiledsegError):
    """An option that needs an optional dependency (an extra) that is not installed."""


class ClusterConfigError(TiledsegError):
    """A cluster configuration file (``--cluster FILE``) that cannot be used as written."""


class BlocksFailedError(TiledsegError):
    """Some blocks failed; the others were written and the run may be resumed.

    The message is a report with one line per failed block. The command line
    exits with :attr:`exit_code` (1: the run failed, not its input options).
    """

    exit_code = 1

    def __init__(self, message: str, failures: list[Any]):
        super().__init__(message)
        #: The :class:`~tiledseg.runs.BlockFailure` of each failed block.
        self.failures = failures
