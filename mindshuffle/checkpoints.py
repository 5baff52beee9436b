"""Checkpoints: atomic save, checked load.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over the target,
so a killed process or a full disk never leaves a half-written file under the real name.
"""
from __future__ import annotations

import json
import logging
import os

import mindspore as ms
from mindspore import nn

from .convert_names import to_mindshuffle_names
from .errors import CheckpointError
from .fileio import atomic_path
from .meta import IMAGENET_PREPROCESS as DEFAULT_PREPROCESS, META_KEY, normalize_preprocess
from .registry import model_info

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "load_model_weights", "checkpoint_metadata",
           "checkpoint_preprocess", "model_metadata", "normalize_preprocess", "set_pool_same", "uses_pool_same",
           "set_authors_shuffle", "uses_authors_shuffle", "rebuild_kwargs", "DEFAULT_PREPROCESS",
           "is_weight_name"]

log = logging.getLogger(__name__)


def save_checkpoint(obj, path: str, append_dict: dict | None = None) -> str:
    """Save ``obj`` (a Cell or a list of {"name", "data"}) to ``path`` atomically; returns ``path``.

    A Cell's metadata (model name, class count, pooling, preprocessing, class names: ``model_metadata``) is
    stored with it under ``meta.META_KEY`` unless ``append_dict`` already carries that key.
    """
    if isinstance(obj, nn.Cell):
        append_dict = dict(append_dict or {})
        append_dict.setdefault(META_KEY, json.dumps(model_metadata(obj)))
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


def model_metadata(net: nn.Cell) -> dict:
    """What a checkpoint of ``net`` records beside the weights (see ``checkpoint_metadata``)."""
    if not getattr(net, "model_name", ""):  # a training wrapper: describe the model inside it
        inner = next((c for _, c in net.cells_and_names() if getattr(c, "model_name", "")), None)
        net = inner if inner is not None else net
    meta = dict(getattr(net, "checkpoint_meta", None) or {})
    meta.pop("class_names", None)
    if getattr(net, "model_name", ""):
        meta["model"] = net.model_name
    meta.pop("model_kwargs", None)
    if getattr(net, "model_kwargs", None):
        meta["model_kwargs"] = dict(net.model_kwargs)
    if getattr(net, "num_classes", None) is not None:
        meta["num_classes"] = int(net.num_classes)
    meta["pool_same"] = uses_pool_same(net)
    if uses_authors_shuffle(net):
        meta["v1_shuffle"] = "authors"
    else:
        meta.pop("v1_shuffle", None)
    if getattr(net, "preprocess", None):
        meta["preprocess"] = normalize_preprocess(net.preprocess)
    names = getattr(net, "class_names", None)
    if names and len(names) == meta.get("num_classes", len(names)):
        meta["class_names"] = [str(n) for n in names]
    return meta


def checkpoint_metadata(ckpt) -> dict:
    """The metadata of a checkpoint (a path or a loaded dict): ``model``, ``model_kwargs``, ``num_classes``,
    ``pool_same``, ``preprocess``, ``class_names``, ``source`` where known; ``{}`` for a checkpoint without any."""
    if isinstance(ckpt, str):
        ckpt = read_checkpoint(ckpt)
    ckpt = to_mindshuffle_names(ckpt)
    raw = ckpt.get(META_KEY)
    meta = {}
    if isinstance(raw, str):
        try:
            meta = json.loads(raw)
        except ValueError:
            meta = {}
    meta = meta if isinstance(meta, dict) else {}
    state = ckpt.get("mindshuffle_state")  # the training engine's run state: model, classes, mean/std
    if isinstance(state, str) and not meta:
        try:
            state = json.loads(state)
        except ValueError:
            state = {}
        for key in ("model", "num_classes", "model_kwargs"):
            if state.get(key) is not None:
                meta[key] = state[key]
        if state.get("mean") and state.get("std"):
            meta["preprocess"] = {"channel_order": "RGB", "mean": state["mean"], "std": state["std"]}
            if state.get("image_resize"):
                meta["preprocess"]["input_size"] = int(state["image_resize"])
    return meta


def rebuild_kwargs(meta: dict, model: str, kwargs: dict) -> dict:
    """Constructor arguments that rebuild the variant a checkpoint was saved from: the ``model_kwargs`` it records
    (when it was saved from ``model``), overridden by ``kwargs``."""
    return {**(meta.get("model_kwargs") or {} if meta.get("model") == model else {}), **kwargs}


def checkpoint_preprocess(ckpt) -> dict:
    """The preprocessing a checkpoint's weights expect (``normalize_preprocess`` of its metadata)."""
    return normalize_preprocess(checkpoint_metadata(ckpt).get("preprocess"))


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
        if meta.get("model") and meta["model"] != model:
            hint = f"; the checkpoint was saved from {meta['model']!r}: build that model instead"
        elif meta.get("model_kwargs") and meta["model_kwargs"] != getattr(net, "model_kwargs", {}):
            hint = f"; the checkpoint was saved from {model!r} built with model_kwargs {meta['model_kwargs']}"
        else:
            hint = "; check the model name (and width/groups) the checkpoint was trained with"
        raise CheckpointError(f"checkpoint {path!r} does not fit model {model!r}: " + "; ".join(parts) + hint)
    if meta.get("pool_same") and not uses_pool_same(net):
        set_pool_same(net)
        log.info("checkpoint %s was trained with MindCV's 'same' pooling; the model now pools the same way", path)
    if meta.get("v1_shuffle") == "authors" and not uses_authors_shuffle(net):
        set_authors_shuffle(net)
        log.info("checkpoint %s shuffles V1 bottlenecks in the authors' order; the model now does too", path)
    if meta.get("preprocess"):
        net.preprocess = normalize_preprocess(meta["preprocess"])
    kept = {k: v for k, v in meta.items() if k not in ("model", "num_classes", "model_kwargs")}
    if head_bad:
        kept.pop("class_names", None)   # the old classes no longer apply
        shapes = ", ".join(f"{k} {_fmt_shape(ckpt[k])}" for k in head_bad if k in ckpt)
        log.warning("checkpoint %s: loaded everything but the classifier (%s): the model has %s classes, so "
                    "its classifier stays newly initialised (fine-tuning)", path, shapes or ", ".join(head_bad),
                    getattr(net, "num_classes", "?"))
    elif kept.get("class_names"):
        net.class_names = list(kept["class_names"])
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
