"""The run's log: stdout (rank 0; warnings only on other ranks) from the start, and the run folder's
train.log once the run may write there. Lines logged before that are kept and written first."""
from __future__ import annotations

import logging
import logging.handlers
import sys

__all__ = ["start_logging", "attach_file_log"]

log = logging.getLogger("mindshuffle")
_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")


def _reset() -> None:
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def start_logging(rank: int = 0) -> None:
    """stdout, and a buffer of the lines until ``attach_file_log``."""
    _reset()
    log.setLevel(logging.INFO)
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(_FORMAT)
    sh.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.addHandler(sh)
    log.addHandler(logging.handlers.MemoryHandler(capacity=10 ** 6, flushLevel=logging.CRITICAL + 1))
    log.propagate = False


def attach_file_log(folder) -> None:
    """train.log (train_rank<r>.log for rank r > 0) in the run folder, starting with the buffered lines."""
    name = "train.log" if folder.rank == 0 else f"train_rank{folder.rank}.log"
    fh = logging.FileHandler(folder.file(name))
    fh.setFormatter(_FORMAT)
    for h in list(log.handlers):
        if isinstance(h, logging.handlers.MemoryHandler):
            h.setTarget(fh)
            h.flush()
            log.removeHandler(h)
            h.close()
    log.addHandler(fh)

