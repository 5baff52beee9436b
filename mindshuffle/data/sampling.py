"""Which samples a rank sees in an epoch: one permutation per (seed, epoch), interleaved disjoint shards per
rank, optionally each sample repeated (repeated augmentation); ``_EpochOrder`` serves it epoch after epoch to
one long-lived pipeline (dataset sink mode)."""
from __future__ import annotations

import copy

import numpy as np

__all__ = ["epoch_indices"]


def epoch_indices(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                  pad: bool = True, repeats: int = 1) -> np.ndarray:
    """Sample indices rank ``rank`` of ``world`` sees in ``epoch``.

    All ranks draw the same permutation from (seed, epoch) and take every ``world``-th entry from ``rank`` on,
    so shards are disjoint. With ``pad`` the permutation is wrapped to a multiple of ``world`` (equal step
    counts on every rank, as data parallelism needs); without it (validation) shards may differ by one.
    ``repeats`` r > 1 (repeated augmentation, MindCV's ``RepeatAugSampler``): each entry of the permutation is
    written r times in a row before the wrap and the split, so consecutive copies go to different ranks and the
    shards together hold every image r times (plus the wrap); callers keep each rank's usual epoch length.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if repeats > 1:
        order = np.repeat(order, repeats)
        n = len(order)
    if pad and n % world:
        extra = world - n % world
        order = np.concatenate([order, order[:extra]])
    return order[rank::world]


class _EpochOrder:
    """A sampler (any iterable will do for ``GeneratorDataset``) whose k-th pass yields the file indices of
    epoch ``start_epoch + k`` for one rank, as ``epoch_indices`` draws them, cut to ``per_epoch``. MindSpore
    iterates it while constructing the dataset and deep-copies it into every pipeline it builds (getters such as
    ``output_shapes``, iterators, the device queue); a copy starts again at ``start_epoch``."""

    def __init__(self, n: int, seed: int, rank: int, world: int, shuffle: bool, per_epoch: int,
                 start_epoch: int, repeats: int = 1):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.repeats = repeats
        self.per_epoch, self.start_epoch, self.passes = per_epoch, start_epoch, 0

    def __deepcopy__(self, memo):
        fresh = copy.copy(self)
        fresh.passes = 0
        return fresh

    def __iter__(self):
        epoch = self.start_epoch + self.passes
        self.passes += 1
        idx = epoch_indices(self.n, epoch, self.seed, self.rank, self.world, self.shuffle,
                            repeats=self.repeats)[:self.per_epoch]
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.per_epoch
