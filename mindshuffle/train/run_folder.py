"""The run folder (``ckpt_save_dir``): its files, its single writer, atomic saves, and the checks made before
any work.

Files, written by rank 0 unless noted::

    recipe.yaml        the resolved recipe (every key, after CLI overrides)
    train.log          the log (rank r > 0 writes train_rank<r>.log)
    classes.json       class folders / wnids and readable names, in label order
    metrics.csv        one row per finished epoch (runfiles.METRICS_COLUMNS), rewritten atomically each epoch
    steps.csv          step, epoch, lr, loss of every training step (rank 0), appended each epoch
    last.ckpt          weights + optimizer state after the last epoch, the run state ("mindshuffle_state":
                       epoch, step, best_top1, world, batch_size, ...); with EMA the averaged weights under the
                       model's names and the trained ones as train.<name>
    best.ckpt          weights of the epoch with the best val top-1, and its evaluation (best_*.csv/npy)
    epoch_<N>.ckpt     with keep_checkpoint_max k > 1: the k latest (ckpt_save_policy latest_k) or k best by val
                       top-1 (top_k) epochs' weights, as best.ckpt holds them (saver.py)
    checkpoints.json   the kept epoch_<N>.ckpt set and its policy, read back on --resume
    train_confusion.npy, report.md, report/   at the end
    summary.json       the MindCV-style summary, written last: its presence marks a finished run
    samples/, ranks/   with log_sample_ids: the indices each rank saw, other ranks' final weights
    .lock              held (flock) by the live run's rank 0: one writer per folder; the OS releases it when
                       the process ends, however it ends
    .rank<r>.pid       process id of rank r (distributed runs), for naming a rank that died
    .tmp-*             a file being written; one left by a killed process is removed at the next start

A multi-node job needs this folder on storage every node sees (NFS, a parallel file system): each rank reads
``last.ckpt`` on resume, and the ranks check that they all read the same one.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil

from ..errors import RunFolderError
from ..fileio import TMP_PREFIX, atomic_json, atomic_text
from ..runfiles import KEPT_FILE, epoch_checkpoints

__all__ = ["RunFolder"]

log = logging.getLogger("mindshuffle")

_CLEARED = ("metrics.csv", "steps.csv", "summary.json", "last.ckpt", "best.ckpt", "train.log", "report.md",
            "train_confusion.npy", KEPT_FILE)


class RunFolder:
    """Paths and policy of one run folder, as seen by rank ``rank``."""

    def __init__(self, path: str, rank: int = 0):
        self.path = os.path.abspath(path)
        self.rank = rank
        self._lock_fd = None

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    @property
    def last(self) -> str:
        return self.file("last.ckpt")

    @property
    def best(self) -> str:
        return self.file("best.ckpt")

    # -- before any work ------------------------------------------------------------------------------------

    def check_usable(self) -> None:
        """A folder that is a file, lies under a file, or cannot be written fails here, before any work."""
        probe = self.path
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        if not os.path.isdir(probe):
            what = "is a file" if probe == self.path else f"lies under the file {probe!r}"
            raise RunFolderError(f"run folder {self.path!r} {what}; choose another --ckpt_save_dir")
        if not os.access(probe, os.W_OK | os.X_OK):
            raise RunFolderError(f"run folder {self.path!r} cannot be written ({probe!r} is read-only for this "
                                 f"user); choose another --ckpt_save_dir or fix its permissions")

    def check_start(self, resume: bool, overwrite: bool) -> None:
        """What the folder holds must fit the command: resume needs last.ckpt; a new run needs an empty folder
        (or ``overwrite``)."""
        if resume:
            if not os.path.isfile(self.last):
                raise RunFolderError(f"cannot resume: {self.last!r} does not exist (no finished epoch in "
                                     f"{self.path!r})")
            return
        finished = os.path.isfile(self.file("summary.json"))
        if (finished or os.path.isfile(self.last)) and not overwrite:
            what = "a finished run" if finished else "an unfinished run"
            raise RunFolderError(f"run folder {self.path!r} holds {what}; use --resume {self.path} to continue "
                                 f"it, --ckpt_save_dir NEW_FOLDER, or --overwrite True to replace it")

    def lock(self) -> None:
        """Become the folder's only writer (rank 0), or fail naming the live run's process. Takes the lock on
        an existing folder without writing anything; creates the folder only when it is absent."""
        if self._lock_fd is not None:
            return
        os.makedirs(self.path, exist_ok=True)
        fd = os.open(self.file(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.read(fd, 64).decode(errors="replace").strip()
            os.close(fd)
            who = f"pid {holder}" if holder else "still setting up"
            raise RunFolderError(f"run folder {self.path!r} is being written by another live run ({who}); "
                                 f"wait for it to end or choose another --ckpt_save_dir") from None
        self._lock_fd = fd

    def lock_if_present(self) -> None:
        """Lock an existing folder at once (a live run there refuses this one before any work); a new folder is
        locked when the run begins to write (``lock``), so a refused command leaves no folder behind."""
        if os.path.isdir(self.path):
            self.lock()

    def record_owner(self) -> None:
        """Write this process's id into the held lock file (named by a refused second run)."""
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, str(os.getpid()).encode(), 0)

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def clear(self) -> None:
        """Remove a previous run's files (``overwrite``), after the lock is held."""
        for name in _CLEARED:
            if os.path.isfile(self.file(name)):
                os.remove(self.file(name))
        for path in epoch_checkpoints(self.path).values():
            os.remove(path)
        for sub in ("samples", "ranks", "report"):
            shutil.rmtree(self.file(sub), ignore_errors=True)

    def sweep(self) -> list:
        """Remove temporary files a killed process left (ours, ``.tmp-*``, and MindSpore's checkpoint writer's
        ``.tmp-*.tmp``): never read, since only a rename publishes a file."""
        stale = sorted(f for f in os.listdir(self.path) if f.startswith(TMP_PREFIX))
        for f in stale:
            os.remove(self.file(f))
        return stale

    # -- during the run ---------------------------------------------------------------------------------------

    def write_json(self, name: str, obj) -> str:
        return atomic_json(self.file(name), obj)

    def write_text(self, name: str, text: str) -> str:
        os.makedirs(os.path.dirname(self.file(name)), exist_ok=True)
        return atomic_text(self.file(name), text)

    def save_failed(self, epoch: int, saved_epoch: int, err: OSError) -> RunFolderError:
        """The one-line error for a save that failed (full disk, lost mount): the renames never happened."""
        kept = f"last.ckpt (epoch {saved_epoch}) is intact" if saved_epoch else "no epoch was saved yet"
        return RunFolderError(f"cannot save epoch {epoch} in {self.path!r}: {err.strerror or err} "
                              f"({err.filename or 'write failed'}); {kept}; free space (or fix the folder) and "
                              f"continue with --resume {self.path}")

    def read_json(self, name: str) -> dict:
        with open(self.file(name), encoding="utf-8") as f:
            return json.load(f)
