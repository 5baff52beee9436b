"""Per-step learning-rate tables.

A table holds one value per training step of the whole run, so the position in the schedule is just the
optimizer's global step: a resumed run restores that step and continues on the same curve (MindCV 0.3.0's
resume rebuilds a shorter table and starts its decay again).

- ``linear_decay``: the paper's schedule, lr falls linearly from its peak to ``min_lr`` at the last step.
- ``cosine_decay``: half a cosine from the peak to ``min_lr``.
- ``constant``.
All three start with ``warmup_epochs`` of linear warm-up from ``lr * warmup_factor``.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["lr_table", "SCHEDULERS"]

SCHEDULERS = ("linear_decay", "cosine_decay", "constant")


def lr_table(scheduler: str, lr: float, steps_per_epoch: int, epochs: int, min_lr: float = 0.0,
             warmup_epochs: int = 0, warmup_factor: float = 0.0, decay_epochs: int = 0) -> np.ndarray:
    """float32 array of ``steps_per_epoch * epochs`` learning rates, one per step.

    ``decay_epochs`` (0 = all epochs after warm-up) is how long the decay lasts; steps after it stay at
    ``min_lr``.
    """
    if scheduler not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if steps_per_epoch < 1 or epochs < 1:
        raise ValueError(f"need at least one step and one epoch, got {steps_per_epoch} steps x {epochs} epochs")
    if min_lr > lr:
        raise ValueError(f"min_lr {min_lr} exceeds lr {lr}")
    total = steps_per_epoch * epochs
    warm = min(warmup_epochs * steps_per_epoch, total)
    decay = (decay_epochs * steps_per_epoch) if decay_epochs else total - warm
    out = np.empty(total, np.float64)
    for s in range(total):
        if s < warm:
            out[s] = lr * (warmup_factor + (1.0 - warmup_factor) * s / warm)
            continue
        t = min(s - warm, decay)
        frac = t / decay if decay > 0 else 1.0
        if scheduler == "linear_decay":
            out[s] = min_lr + (lr - min_lr) * (1.0 - frac)
        elif scheduler == "cosine_decay":
            out[s] = min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * frac))
        else:
            out[s] = lr
    return out.astype(np.float32)
