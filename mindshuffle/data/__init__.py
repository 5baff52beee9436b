"""Datasets, channel statistics and loaders.

Layouts read as they come (nothing is copied or reorganised):

- ``folder`` / ``imagenet``: ``data_dir/<split>/<class>/<image>`` (one folder per class; images may sit in
  sub-folders of a class folder).
- ``tiny_imagenet``: Tiny ImageNet's own layout: ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``, classes from ``wnids.txt``, readable names
  from ``words.txt``.
- ``digits``: scikit-learn's 1,797 handwritten digits written once as a class-folder dataset of PNGs
  (``prepare_digits``) with a fixed, stratified train/val split, then read as ``folder``.

Each split becomes a ``FileList`` (paths, labels, class names). ``build_loader`` turns the part of it one rank
sees in one epoch into a batched MindSpore dataset: the order is a permutation drawn from (seed, epoch), the
ranks take interleaved, disjoint shards of it, the transforms are MindCV's (``create_transforms``) and run in
MindSpore's C++ operations on ``num_parallel_workers`` threads; the only Python per image is the reader, which
reads the file's bytes and checks their structure (no decoding). ``build_train_dataset`` is the same pipeline
serving every remaining epoch at once (dataset sink mode). ``input_transforms`` moves the normalisation into
the compiled step (``ImagePrep``) where the recipe allows it. MindCV's ``create_dataset`` is not used: it
cannot read Tiny ImageNet's val layout, does not tell which files a rank saw, and stops at the first
unreadable image.

One concern a file: ``files`` (the layouts -> ``FileList``, ``scan``), ``digits`` (``prepare_digits``), ``stats``
(mean/std), ``checks`` (the cheap byte checks of JPEG, PNG, ...), ``sampling`` (``epoch_indices``), ``source``
(the pipeline's reader), ``transforms``, ``mix`` (mixup/cutmix), ``loader`` (the pipelines). Every name of
``__all__`` is importable from here (``from mindshuffle.data import build_loader``); the package's own modules
import from the file that defines a name.
"""
from __future__ import annotations

from ..errors import DataError
from ..meta import IMAGE_EXTENSIONS
from .digits import prepare_digits
from .files import FileList, default_data_dir, scan
from .loader import build_loader, build_train_dataset
from .mix import BatchMix, batch_mix
from .sampling import epoch_indices
from .stats import IMAGENET_MEAN, IMAGENET_STD, channel_stats, resolve_stats
from .transforms import ImagePrep, build_transforms, input_transforms

__all__ = ["DataError", "FileList", "scan", "prepare_digits", "channel_stats", "resolve_stats",
           "epoch_indices", "build_transforms", "input_transforms", "ImagePrep", "build_loader",
           "build_train_dataset", "BatchMix", "batch_mix", "IMAGE_EXTENSIONS"]
