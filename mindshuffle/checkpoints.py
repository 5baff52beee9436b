"""Checkpoints: atomic save, checked load.

A checkpoint is written to a temporary file in the same folder, flushed to disk, then renamed over the target,
so a killed process or a full disk never leaves a half-written file under the real name.
"""
from __future__ import annotations

import logging
import os
import tempfile

import mindspore as ms
from mindspore import nn

__all__ = ["CheckpointError", "save_checkpoint", "read_checkpoint", "load_model_weights"]

log = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, or of another model."""


def save_checkpoint(obj, path: str, append_dict: dict | None = None) -> str:
    """Save ``obj`` (a Cell or a list of {"name", "data"}) to ``path`` atomically; returns ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=folder)
    os.close(fd)
    try:
        ms.save_checkpoint(obj, tmp, append_dict=append_dict)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_checkpoint(path: str) -> dict:
    """Parameter dict of a checkpoint file, with clear errors for a missing or damaged file."""
    if not path or not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes); it was not written completely")
    try:
        return ms.load_checkpoint(path)
    except Exception as e:  # MindSpore raises ValueError/RuntimeError with long texts for damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path!r} cannot be read (truncated or not a MindSpore "
                              f"checkpoint): {first}") from None


def _classifier_prefix(net: nn.Cell) -> str:
    from .registry import model_info
    name = getattr(net, "model_name", "")
    try:
        return model_info(name).classifier if name else "classifier"
    except KeyError:
        return "classifier"


def load_model_weights(net: nn.Cell, path: str, strict: bool = True) -> dict:
    """Load ``path`` into ``net`` after checking every parameter's name and shape.

    A classifier of another size is skipped (fine-tuning to a new ``num_classes``) and logged. Any other
    missing, unexpected or mis-shaped parameter raises ``CheckpointError`` listing them. Returns the
    checkpoint's non-parameter entries (epoch, step, ...).
    """
    raw = read_checkpoint(path)
    from .convert_names import to_mindshuffle_names  # MindCV or other naming -> ours
    ckpt = to_mindshuffle_names(raw, net)
    own = {p.name: p for p in net.get_parameters()}
    head = _classifier_prefix(net) + "."
    missing = [k for k in own if k not in ckpt]
    shape_bad = [k for k in own if k in ckpt and tuple(ckpt[k].shape) != tuple(own[k].shape)]
    extra = [k for k in ckpt if k not in own and isinstance(ckpt[k], ms.Parameter) and _is_weight_name(k)]
    head_bad = [k for k in missing + shape_bad if k.startswith(head)]
    body_bad = [k for k in missing + shape_bad if not k.startswith(head)]
    if strict and (body_bad or [k for k in extra if not k.startswith(head)]):
        parts = []
        if shape_bad:
            parts.append("shape mismatch: " + ", ".join(
                f"{k} {tuple(ckpt[k].shape)} vs model {tuple(own[k].shape)}" for k in shape_bad[:5]))
        miss = [k for k in body_bad if k not in shape_bad]
        if miss:
            parts.append(f"missing {len(miss)}: " + ", ".join(miss[:5]))
        extra_body = [k for k in extra if not k.startswith(head)]
        if extra_body:
            parts.append(f"unexpected {len(extra_body)}: " + ", ".join(extra_body[:5]))
        raise CheckpointError(f"checkpoint {path!r} does not fit model "
                              f"{getattr(net, 'model_name', type(net).__name__)!r}: " + "; ".join(parts))
    if head_bad:
        log.warning("checkpoint %s: classifier %s not loaded (other class count); it stays newly initialised",
                    path, ", ".join(head_bad))
    to_load = {k: v for k, v in ckpt.items() if k in own and k not in head_bad}
    ms.load_param_into_net(net, to_load, strict_load=False)
    return {k: v for k, v in raw.items() if not isinstance(v, ms.Parameter)}


def _is_weight_name(key: str) -> bool:
    """Optimizer state (moments, learning rate, global step) is not a model weight."""
    return not (key.startswith(("moments.", "accum.", "learning_rate", "global_step", "momentum",
                                "adam_", "beta1_power", "beta2_power", "scale_sense", "current_iterator_step",
                                "last_overflow_iterator_step", "epoch_num", "step_num"))
                or key in ("moments", ))
