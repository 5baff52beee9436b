"""``pretrained=True``: the checkpoint file a model's published weights are loaded from.

Order: a file placed by hand at ``<cache>/checkpoints/<model>.ckpt`` (always wins); else the weights table's entry
(``weights_table.weights_for``), fetched through ``hub`` (cached, checked, atomic). PyTorch files (torchvision's)
are converted once with ``converters.convert_file`` and the converted ``*_mindshuffle.ckpt`` is cached beside them.
"""
from __future__ import annotations

import os

from . import hub
from .errors import CheckpointError
from .weights_table import WEIGHTS, Weights, weights_for

__all__ = ["hand_placed_path", "pretrained_checkpoint", "converted_path", "checkpoint_or_pretrained"]


def hand_placed_path(model: str) -> str:
    """Where a checkpoint put there by hand is found: ``<cache>/checkpoints/<model>.ckpt``."""
    return os.path.join(hub.checkpoints_dir(), f"{model}.ckpt")


def converted_path(w: Weights) -> str:
    """The cached mindshuffle checkpoint converted from a PyTorch weights file."""
    return os.path.join(hub.checkpoints_dir(), os.path.splitext(w.file_name)[0] + "_mindshuffle.ckpt")


# checkpoints (MindSpore) and converters (torch) are imported where a file is read or converted, so that
# `import mindshuffle` (registry imports this module) stays as light as before, like registry's own loader import

def _readable(path: str) -> None:
    """A downloaded MindSpore checkpoint must at least be readable (MindCV publishes no hash)."""
    from .checkpoints import read_checkpoint
    read_checkpoint(path)


def _choose(model: str, choice) -> Weights:
    w = weights_for(model, choice)
    if w is not None:
        return w
    tags = [x.tag for x in WEIGHTS.get(model, [])]
    if tags:
        raise CheckpointError(f"model {model!r} has no pretrained weights {choice!r}; choose one of "
                              f"{', '.join(map(repr, tags))} (pretrained=True takes {tags[0]!r})")
    have = ", ".join(sorted(WEIGHTS))
    raise CheckpointError(f"no published pretrained weights for {model!r} (models with weights: {have}); put a "
                          f"checkpoint at {hand_placed_path(model)} or pass checkpoint_path=")


def pretrained_checkpoint(model: str, choice=True, progress: bool = True) -> str:
    """Path of a mindshuffle-loadable checkpoint with ``model``'s pretrained weights, downloading (and for
    PyTorch files converting) on first use. ``choice``: ``True`` (the default weights) or a tag from the
    weights table (``"mindcv"``, ``"mindcv-910v2"``, ``"torchvision"``)."""
    own = hand_placed_path(model)
    if choice is True and os.path.isfile(own):
        return own
    w = _choose(model, choice)
    if w.file_format == "torch":
        done = converted_path(w)
        if os.path.isfile(done):
            return done
    path = hub.fetch(w.url, w.file_name, w.expected_hash, progress=progress,
                     validate=_readable if w.file_format == "mindspore" else None)
    if w.file_format == "torch":
        from .converters import convert_file
        convert_file(path, done, source="torchvision", model=w.model, preprocess=w.preprocess)
        return done
    return path


def checkpoint_or_pretrained(ckpt_path: str, model: str | None, pretrained) -> str:
    """What a tool loads: ``ckpt_path`` when given, else with ``pretrained`` (``--pretrained``) the published
    weights of ``model`` (downloaded once, then cached), else ``""``."""
    if ckpt_path or not pretrained:
        return ckpt_path
    if not model:
        raise CheckpointError("--pretrained needs --model NAME (python tools/models.py --weights lists the models "
                              "with published weights)")
    return pretrained_checkpoint(model, pretrained)
