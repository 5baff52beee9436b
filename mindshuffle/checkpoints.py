"""Checkpoints: atomic save, checked load.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over the target,
so a killed process or a full disk never leaves a half-written file under the real name.
"""
from __future__ import annotations

import dataclasses
import logging
import os

import mindspore as ms
from mindspore import nn

from .convert_names import to_mindshuffle_names
from .errors import CheckpointError
from .fileio import atomic_path
from .meta import IMAGENET_PREPROCESS as DEFAULT_PREPROCESS, META_KEY, CheckpointMeta, normalize_preprocess
from .registry import model_info

__all__ = ["CheckpointError", "CheckpointMeta", "save_checkpoint", "read_checkpoint", "load_model_weights",
           "checkpoint_metadata", "model_metadata", "normalize_preprocess", "set_pool_same", "uses_pool_same",
           "set_authors_shuffle", "uses_authors_shuffle", "DEFAULT_PREPROCESS", "is_weight_name"]

log = logging.getLogger(__name__)


def save_checkpoint(obj, path: str, append_dict: dict | None = None) -> str:
    """Save ``obj`` (a Cell or a list of {"name", "data"}) to ``path`` atomically; returns ``path``.

    A Cell's metadata (model name, class count, pooling, preprocessing, class names: ``model_metadata``) is
    stored with it under ``meta.META_KEY`` unless ``append_dict`` already carries that key.
    """
    if isinstance(obj, nn.Cell):
        append_dict = dict(append_dict or {})
        append_dict.setdefault(META_KEY, model_metadata(obj).to_json())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, suffix=".ckpt") as tmp:
        ms.save_checkpoint(obj, tmp, append_dict=append_dict)
    return path


def read_checkpoint(path: str) -> dict:
    """Parameter dict of a checkpoint file, with clear errors for a missing or damaged file."""
    if not path or not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; check the path (--ckpt_path)")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes); it was not written completely")
    try:
        return ms.load_checkpoint(path)
    except Exception:  # MindSpore raises ValueError/RuntimeError with long texts for damaged files
        raise CheckpointError(f"checkpoint {path!r} cannot be read (truncated, damaged or not a MindSpore "
                              f"checkpoint); use an intact copy (training replaces last.ckpt/best.ckpt only "
                              f"whole)") from None


def _classifier_prefix(net: nn.Cell) -> str:
    name = getattr(net, "model_name", "")
    try:
        return model_info(name).classifier if name else "classifier"
    except KeyError:
        return "classifier"


# ---------------------------------------------------------------------------------------------------------
# metadata stored beside the weights: which model, its pooling, and the preprocessing its weights expect

def _switch(net: nn.Cell, name: str):
    """The model's own switch ``name`` (models/base.py ClassifierNet); ``None`` for a cell without it."""
    method = getattr(net, name, None)
    return method() if callable(method) else None


def uses_pool_same(net: nn.Cell) -> bool:
    """True if ``net`` pools like MindCV (``pad_mode="same"``)."""
    return bool(_switch(net, "uses_pool_same"))


def set_pool_same(net: nn.Cell) -> nn.Cell:
    """Switch ``net`` to MindCV's "same" pooling (``ClassifierNet.set_pool_same``); returns ``net``."""
    _switch(net, "set_pool_same")
    return net


def uses_authors_shuffle(net: nn.Cell) -> bool:
    """True if ``net``'s V1 units shuffle in the authors' (Megvii's, MindCV's) order."""
    return bool(_switch(net, "uses_authors_shuffle"))


def set_authors_shuffle(net: nn.Cell) -> nn.Cell:
    """Make ``net`` shuffle like the authors and MindCV (``ShuffleNetV1.set_authors_shuffle``); returns ``net``."""
    _switch(net, "set_authors_shuffle")
    return net


def model_metadata(net: nn.Cell) -> CheckpointMeta:
    """What a checkpoint of ``net`` records beside the weights: its name, constructor arguments, class count,
    switches, preprocessing and class names, over what the checkpoint it was loaded from said
    (``net.checkpoint_meta``: e.g. where converted weights came from)."""
    if not getattr(net, "model_name", ""):  # a training wrapper: describe the model inside it
        inner = next((c for _, c in net.cells_and_names() if getattr(c, "model_name", "")), None)
        net = inner if inner is not None else net
    loaded = getattr(net, "checkpoint_meta", None)
    loaded = loaded if isinstance(loaded, CheckpointMeta) else CheckpointMeta()
    num_classes = getattr(net, "num_classes", None)
    names = getattr(net, "class_names", None)
    return dataclasses.replace(
        loaded, model=getattr(net, "model_name", "") or "", model_kwargs=getattr(net, "model_kwargs", None) or {},
        num_classes=num_classes, pool_same=uses_pool_same(net),
        v1_shuffle="authors" if uses_authors_shuffle(net) else "",
        preprocess=getattr(net, "preprocess", None) or loaded.preprocess,
        class_names=names if names and (num_classes is None or len(names) == num_classes) else None)


def checkpoint_metadata(ckpt) -> CheckpointMeta:
    """The metadata of a checkpoint (a path or a loaded dict; MindCV's described as such); an empty
    ``CheckpointMeta`` for a checkpoint without any."""
    if isinstance(ckpt, str):
        ckpt = read_checkpoint(ckpt)
    return CheckpointMeta.from_checkpoint(to_mindshuffle_names(ckpt))


def _fmt_shape(v) -> str:
    return "x".join(str(int(d)) for d in v.shape) or "scalar"


def load_model_weights(net: nn.Cell, path: str, strict: bool = True) -> dict:
    """Load ``path`` into ``net`` after checking every parameter's name and shape.

    mindshuffle's and MindCV's ShuffleNet checkpoints are accepted (MindCV's are renamed, and ``net`` is
    switched to MindCV's "same" pooling). A classifier of another size is skipped (fine-tuning to a new
    ``num_classes``) and logged. Any other missing, unexpected or mis-shaped parameter raises
    ``CheckpointError`` listing them. The checkpoint's metadata (preprocessing, class names) is put on
    ``net.checkpoint_meta`` / ``net.preprocess``; a summary on ``net.load_report``. Returns the checkpoint's
    non-parameter entries (epoch, step, ...).
    """
    raw = read_checkpoint(path)
    ckpt = to_mindshuffle_names(raw, net)
    meta = checkpoint_metadata(ckpt)
    own = {p.name: p for p in net.get_parameters()}
    head = _classifier_prefix(net) + "."
    missing = [k for k in own if k not in ckpt]
    shape_bad = [k for k in own if k in ckpt and tuple(ckpt[k].shape) != tuple(own[k].shape)]
    extra = [k for k in ckpt if k not in own and isinstance(ckpt[k], ms.Parameter) and is_weight_name(k)]
    head_bad = [k for k in missing + shape_bad if k.startswith(head)]
    body_bad = [k for k in missing + shape_bad if not k.startswith(head)]
    model = getattr(net, "model_name", type(net).__name__)
    extra_body = [k for k in extra if not k.startswith(head)]
    if strict and (body_bad or extra_body):
        parts = []
        if shape_bad:
            parts.append(f"{len(shape_bad)} of other shape (" + ", ".join(
                f"{k} {_fmt_shape(ckpt[k])} vs model {_fmt_shape(own[k])}" for k in shape_bad[:4])
                         + (", ..." if len(shape_bad) > 4 else "") + ")")
        miss = [k for k in body_bad if k not in shape_bad]
        if miss:
            parts.append(f"{len(miss)} missing from the checkpoint (" + ", ".join(miss[:4])
                         + (", ..." if len(miss) > 4 else "") + ")")
        if extra_body:
            parts.append(f"{len(extra_body)} not in the model (" + ", ".join(extra_body[:4])
                         + (", ..." if len(extra_body) > 4 else "") + ")")
        hint = ""
        if meta.model and meta.model != model:
            hint = f"; the checkpoint was saved from {meta.model!r}: build that model instead"
        elif meta.model_kwargs and meta.model_kwargs != getattr(net, "model_kwargs", {}):
            hint = f"; the checkpoint was saved from {model!r} built with model_kwargs {meta.model_kwargs}"
        else:
            hint = "; check the model name (and width/groups) the checkpoint was trained with"
        raise CheckpointError(f"checkpoint {path!r} does not fit model {model!r}: " + "; ".join(parts) + hint)
    if meta.pool_same and not uses_pool_same(net):
        set_pool_same(net)
        log.info("checkpoint %s was trained with MindCV's 'same' pooling; the model now pools the same way", path)
    if meta.v1_shuffle == "authors" and not uses_authors_shuffle(net):
        set_authors_shuffle(net)
        log.info("checkpoint %s shuffles V1 bottlenecks in the authors' order; the model now does too", path)
    if meta.preprocess:
        net.preprocess = dict(meta.preprocess)
    kept = dataclasses.replace(meta, class_names=None) if head_bad else meta   # the old classes no longer apply
    if head_bad:
        shapes = ", ".join(f"{k} {_fmt_shape(ckpt[k])}" for k in head_bad if k in ckpt)
        log.warning("checkpoint %s: loaded everything but the classifier (%s): the model has %s classes, so "
                    "its classifier stays newly initialised (fine-tuning)", path, shapes or ", ".join(head_bad),
                    getattr(net, "num_classes", "?"))
    elif kept.class_names:
        net.class_names = list(kept.class_names)
    net.checkpoint_meta = kept
    to_load = {k: v for k, v in ckpt.items() if k in own and k not in head_bad}
    ms.load_param_into_net(net, to_load, strict_load=False)
    net.load_report = {"loaded": sorted(to_load), "skipped_classifier": head_bad, "meta": meta,
                       "source_layout": "mindcv" if META_KEY not in raw and META_KEY in ckpt else "mindshuffle"}
    return {k: v for k, v in raw.items() if not isinstance(v, ms.Parameter)}


def is_weight_name(key: str) -> bool:
    """Optimizer state (moments, learning rate, global step) and the trained weights kept beside EMA averages
    (``train.*``, ``ema_updates``) are not model weights."""
    return not (key.startswith(("moments.", "accum.", "train.", "ema_updates", "learning_rate", "global_step", "momentum",
                                "adam_", "beta1_power", "beta2_power", "scale_sense", "current_iterator_step",
                                "last_overflow_iterator_step", "epoch_num", "step_num"))
                or key in ("moments", ))
