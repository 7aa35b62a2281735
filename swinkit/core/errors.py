"""swinkit's errors: one hierarchy under ``SwinkitError`` for every failure a user causes and can fix.

Each class also derives from the built-in exception a caller would expect (``ValueError`` for bad input,
``FileExistsError`` for an occupied run directory), so code written against those keeps working.
"""

from __future__ import annotations


class SwinkitError(Exception):
    """A failure the user can fix; the message names the input and the fix. The CLI prints it as one line."""


class ConfigError(SwinkitError, ValueError):
    """A config key that does not exist, a value of the wrong type, or settings that do not go together."""


class UnknownModelError(ConfigError):
    """A model name that is not registered."""


class UnknownArgumentError(ConfigError, TypeError):
    """A constructor override the model does not take."""


class CheckpointError(SwinkitError, ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message says which and how to fix it."""


class DataError(SwinkitError, ValueError):
    """Data that cannot be used: a directory in the wrong layout, too many unreadable images."""


class DataLayoutError(DataError):
    """A data directory that is not in the expected layout; the message says what was found and what is expected."""


class TooManyBadImagesError(DataError):
    """More than ``data.max_bad_fraction`` of the training images could not be read."""


class RunError(SwinkitError):
    """A run directory that cannot be used as asked: taken, locked by another process, finished."""


class RunExistsError(RunError, FileExistsError):
    """The output directory already holds a run and ``--resume`` was not given."""


class RunNotFoundError(RunError, FileNotFoundError):
    """A directory that holds no swinkit run (no checkpoint to resume, no metrics to plot)."""


class RunLockedError(RunError):
    """Another live process is training into the same run directory."""


class RunFinishedError(RunError):
    """``--resume`` of a run that has already trained all its epochs."""


class StorageError(SwinkitError, OSError):
    """A file that could not be written (disk full, no permission); what was there before is kept."""


class MissingExtraError(SwinkitError, ImportError):
    """An optional dependency is not installed; the message names the ``pip install`` that adds it."""


class NonFiniteLossError(SwinkitError, RuntimeError):
    """The loss was NaN or infinite for ``train.max_nonfinite`` consecutive steps (fp32/bf16)."""


class DownloadError(SwinkitError, OSError):
    """Weights that could not be fetched or failed their check (unreachable, offline, truncated, hash mismatch);
    nothing is left in the cache, and the message says where to place the file by hand."""


def shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters: a hostile value (a string of megabytes, a
    list that aliases expand to billions of items) is quoted by its beginning, without being expanded."""
    import reprlib

    short = reprlib.Repr()  # attributes, not keywords: Python 3.10 and 3.11 take none
    short.maxlevel, short.maxlist, short.maxdict, short.maxtuple, short.maxset = 3, 6, 6, 6, 6
    short.maxstring = short.maxother = short.maxlong = limit
    text = short.repr(value)
    return text if len(text) <= limit + 20 else text[:limit] + "..."
