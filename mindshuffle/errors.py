"""The errors mindshuffle raises for things a user can fix. Every one derives from ``MindshuffleError``; the
command-line tools turn it into one line on stderr and exit code 2. ``WorkerFailedError`` is not a user error
(a rank died): the tools exit 1 with its line."""
from __future__ import annotations

__all__ = ["MindshuffleError", "RecipeError", "DataError", "CheckpointError", "RunFolderError", "OutputExistsError",
           "WorkerFailedError"]


class MindshuffleError(ValueError):
    """Root of the user-facing errors (a ValueError, as each of them was before)."""


class RecipeError(MindshuffleError):
    """A recipe that cannot be used: unknown key, bad value, unreadable file."""


class DataError(MindshuffleError):
    """A dataset that cannot be used: missing folder, no classes, empty class, unreadable image."""


class CheckpointError(MindshuffleError):
    """A checkpoint that cannot be used: missing, unreadable, or of another model."""


class RunFolderError(MindshuffleError):
    """The run folder cannot be used as asked: a finished run without overwrite, a resume without last.ckpt, a
    folder another run is writing, a read-only folder, a save that failed (e.g. on a full disk)."""


class OutputExistsError(MindshuffleError):
    """A result file a tool would write exists already (e.g. the committed bench/results) and replacing it
    was not asked for."""


class WorkerFailedError(RuntimeError):
    """A rank of a distributed job died (killed, crashed, out of memory); the message names it."""
