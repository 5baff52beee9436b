"""Checkpoint averaging, timm's ``avg_checkpoints`` idea: the element-wise mean of the weights of several
checkpoints of one model, BatchNorm moving statistics included, written as one model checkpoint.

What the output holds: every model parameter (float ones averaged; integer ones taken from the last file), the
first file's metadata (``meta.META_KEY``: model, classes, preprocessing) with a note of what was averaged
(``averaged``: the files, in order), and the last file's counters (``epoch_num``, ``step_num``, the run state).
Optimizer state (moments, global step, learning-rate tables) and EMA bookkeeping (``train.*``) are dropped.

``pick_checkpoints`` chooses from a run folder's ``epoch_<N>.ckpt`` files (``keep_checkpoint_max`` > 1): the
k best by metrics.csv's val top-1 (ties: the later epoch) or the k latest.
"""
from __future__ import annotations

import dataclasses
import os

import mindspore as ms
import numpy as np

from .checkpoints import checkpoint_metadata, is_weight_name, read_checkpoint, save_checkpoint
from .errors import CheckpointError
from .meta import META_KEY, STATE_KEY, CheckpointMeta
from .runfiles import epoch_checkpoints, read_metrics

__all__ = ["average_checkpoints", "save_average", "pick_checkpoints"]

COUNTERS = ("epoch_num", "step_num", STATE_KEY)   # taken from the last file, never averaged


def _weights(ckpt: dict) -> dict:
    return {k: v for k, v in ckpt.items() if isinstance(v, ms.Parameter) and is_weight_name(k)}


def _same_model(first: tuple, other: tuple) -> None:
    """One CheckpointError line if ``other`` (path, weights, metadata) is not the model ``first`` is."""
    (p0, w0, m0), (p1, w1, m1) = first, other
    why = ""
    for key in ("model", "model_kwargs", "num_classes"):   # compared where both files record it
        a, b = getattr(m0, key), getattr(m1, key)
        if a not in ("", None, {}) and b not in ("", None, {}) and a != b:
            why = f"{key} {b!r} vs {a!r}"
            break
    if not why and set(w0) != set(w1):
        diff = sorted(set(w0) ^ set(w1))
        why = f"{len(diff)} parameter(s) in only one of them ({', '.join(diff[:3])}{', ...' if len(diff) > 3 else ''})"
    if not why:
        bad = [k for k in w0 if tuple(w0[k].shape) != tuple(w1[k].shape)]
        if bad:
            why = f"{bad[0]} {tuple(w1[bad[0]].shape)} vs {tuple(w0[bad[0]].shape)}"
    if why:
        raise CheckpointError(f"cannot average {p1!r} with {p0!r}: not the same model ({why}); average "
                              f"checkpoints of one run (or of one model and class count)")


def average_checkpoints(paths) -> tuple:
    """(averaged parameters {name: numpy array}, the output's extra entries) of checkpoint files ``paths``."""
    paths = [str(p) for p in paths]
    if not paths:
        raise CheckpointError("no checkpoints to average; give checkpoint files or a run folder with --best/--last")
    first = last = None
    total: dict = {}
    for path in paths:
        ckpt = read_checkpoint(path)
        weights = _weights(ckpt)
        if not weights:
            raise CheckpointError(f"checkpoint {path!r} holds no model weights to average")
        here = (path, weights, checkpoint_metadata(ckpt))
        if first is None:
            first = here
        _same_model(first, here)
        for k, v in weights.items():
            a = v.asnumpy()
            if np.issubdtype(a.dtype, np.floating):
                total[k] = total.get(k, 0.0) + a.astype(np.float64)
        last = ckpt
    out = {k: (total[k] / len(paths)).astype(v.asnumpy().dtype) if k in total else v.asnumpy()
           for k, v in _weights(last).items()}
    meta = dataclasses.replace(first[2], averaged={"count": len(paths),
                                                   "files": [os.path.basename(p) for p in paths]})
    extra = {META_KEY: meta.to_json()}
    for key in COUNTERS:
        v = last.get(key)
        if v is not None:
            extra[key] = v if isinstance(v, str) else int(np.asarray(getattr(v, "asnumpy", lambda: v)()).reshape(-1)[0])
    return out, extra


def save_average(paths, output: str) -> dict:
    """Average ``paths`` into ``output`` (written atomically); returns {"output", "count", "model", "params"}."""
    paths = list(paths)
    params, extra = average_checkpoints(paths)
    save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in params.items()], output, append_dict=extra)
    model = CheckpointMeta.from_json(extra[META_KEY]).model
    return {"output": output, "count": len(paths), "model": model or "?", "params": len(params)}


def pick_checkpoints(run_dir: str, best: int = 0, last: int = 0) -> list:
    """The epoch checkpoints of run folder ``run_dir`` to average, in epoch order: the ``best`` k best by
    metrics.csv's val top-1 (ties: the later epoch), or the ``last`` k latest."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"run folder {run_dir!r} does not exist")
    found = epoch_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"run folder {run_dir!r} holds no epoch_<N>.ckpt files; train with "
                              f"keep_checkpoint_max > 1 (ckpt_save_policy latest_k or top_k), or pass checkpoint "
                              f"files")
    k, flag = (best, "--best") if best else (last, "--last")
    if k < 1:
        raise CheckpointError(f"{flag} {k}: give a number of checkpoints >= 1")
    if best:
        val = {int(r["epoch"]): r["val_top1"] for r in read_metrics(os.path.join(run_dir, "metrics.csv"))
               if r.get("val_top1") is not None}
        ranked = sorted((e for e in found if e in val), key=lambda e: (val[e], e), reverse=True)
        what = " with a val top-1 in metrics.csv"
    else:
        ranked, what = sorted(found, reverse=True), ""
    if k > len(ranked):
        raise CheckpointError(f"{flag} {k}: run folder {run_dir!r} has only {len(ranked)} epoch checkpoint(s){what} "
                              f"(epochs {', '.join(map(str, sorted(ranked))) or 'none'}); ask for at most "
                              f"{len(ranked)}")
    return [found[e] for e in sorted(ranked[:k])]
