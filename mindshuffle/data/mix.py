"""Mixup and cutmix of whole batches, as MindCV's loader applies them, seeded per (seed, rank, epoch)."""
from __future__ import annotations

import copy

import numpy as np

__all__ = ["BatchMix", "batch_mix"]


class BatchMix:
    """MindCV's ``Mixup`` as its ``create_loader`` applies it (whole batches, mixup or cutmix with probability 0.5
    each when both are on, ``cutmix_prob`` of the batches mixed at all, the batch mixed with its mirror image):
    a normalised float32 NCHW batch and int labels -> the mixed batch and float32 [N, num_classes] targets
    ``lam * onehot(y) + (1 - lam) * onehot(y[::-1])``, lam the cut box's area fraction kept for cutmix. Label
    smoothing stays in the loss, as in MindCV's loader. An odd batch (a last partial one) and every batch from
    epoch ``mixup_off_epoch`` on (0-based, timm's meaning; 0 = never off) pass unmixed with one-hot targets.

    The draws are a function of (seed, rank, epoch): each epoch starts its own random state, so a resumed run
    mixes as the uninterrupted one did. A loader of one epoch (``steps_per_epoch`` 0, the host feed) knows its
    epoch. The sink dataset's one pipeline (``steps_per_epoch`` batches per epoch from ``start_epoch``) counts
    batches, including the one MindSpore's shape getter pulls before training, so its epochs start a batch
    late: alike in a resumed run and an uninterrupted one, which is what resuming needs."""

    def __init__(self, cfg, num_classes: int, rank: int = 0, start_epoch: int = 0, steps_per_epoch: int = 0):
        from mindcv.data.mixup import Mixup
        self.num_classes, self.seed, self.rank = num_classes, cfg.seed, rank
        self.off_epoch = cfg.mixup_off_epoch
        self.start_epoch, self.steps_per_epoch, self.calls = start_epoch, steps_per_epoch, 0
        self.rng = None
        self.mixer = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.cutmix_prob, switch_prob=0.5,
                           mode="batch", label_smoothing=0.0, num_classes=num_classes)

    def __deepcopy__(self, memo):
        fresh = copy.copy(self)
        fresh.calls, fresh.rng = 0, None
        return fresh

    def _epoch(self) -> int:
        """The 0-based epoch of the batch being mixed; a new epoch starts its own random state."""
        k = self.calls // self.steps_per_epoch if self.steps_per_epoch else 0
        if self.rng is None or (self.steps_per_epoch and self.calls % self.steps_per_epoch == 0):
            self.rng = np.random.RandomState([self.seed, self.rank, self.start_epoch + k])
        self.calls += 1
        return self.start_epoch + k

    def __call__(self, images, labels):
        from mindcv.data.mixup import mixup_target
        epoch = self._epoch()
        images = np.array(images, np.float32)  # a writable copy: the mixer works in place
        if len(images) % 2 or (self.off_epoch and epoch >= self.off_epoch):
            return images, mixup_target(np.asarray(labels), self.num_classes).astype(np.float32)
        outer = np.random.get_state()  # MindCV's Mixup draws from numpy's global state: lend it ours
        np.random.set_state(self.rng.get_state())
        try:
            return self.mixer(images, np.asarray(labels))
        finally:
            self.rng.set_state(np.random.get_state())
            np.random.set_state(outer)


def batch_mix(cfg, num_classes: int, rank: int = 0, start_epoch: int = 0, steps_per_epoch: int = 0):
    """The recipe's ``BatchMix`` (``num_classes``: when the recipe's is 0, the class folders'), or None."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return BatchMix(cfg, cfg.num_classes or num_classes, rank, start_epoch, steps_per_epoch)
