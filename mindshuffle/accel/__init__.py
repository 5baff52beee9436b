"""Accelerators: backend-specific fast versions of the plain models, applied by an explicit rewrite after the model
is built (as torchvision's quantized ShuffleNet V2 lives beside its float model). Layers and models never import
from here; export never uses it.

``accelerate(net, "train" | "infer")`` swaps ``net``'s cells in place to the CPU accelerator's subclasses
(``accel/cpu``) and returns ``net``; ``"infer"`` first folds BatchNorm into the convs (``layers.fuse_model``) and
puts ``net`` in eval mode. The accelerated network computes what the plain one computes (tests/test_accel.py),
faster on CPU. When the accelerator cannot be used (the device target is not CPU, ``MINDSHUFFLE_NATIVE=0``, no
C++ compiler, the build failed, the cache folder is not private) ``net`` is returned unchanged and one log line
per process and reason says why. ``status()`` tells whether it is on. ``default(net, mode, enabled)`` is what
the training engine, validation, inference and the Predictor call: on a CPU target when ``enabled`` (the
recipe key ``accelerate``), silently nothing elsewhere. ``plain(net)`` undoes the rewrite.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import mindspore as ms
from mindspore import nn

from ..layers import fuse_model
from .cpu import build
from .cpu.rewrite import swap_in, swap_out

__all__ = ["accelerate", "status", "default", "plain", "Status", "MODES"]

MODES = ("train", "infer")


class Status(NamedTuple):
    on: bool
    reason: str  # why it is off ('' when on)


def _off_reason() -> str:
    if os.environ.get("MINDSHUFFLE_NATIVE", "1") == "0":
        return "switched off by MINDSHUFFLE_NATIVE=0"
    target = ms.get_context("device_target")
    if target != "CPU":
        return f"the device target is {target}, not CPU"
    return build.off_reason()


def status() -> Status:
    """Whether the CPU accelerator is on (its library built and checked; built now if needed), else why not."""
    why = _off_reason()
    return Status(not why, why)


def accelerate(net: nn.Cell, mode: str) -> nn.Cell:
    """Run ``net`` on the CPU kernels: ``mode="train"`` (training and eval, BatchNorm as it is) or ``"infer"``
    (eval mode, BatchNorm folded first). Returns ``net``, rewritten in place, or unchanged (one log line says
    why) when the accelerator is off."""
    if mode not in MODES:
        raise ValueError(f"accelerate mode must be one of {MODES}, got {mode!r}")
    why = _off_reason()
    if why:
        build.log_off(why)
        return net
    if mode == "infer":
        fuse_model(net)
    return swap_in(net, build.library())


def default(net: nn.Cell, mode: str, enabled: bool = True) -> nn.Cell:
    """The default of the engine, validate, infer and the Predictor: ``accelerate(net, mode)`` on a CPU target
    when ``enabled``; ``net`` as it is on other targets (no log line) or when not enabled."""
    if enabled and ms.get_context("device_target") == "CPU":
        return accelerate(net, mode)
    return net


def plain(net: nn.Cell) -> nn.Cell:
    """Undo ``accelerate``: the plain cells again (BatchNorm stays folded if it was). Returns ``net``."""
    return swap_out(net)
