"""Download, verify and cache weight files (standard library only; a tqdm bar while downloading).

- The cache: ``$MINDSHUFFLE_HOME/checkpoints``, else ``$XDG_CACHE_HOME/mindshuffle/checkpoints``, else
  ``~/.cache/mindshuffle/checkpoints``. A file already there is used without any network access.
- Atomic: the bytes go to a temporary file in the cache folder, are checked, made durable and only then renamed
  to the final name (``fileio.atomic_path``); an interrupted or rejected download leaves nothing under it.
- Checked: against the publisher's SHA-256 (or the prefix its file name carries, as ``torch.hub`` checks it) and
  the announced length; a mismatch deletes the file and says so.
- Mirrors: ``MINDSHUFFLE_WEIGHTS_MIRROR=https://mirror.example.cn/some/prefix`` replaces the scheme and host of
  every weights URL (the path is kept), for clusters that reach the publishers' hosts only through a mirror.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from typing import Callable
from urllib.parse import urlparse

from tqdm import tqdm

from .errors import CheckpointError
from .fileio import atomic_path, sha256_file

__all__ = ["DownloadError", "HashMismatchError", "home_dir", "checkpoints_dir", "mirrored",
           "check_file", "download", "fetch", "ENV_HOME", "ENV_MIRROR"]

ENV_HOME = "MINDSHUFFLE_HOME"
ENV_MIRROR = "MINDSHUFFLE_WEIGHTS_MIRROR"
_CHUNK = 1 << 16
_USER_AGENT = "Mozilla/5.0 (compatible; mindshuffle weights download)"


class DownloadError(CheckpointError):
    """A weights file that could not be downloaded (no network, HTTP error, interrupted transfer)."""


class HashMismatchError(CheckpointError):
    """A weights file whose bytes are not the publisher's (corrupted, truncated or replaced); it was deleted."""


def home_dir() -> str:
    """``$MINDSHUFFLE_HOME``, else ``$XDG_CACHE_HOME/mindshuffle``, else ``~/.cache/mindshuffle``."""
    if os.environ.get(ENV_HOME):
        return os.path.expanduser(os.environ[ENV_HOME])
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "mindshuffle")


def checkpoints_dir() -> str:
    return os.path.join(home_dir(), "checkpoints")


def mirrored(url: str) -> str:
    """``url`` with its scheme and host replaced by ``$MINDSHUFFLE_WEIGHTS_MIRROR`` (when set)."""
    base = os.environ.get(ENV_MIRROR, "").strip().rstrip("/")
    if not base:
        return url
    parts = urlparse(url)
    return base + parts.path + (f"?{parts.query}" if parts.query else "")


def _hash_problem(digest: str, expected: str) -> str:
    """Empty if ``digest`` is the expected SHA-256 (a full hash, or a prefix as torch.hub checks it)."""
    expected = expected.lower()
    if not expected or digest.startswith(expected):
        return ""
    return f"its SHA-256 {digest[:16]}... does not {'equal' if len(expected) == 64 else 'start with'} the " \
           f"publisher's {expected}"


def check_file(path: str, expected_hash: str = "", url: str = "") -> None:
    """Check a cached file against the publisher's hash; a mismatch deletes it and raises ``HashMismatchError``."""
    problem = _hash_problem(sha256_file(path), expected_hash) if expected_hash else ""
    if problem:
        os.remove(path)
        raise HashMismatchError(f"cached weights {path} are not the published file {url or ''} ({problem}); the "
                                f"file was deleted: run again to download it afresh")


def _no_network(url: str, dst: str, why: str) -> DownloadError:
    return DownloadError(f"cannot download {url} ({why}); without network access, put that file by hand at {dst} "
                         f"(or set {ENV_MIRROR} to a mirror)")


def _stream(response, f, url: str, progress: bool) -> str:
    """Copy the body of ``response`` into ``f``; returns its SHA-256. Checks the announced length."""
    total = response.length  # Content-Length, or None
    h = hashlib.sha256()
    got = 0
    name = os.path.basename(urlparse(url).path)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=not progress,
              file=sys.stderr) as bar:
        while True:
            chunk = response.read(_CHUNK)
            if not chunk:
                break
            f.write(chunk)
            h.update(chunk)
            got += len(chunk)
            bar.update(len(chunk))
    if total is not None and got != total:
        raise http.client.IncompleteRead(b"", total - got)
    return h.hexdigest()


def download(url: str, dst: str, expected_hash: str = "", progress: bool = True,
             validate: Callable[[str], None] | None = None, timeout: float = 60.0) -> str:
    """Download ``url`` (through the mirror, if set) to ``dst`` atomically; returns ``dst``.

    The file gets its final name only after its length and ``expected_hash`` (full SHA-256 or a prefix) match and
    ``validate(tmp_path)`` (e.g. "MindSpore can read it") did not raise. Otherwise nothing is left under ``dst``
    and ``DownloadError`` (network, interrupted) or ``HashMismatchError`` (other bytes) says what happened.
    """
    src = mirrored(url)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    request = urllib.request.Request(src, headers={"User-Agent": _USER_AGENT})
    try:
        with atomic_path(dst, suffix=os.path.splitext(dst)[1]) as tmp:
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as f:
                digest = _stream(response, f, src, progress)
            problem = _hash_problem(digest, expected_hash)
            if problem:
                raise HashMismatchError(f"downloaded {src} but {problem}: the file is corrupted, truncated or "
                                        f"not the published one, and was deleted (nothing kept at {dst})")
            if validate is not None:
                validate(tmp)
    except urllib.error.HTTPError as e:
        raise _no_network(src, dst, f"HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise _no_network(src, dst, str(getattr(e, "reason", e))) from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise DownloadError(f"download of {src} was interrupted ({type(e).__name__}); nothing was kept at {dst}: "
                            f"run again (or put the file there by hand)") from None
    return dst


def fetch(url: str, file_name: str = "", expected_hash: str = "", progress: bool = True,
          validate: Callable[[str], None] | None = None) -> str:
    """The cached copy of ``url`` in ``checkpoints_dir()`` (checked against ``expected_hash``), downloaded first
    if it is not there. A cached file is used offline: no network access at all."""
    dst = os.path.join(checkpoints_dir(), file_name or os.path.basename(urlparse(url).path))
    if os.path.isfile(dst):
        check_file(dst, expected_hash, url)
        return dst
    return download(url, dst, expected_hash, progress=progress, validate=validate)
