"""The data of a run: the splits, their statistics and transforms, the steps per epoch, and the batches of
each epoch (a per-epoch loader for the host feed; one dataset for every remaining epoch in sink mode)."""
from __future__ import annotations

import logging
import math

import numpy as np

from ..data.files import FileList, scan
from ..data.loader import build_loader, build_train_dataset
from ..data.sampling import epoch_indices
from ..data.stats import resolve_stats
from ..data.transforms import input_transforms
from ..errors import DataError

__all__ = ["TrainInputs", "seed_augmentation"]

log = logging.getLogger("mindshuffle")


def seed_augmentation(seed: int, rank: int, epoch: int) -> int:
    """Seed the random augmentation of ``epoch`` (0-based) on ``rank``: MindSpore's data ops and the global
    Python and numpy states that MindCV's auto-augment policies draw from (alike after a resume; with several
    pipeline workers their draws interleave). Each rank its own seed; rank 0's is ``seed * 1000 + epoch``."""
    import random
    import mindspore.dataset as ds
    value = (seed * 1000 + epoch + 100_003 * rank) % 2 ** 32
    ds.config.set_seed(value)
    random.seed(value)
    np.random.seed(value)
    return value


class TrainInputs:
    """Scanned once per run; ``steps`` is the steps per epoch of each of the ``world`` ranks."""

    def __init__(self, cfg, world: int):
        self.cfg = cfg
        self.train = self._subset(cfg, scan(cfg.dataset, cfg.data_dir, cfg.train_split))
        self.val = scan(cfg.dataset, cfg.data_dir, cfg.val_split, classes=self.train.classes) \
            if cfg.val_while_train else None
        self.num_classes = cfg.num_classes or len(self.train.classes)
        if self.num_classes < len(self.train.classes):
            raise DataError(f"num_classes {self.num_classes} is less than the {len(self.train.classes)} class "
                            f"folders in {self.train.root!r}; set num_classes: 0 to use the folder count")
        per_rank = math.ceil(len(self.train) / world)
        self.steps = per_rank // cfg.batch_size if cfg.drop_remainder else math.ceil(per_rank / cfg.batch_size)
        if self.steps < 1:
            raise DataError(f"batch_size {cfg.batch_size} is larger than the {per_rank} training images each of "
                            f"{world} card(s) sees; lower batch_size or set drop_remainder: False")
        self.per_rank = per_rank
        self.mean = self.std = None
        self.train_tf = self.val_tf = self.prep = None
        self.dataset = None

    @staticmethod
    def _subset(cfg, files):
        if not cfg.num_samples or cfg.num_samples >= len(files):
            return files
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(files))[:cfg.num_samples])
        return FileList([files.paths[i] for i in keep], files.labels[keep], files.classes, files.names,
                        files.root)

    def prepare(self, cache_dir: str | None) -> None:
        """Mean/std (``auto`` computes and caches them) and the transforms; ``prep`` is the cell the compiled
        step applies first when normalisation happens on the device (None: the pipeline normalised)."""
        cfg = self.cfg
        self.mean, self.std = resolve_stats(cfg, self.train, cache_dir=cache_dir)
        self.train_tf, self.prep = input_transforms(cfg, self.mean, self.std, is_training=True)
        self.val_tf, _ = input_transforms(cfg, self.mean, self.std, is_training=False)
        log.info("data: %d train images (%d per card), %s val images, %d classes, %d steps/epoch; mean %s std %s; "
                 "normalised on the %s", len(self.train), self.per_rank, len(self.val) if self.val else "no",
                 self.num_classes, self.steps, [round(x, 2) for x in self.mean], [round(x, 2) for x in self.std],
                 "host" if self.prep is None else "device")

    def indices(self, epoch: int, rank: int, world: int) -> np.ndarray:
        """The training samples rank ``rank`` sees in ``epoch`` (1-based), as the loader will read them."""
        cfg = self.cfg
        idx = epoch_indices(len(self.train), epoch - 1, cfg.seed, rank, world, shuffle=cfg.shuffle,
                            repeats=cfg.aug_repeats)
        return idx[:self.steps * cfg.batch_size] if cfg.drop_remainder else idx[:self.per_rank]

    def epoch_loader(self, epoch: int, run) -> tuple:
        """(loader, source) for the host feed; (None, source) in sink mode, where one dataset serves all."""
        if run.plan.sink:
            return None, self.sink_source
        seed_augmentation(self.cfg.seed, run.plan.rank, epoch - 1)
        idx = self.indices(epoch, run.plan.rank, run.plan.world)
        if self.cfg.log_sample_ids:
            run.folder.write_text(f"samples/rank{run.plan.rank}_epoch{epoch}.txt",
                                  "\n".join(map(str, idx.tolist())) + "\n")
        return build_loader(self.cfg, self.train, idx, self.train_tf, is_training=True, epoch=epoch - 1,
                            rank=run.plan.rank)

    def sink_dataset(self, rank: int, world: int, start_epoch: int):
        """One dataset for every epoch from ``start_epoch`` (0-based count of finished epochs) on."""
        seed_augmentation(self.cfg.seed, rank, start_epoch)
        dataset, self.sink_source = build_train_dataset(self.cfg, self.train, self.train_tf, rank, world,
                                                        self.steps, start_epoch)
        return dataset
