"""The loaders: a file list's images through MindSpore's C++ pipeline, batched: one pass over given indices
(``build_loader``), or every remaining training epoch in one dataset for dataset sink mode
(``build_train_dataset``)."""
from __future__ import annotations

import mindspore.dataset as ds
import numpy as np

from .files import FileList
from .mix import batch_mix
from .sampling import _EpochOrder
from .source import _Source

__all__ = ["build_loader", "build_train_dataset"]


def _set_error_mode(strict: bool) -> None:
    """MindSpore's error-samples mode (process-wide, read while the pipeline runs): with ``strict_data`` a
    sample the decoder refuses stops the iterator (RETURN); without, the pipeline puts another row in its place
    (REPLACE) and ``_Source.labels_of`` names the file."""
    mode = ds.config.ErrorSamplesMode.RETURN if strict else ds.config.ErrorSamplesMode.REPLACE
    if ds.config.get_error_samples_mode() != mode:
        ds.config.set_error_samples_mode(mode)


def _pipeline(cfg, source: _Source, transforms: list, batch_size: int, drop_remainder: bool, sampler=None,
              mix=None):
    """Reader (one Python thread that only reads and checks bytes) -> ``transforms`` in MindSpore's C++
    operations on ``num_parallel_workers`` threads -> batches -> keys to labels (-> ``mix``: a ``BatchMix``)."""
    _set_error_mode(cfg.strict_data)
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"], num_parallel_workers=1,
                                  **({"sampler": sampler} if sampler is not None else {"shuffle": False}))
    dataset = dataset.map(operations=list(transforms), input_columns="image",
                          num_parallel_workers=cfg.num_parallel_workers)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(operations=source.labels_of, input_columns="label", num_parallel_workers=1)
    if mix is not None:
        dataset = dataset.map(operations=mix, input_columns=["image", "label"], num_parallel_workers=1)
    return dataset


def build_loader(cfg, files: FileList, indices: np.ndarray, transforms: list, is_training: bool,
                 batch_size: int | None = None, epoch: int = 0, rank: int = 0):
    """A batched MindSpore dataset of (image, label) over ``files[indices]`` in that order, for one pass (training:
    of ``epoch``, 0-based, on ``rank``, which seed its batch mixing). Returns (dataset, source); after the
    iterator raises, ``source.first_error`` names the file to blame."""
    source = _Source(files, indices, cfg.strict_data)
    dataset = _pipeline(cfg, source, transforms, batch_size or cfg.batch_size,
                        bool(cfg.drop_remainder and is_training),
                        mix=batch_mix(cfg, len(files.classes), rank, epoch) if is_training else None)
    return dataset, source


def build_train_dataset(cfg, files: FileList, transforms: list, rank: int, world: int, steps: int,
                        start_epoch: int):
    """One batched dataset of (image, label) for every training epoch from ``start_epoch`` (0-based) on, for
    dataset sink mode (``mindspore.data_sink`` sends one dataset to the device queue once). Its k-th pass
    yields the batches of epoch ``start_epoch + k``: ``epoch_indices(len(files), start_epoch + k, cfg.seed,
    rank, world, cfg.shuffle)[:steps * cfg.batch_size]``. Returns (dataset, source).

    The augmentation's random state runs on from one epoch to the next inside the one pipeline, so unlike
    ``build_loader`` (seeded per epoch by the caller) a resumed run sees the same samples per epoch but not
    the same random crops as an uninterrupted one. An unreadable image is replaced by the next readable one in
    file order (``build_loader``: the next in the epoch's order)."""
    source = _Source(files, np.arange(len(files)), cfg.strict_data)
    order = _EpochOrder(len(files), cfg.seed, rank, world, cfg.shuffle, steps * cfg.batch_size, start_epoch,
                        cfg.aug_repeats)
    dataset = _pipeline(cfg, source, transforms, cfg.batch_size, bool(cfg.drop_remainder), sampler=order,
                        mix=batch_mix(cfg, len(files.classes), rank, start_epoch, steps))
    return dataset, source
