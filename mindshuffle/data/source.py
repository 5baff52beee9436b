"""The pipeline's reader: file bytes in an epoch's order, unreadable images skipped (or fatal with
``strict_data``) and named, also those only MindSpore's C++ decoder refuses."""
from __future__ import annotations

import collections
import logging
import threading

import numpy as np

from ..errors import DataError
from .checks import _decode_problem, _read
from .files import FileList

log = logging.getLogger("mindshuffle.data")  # one logger for the whole data package, as before the split


_TRACKED = 16384  # rows the source remembers between reading them and seeing them leave the pipeline


class _Source:
    """Random-access source for ``GeneratorDataset``: (encoded image bytes, key) for position ``k`` of
    ``indices``. The key is ``serial * len(files) + file index`` (``serial`` counts the rows read); the
    pipeline's last step, ``labels_of``, turns a batch of keys into labels.

    An unreadable image is skipped (the next readable one takes its place, so the epoch keeps its length) and
    named once in the log, or with ``strict`` stops the run with its name (``first_error``). "Unreadable" is
    decided twice: by the cheap checks when the file is read, and, for the rare file that passes them but fails
    in the C++ decoder, by MindSpore's error-samples mode (non-strict: the pipeline replaces the row; strict: it
    raises) together with the keys: a row read but never seen leaving the pipeline is decoded again here, once,
    to name it.
    """

    _warned: set = set()
    _lock = threading.Lock()

    def __init__(self, files: FileList, indices: np.ndarray, strict: bool):
        self.files = files
        self.indices = np.asarray(indices)
        self.strict = strict
        self._error: str | None = None
        self._bad: set = set()             # file indices found undecodable; skipped from then on
        self._state = threading.Lock()
        self._serial = 0
        self._read_rows = collections.deque(maxlen=_TRACKED)  # (serial, file index), in reading order
        self._last_out = -1                # highest serial seen leaving the pipeline
        self._missed = collections.deque(maxlen=_TRACKED)     # serials passed over on the way out
        self._searched = False
        self._unexplained = 0              # rows put in place of refused ones, not yet matched to a file

    def __len__(self) -> int:
        return len(self.indices)

    def __deepcopy__(self, memo):
        return self  # every pipeline MindSpore builds from a dataset (getters, iterators) shares one source

    def __getitem__(self, k: int):
        n = len(self.indices)
        for j in range(n):
            i = int(self.indices[(k + j) % n])
            if i in self._bad:
                continue
            raw, err = _read(self.files.paths[i])
            if raw is not None:
                with self._state:
                    serial = self._serial
                    self._serial += 1
                    self._read_rows.append((serial, i))
                return np.frombuffer(raw, np.uint8), np.array(serial * len(self.files) + i, np.int64)
            self._refuse(i, err)
        raise DataError(f"no readable image among the {n} of this shard (first: {self.files.paths[0]!r})")

    def _refuse(self, i: int, err: str) -> None:
        """Stops (strict) or names the file once and remembers it as bad."""
        path = self.files.paths[i]
        msg = f"unreadable image {path!r} ({err})"
        if self.strict:
            self._error = self._error or msg
            raise DataError(msg + "; remove or replace it, or set strict_data: False to skip it")
        self._bad.add(i)
        with self._lock:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("%s: skipped (strict_data: False)", msg)

    def labels_of(self, keys: np.ndarray) -> np.ndarray:
        """The pipeline's last map, once per batch: keys -> int32 labels. A key older than one already seen is a
        row the pipeline put in place of one its decoder refused (MindSpore's REPLACE mode): find and name that."""
        keys = np.asarray(keys, np.int64)
        n = len(self.files)
        repeats = 0
        with self._state:
            for s in (keys // n).tolist():
                if s > self._last_out:
                    self._missed.extend(range(self._last_out + 1, s))
                    self._last_out = s
                else:
                    repeats += 1
            self._unexplained += repeats
        if repeats and self._unexplained > 0:
            found = self._undecodable(first_only=False)
            for i, err in found:
                self._refuse(i, err)
            self._unexplained -= len(found)  # may go below 0: files found before their stand-ins came out
            if self._unexplained > 0:
                self._unexplained = 0
                log.warning("MindSpore's decoder refused an image and the pipeline used another in its place; "
                            "PIL decodes every candidate, so the file cannot be named")
        return self.files.labels[keys % n].astype(np.int32)

    def _undecodable(self, first_only: bool) -> list:
        """(file index, problem) of the rows read but not seen leaving the pipeline that fail to decode: first
        those passed over, then (if none of those) the ones still on their way."""
        with self._state:
            missed = set(self._missed)
            self._missed.clear()
            passed = [i for s, i in self._read_rows if s in missed]
            ahead = [i for s, i in self._read_rows if s > self._last_out]
        found = []
        for rows in (passed, ahead):
            for i in dict.fromkeys(rows):
                if i in self._bad:
                    continue
                raw, err = _read(self.files.paths[i])
                err = err or _decode_problem(raw)
                if err:
                    found.append((i, err))
                    if first_only:
                        return found
            if found:
                break
        return found

    @property
    def first_error(self) -> str | None:
        """Why the pipeline stopped, naming the file: set when the reader refused a file in strict mode; else,
        asked after the iterator raised, searched once among the rows that never left the pipeline."""
        if self._error is None and not self._searched:
            self._searched = True
            found = self._undecodable(first_only=True)
            if found:
                i, err = found[0]
                self._error = f"unreadable image {self.files.paths[i]!r} ({err})"
        return self._error
