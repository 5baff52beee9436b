"""Native CPU kernels for the layers where MindSpore's own CPU kernels are slowest.

MindSpore 2.7.1 runs a 3x3 depthwise convolution on CPU about as slowly as a dense one with C times the
work (forward and both gradients); it is ~30% of a ShuffleNet V2 training step. ``depthwise3x3`` returns an
``ops.Custom`` (AOT) operator with its gradient, built from ``csrc/dwconv3x3.cc`` with the system C++ compiler
the first time it is needed and cached (``$MINDSHUFFLE_CACHE`` or ``~/.cache/mindshuffle``). When there is no
compiler, the target is not CPU, or ``MINDSHUFFLE_NATIVE=0``, it returns ``None`` and callers keep
``nn.Conv2d``; both compute the same (tests/test_speed_paths.py).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings

import mindspore as ms
from mindspore import ops

__all__ = ["depthwise3x3", "native_enabled"]

_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "dwconv3x3.cc")
_FLAGS = os.environ.get("MINDSHUFFLE_CXXFLAGS", "-O3 -march=native -fopenmp-simd -shared -fPIC").split()
_LIB: list = []  # [path or None] once tried
_OPS: dict = {}


def native_enabled() -> bool:
    """True when the native kernels may be used: CPU target and not switched off by MINDSHUFFLE_NATIVE=0."""
    if os.environ.get("MINDSHUFFLE_NATIVE", "1") == "0":
        return False
    return ms.get_context("device_target") == "CPU"


def _cpu_signature() -> bytes:
    """The CPU model and instruction-set flags (Linux), or the machine name elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            keep = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(keep))).encode()
    except OSError:
        import platform
        return (platform.machine() + platform.processor()).encode()


def _library() -> str | None:
    """Path of the compiled kernel library, compiling it on first use; None when that is impossible."""
    if _LIB:
        return _LIB[0]
    path = None
    try:
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if cxx and os.path.exists(_SRC):
            with open(_SRC, "rb") as f:
                # -march=native: a library built on one CPU may not run on another (a home folder shared
                # across cluster nodes), so the CPU's model and feature flags are part of the cache key
                tag = hashlib.sha1(f.read() + " ".join([cxx] + _FLAGS).encode() + _cpu_signature()).hexdigest()[:12]
            cache = os.environ.get("MINDSHUFFLE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                         "mindshuffle")
            os.makedirs(cache, exist_ok=True)
            target = os.path.join(cache, f"dwconv3x3-{tag}.so")
            if not os.path.exists(target):
                fd, tmp = tempfile.mkstemp(dir=cache, suffix=".so")
                os.close(fd)
                proc = subprocess.run([cxx, *_FLAGS, "-o", tmp, _SRC], capture_output=True, text=True)
                if proc.returncode:
                    os.unlink(tmp)
                    raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr else "compiler failed")
                os.replace(tmp, target)
            path = target
    except (OSError, RuntimeError) as exc:
        warnings.warn(f"mindshuffle: native depthwise kernel unavailable ({exc}); using nn.Conv2d")
        path = None
    _LIB.append(path)
    return path


def depthwise3x3(stride: int, bias: bool = False):
    """``op(x, weight)``: 3x3 depthwise conv, padding 1, NCHW float32, weight (C, 1, 3, 3), with its gradient;
    ``bias=True``: ``op(x, weight, bias)`` for inference (no gradient). None if unavailable."""
    if stride not in (1, 2) or not native_enabled():
        return None
    if (stride, bias) in _OPS:
        return _OPS[(stride, bias)]
    lib = _library()
    if lib is None:
        return None
    s = f"s{stride}"
    if bias:
        op = ops.Custom(f"{lib}:dw3x3_{s}_fwd_bias", out_dtype=lambda x, w, b: x, func_type="aot",
                        out_shape=lambda x, w, b: (x[0], x[1], (x[2] - 1) // stride + 1, (x[3] - 1) // stride + 1))
        _OPS[(stride, bias)] = op
        return op

    def out_shape(x, w):
        return (x[0], x[1], (x[2] - 1) // stride + 1, (x[3] - 1) // stride + 1)

    grad_x = ops.Custom(f"{lib}:dw3x3_{s}_bwd_x", out_shape=lambda dy, w, x: x, out_dtype=lambda dy, w, x: x,
                        func_type="aot")
    grad_w = ops.Custom(f"{lib}:dw3x3_{s}_bwd_w", out_shape=lambda dy, x: (x[1], 1, 3, 3),
                        out_dtype=lambda dy, x: x, func_type="aot")

    def bprop(x, w, out, dout):
        return grad_x(dout, w, x), grad_w(dout, x)

    op = ops.Custom(f"{lib}:dw3x3_{s}_fwd", out_shape=out_shape, out_dtype=lambda x, w: x, func_type="aot",
                    bprop=bprop)
    _OPS[(stride, bias)] = op
    return op
