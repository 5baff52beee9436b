"""The kernel library: compiler, flags, a private cache and the SHA-256 it loads by, and the one log line that
says why the accelerator is off.

``library()`` returns the path of ``csrc/*.cc`` compiled into one shared library, or None (and logs the reason
once per process). The build:
- compiler: ``$CXX``, else ``g++``, ``c++`` or ``clang++`` on the PATH;
- flags: ``-O3 -fopenmp-simd -shared -fPIC`` and a portable target named from the CPU (``isa_level``): on x86-64
  ``-march=x86-64-v3`` with AVX2 and FMA, ``x86-64-v2`` with SSE4.2 and POPCNT, else ``x86-64``; ``armv8-a`` on
  aarch64; none elsewhere. ``MINDSHUFFLE_MARCH=native`` (or any other ``-march`` value) picks the target,
  ``MINDSHUFFLE_CXXFLAGS`` replaces all flags. If a named target fails to compile, the build is tried once
  more without ``-march``;
- cache: ``$MINDSHUFFLE_CACHE`` or ``~/.cache/mindshuffle``, in it the folder ``cpu-kernels`` that the
  accelerator creates with mode 0700. A folder there that another user owns, or that group or others may
  open, is refused (the accelerator is then off). Right after a build the library's SHA-256 is recorded beside
  it (``<library>.sha256``, written atomically); a library is loaded only when its bytes hash to that record,
  otherwise it is built again. So a library planted by someone else is never loaded.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import stat
import subprocess

from ...fileio import atomic_path, atomic_text, sha256_file

__all__ = ["library", "off_reason", "log_off", "compiler", "flags", "isa_level", "cache_folder", "SOURCES",
           "HEADERS", "CSRC"]

log = logging.getLogger("mindshuffle")

CSRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc")
SOURCES = [os.path.join(CSRC, n) for n in ("dwconv3x3.cc", "batchnorm.cc", "shuffle.cc", "pool.cc", "infer.cc",
                                           "conv1x1.cc")]
HEADERS = [os.path.join(CSRC, n) for n in ("parallel.h", "simd.h")]
BASE_FLAGS = ["-O3", "-fopenmp-simd", "-shared", "-fPIC"]
FOLDER = "cpu-kernels"

_state: dict = {}      # "lib": the path or None, once tried; "why": the reason it is None
_logged: set = set()   # the off reasons already logged by this process


def log_off(reason: str) -> None:
    """The one line (per process and reason) that says the accelerator is off and why."""
    if reason not in _logged:
        _logged.add(reason)
        log.warning("CPU accelerator off: %s; using MindSpore's kernels", reason)


def compiler() -> str | None:
    return os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


def _cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def isa_level(machine: str | None = None, cpu_flags: set | None = None) -> str | None:
    """A portable ``-march`` value for this CPU (see the module docstring), or None."""
    machine = (machine or platform.machine()).lower()
    have = _cpu_flags() if cpu_flags is None else cpu_flags
    if machine in ("x86_64", "amd64"):
        if {"avx2", "fma", "bmi2", "movbe"} <= have:
            return "x86-64-v3"
        if {"sse4_2", "popcnt", "ssse3"} <= have:
            return "x86-64-v2"
        return "x86-64"
    if machine in ("aarch64", "arm64"):
        return "armv8-a"
    return None


def flags() -> list[list[str]]:
    """The flag sets to try in order: the chosen one, then (for a named target) the same without ``-march``."""
    if os.environ.get("MINDSHUFFLE_CXXFLAGS"):
        return [os.environ["MINDSHUFFLE_CXXFLAGS"].split()]
    march = os.environ.get("MINDSHUFFLE_MARCH") or isa_level()
    if not march:
        return [BASE_FLAGS]
    return [BASE_FLAGS + [f"-march={march}"], BASE_FLAGS]


def cache_folder() -> tuple[str | None, str]:
    """The private build folder (created 0700 if missing) and '', or None and why it is refused."""
    root = os.environ.get("MINDSHUFFLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "mindshuffle")
    path = os.path.join(root, FOLDER)
    try:
        os.makedirs(root, exist_ok=True)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
    except OSError as e:
        return None, f"cannot create the cache folder {path} ({e.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return None, f"the cache folder {path} is not a folder"
    if st.st_uid != os.getuid():
        return None, f"the cache folder {path} belongs to another user (uid {st.st_uid}); set MINDSHUFFLE_CACHE"
    if st.st_mode & 0o077:
        return None, (f"the cache folder {path} is open to others (mode {stat.S_IMODE(st.st_mode):04o}, needs "
                      f"0700); chmod 700 it or remove it")
    return path, ""


def _recorded(target: str) -> bool:
    """Whether ``target`` exists and hashes to the SHA-256 recorded when it was built."""
    try:
        with open(target + ".sha256", encoding="ascii") as f:
            want = f.read().strip()
        return len(want) == 64 and sha256_file(target) == want
    except (OSError, UnicodeDecodeError):
        return False


def _compile(cxx: str, flag_sets: list, target: str) -> str:
    """Compile into ``target`` (atomically) and record its SHA-256; '' on success, else why it failed."""
    why = ""
    for fl in flag_sets:
        try:
            with atomic_path(target, suffix=".so") as tmp:
                proc = subprocess.run([cxx, *fl, "-o", tmp, *SOURCES], capture_output=True, text=True)
                if proc.returncode != 0 or os.path.getsize(tmp) == 0:
                    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
                    raise _BuildFailed(f"the C++ build failed ({cxx} exit {proc.returncode}: "
                                       f"{lines[-1] if lines else 'no output'})")
            atomic_text(target + ".sha256", sha256_file(target) + "\n")
            return ""
        except _BuildFailed as e:
            why = str(e)
        except OSError as e:
            why = f"cannot run the C++ compiler {cxx} ({e.strerror or e})"
    return why


class _BuildFailed(Exception):
    """A compiler run that did not give a library (its message: why)."""


def _tag(cxx: str, flag_sets: list) -> str:
    h = hashlib.sha256()
    for src in SOURCES + HEADERS:
        with open(src, "rb") as f:
            h.update(f.read())
    h.update(repr([cxx, flag_sets, platform.machine()]).encode())
    return h.hexdigest()[:16]


def _find_library() -> tuple[str | None, str]:
    cxx = compiler()
    if not cxx:
        return None, "no C++ compiler found (install g++ or set CXX)"
    if not all(os.path.exists(p) for p in SOURCES + HEADERS):
        return None, f"the kernel sources are missing from {CSRC}"
    folder, why = cache_folder()
    if folder is None:
        return None, why
    flag_sets = flags()
    target = os.path.join(folder, f"kernels-{_tag(cxx, flag_sets)}.so")
    if _recorded(target):
        return target, ""
    why = _compile(cxx, flag_sets, target)
    return (None, why) if why else (target, "")


def off_reason() -> str:
    """'' when the library is there (built now if needed), else why not. Built and checked once per process."""
    if "lib" not in _state:
        _state["lib"], _state["why"] = _find_library()
    return _state["why"]


def library() -> str | None:
    """Path of the compiled, SHA-256-checked kernel library; None (reason logged once) when there is none."""
    why = off_reason()
    if why:
        log_off(why)
    return _state["lib"]
