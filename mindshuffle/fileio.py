"""Files written whole or not at all: one atomic writer (temporary file in the same folder, flush, fsync,
rename, clean up on failure), with text, JSON and numpy helpers on top, and a Markdown table helper."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from typing import Callable, Sequence

import numpy as np

from .errors import OutputExistsError

__all__ = ["atomic_path", "atomic_write", "atomic_text", "atomic_json", "atomic_npy", "markdown_table", "TMP_PREFIX",
           "refuse_existing", "sha256_file"]

TMP_PREFIX = ".tmp-"  # every temporary file starts with this; a run folder sweeps the ones a killed process left


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = ""):
    """Yield a temporary path beside ``path`` for a writer that wants a file name (MindSpore's checkpoint
    writer); on success the file is made durable and renamed to ``path``, on any failure it is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:  # read access is enough to fsync (MindSpore leaves its files 0400)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # ours, and the one MindSpore's checkpoint writer makes beside it (<stem>.tmp, renamed to <stem>.ckpt
        # when complete): a save cut short (Ctrl-C, a full disk) leaves neither
        for leftover in (tmp, os.path.splitext(tmp)[0] + ".tmp"):
            if os.path.exists(leftover):
                os.remove(leftover)
        raise


def atomic_write(path: str, write: Callable, binary: bool = False, suffix: str = "") -> str:
    """Call ``write(f)`` on a temporary file beside ``path``, make it durable, then rename it to ``path``.

    A crash, a full disk or Ctrl-C leaves either the old file or the new one under ``path``, never a mix;
    the temporary file is removed on any failure.
    """
    with atomic_path(path, suffix) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
    return path


def atomic_text(path: str, text: str) -> str:
    return atomic_write(path, lambda f: f.write(text))


def atomic_json(path: str, obj) -> str:
    return atomic_text(path, json.dumps(obj, indent=1))


def atomic_npy(path: str, array) -> str:
    return atomic_write(path, lambda f: np.save(f, array), binary=True, suffix=".npy")


def refuse_existing(paths: Sequence[str], hint: str = "pass --overwrite to replace it, or another --out-dir") -> None:
    """OutputExistsError naming the first of ``paths`` that exists (and ``hint``, how to go on): for tools
    whose outputs are results someone may keep (benchmarks), checked before the work starts."""
    existing = [p for p in paths if os.path.lexists(p)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise OutputExistsError(f"{existing[0]} exists already{more}; {hint}")


def markdown_table(header: Sequence, rows: Sequence[Sequence], align: str = "") -> str:
    """A Markdown table; ``None`` cells print as ``-``, a ``|`` in a cell is escaped. ``align``: one letter per
    column, ``l`` (the default for columns it leaves out) or ``r`` (right-aligned, for numbers)."""
    def cell(v):
        return "-" if v is None else str(v).replace("|", "\\|")
    rules = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")[:len(header)]]
    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(map(cell, r)) + " |" for r in rows]
    return "\n".join(lines)


def sha256_file(path: str) -> str:
    """The SHA-256 of a file's bytes, as hex (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
