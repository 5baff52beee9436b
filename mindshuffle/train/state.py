"""What a run saves after each epoch and restores on ``--resume``: the weights (averaged with EMA), the
optimizer's moments, the run state (epoch, best metric, cards, batch) and the model's metadata.

The learning-rate table is not restored: it is a function of the recipe and the plan, rebuilt each start.
So a resume on another card count or batch size continues from the next epoch on a table built for the new
steps per epoch (its position: finished epochs x new steps), as MindCV can.
"""
from __future__ import annotations

import json
import logging
import zlib
from dataclasses import dataclass

import numpy as np

from ..checkpoints import model_metadata, read_checkpoint, save_checkpoint
from ..ema import TRAIN_PREFIX
from ..errors import RunFolderError
from ..meta import META_KEY, STATE_KEY
from ..paramwrite import ParameterWriter

__all__ = ["STATE_KEY", "Progress", "run_state", "save_checkpoint_file", "read_last", "agree_on_last", "restore"]

log = logging.getLogger("mindshuffle")


@dataclass
class Progress:
    """Where the run stands: finished epochs, the best val top-1 so far and its epoch, the last saved epoch."""

    epoch: int = 0
    best_top1: float = -1.0
    best_epoch: int = 0
    saved_epoch: int = 0


def run_state(run, progress: Progress) -> dict:
    cfg, plan = run.cfg, run.plan
    return {"epoch": progress.epoch, "step": progress.epoch * plan.steps_per_epoch, "best_top1": progress.best_top1,
            "best_epoch": progress.best_epoch, "seed": cfg.seed, "model": cfg.model, "model_kwargs": cfg.model_kwargs,
            "num_classes": run.num_classes, "world": plan.world, "batch_size": plan.batch_size,
            "steps_per_epoch": plan.steps_per_epoch, "image_resize": cfg.image_resize,
            "mean": run.data.mean, "std": run.data.std}


def save_checkpoint_file(path: str, params, state: dict, net=None) -> None:
    """Weights (+ optimizer state; a list of Parameters or a dict name -> tensor) with the run state and, given
    ``net``, the model's metadata that validate/infer/export read back."""
    extra = {STATE_KEY: json.dumps(state), "epoch_num": int(state["epoch"]), "step_num": int(state["step"])}
    if net is not None:
        extra[META_KEY] = model_metadata(net).to_json()
    items = params.items() if isinstance(params, dict) else ((p.name, p) for p in params)
    save_checkpoint([{"name": k, "data": v} for k, v in items], path, append_dict=extra)


def read_last(path: str) -> tuple:
    """(checkpoint dict, its run state) of a run folder's last.ckpt."""
    ckpt = read_checkpoint(path)
    raw = ckpt.get(STATE_KEY)
    if raw is None:
        raise RunFolderError(f"{path!r} has no {STATE_KEY} entry; it was not written by mindshuffle's engine and "
                             f"cannot be resumed (use ckpt_path to start from its weights instead)")
    return ckpt, json.loads(raw)


def _fingerprint(state: dict | None) -> tuple:
    if state is None:
        return 0.0, -1.0, 0.0
    return 1.0, float(state["epoch"]), float(zlib.crc32(json.dumps(state, sort_keys=True).encode()) & 0xFFFFFF)


def agree_on_last(folder, state: dict | None, rank: int, world: int) -> None:
    """Every rank must resume from the same last.ckpt (one run folder on storage all nodes share). Each rank
    tells what it sees (none, or epoch + a fingerprint of the run state); every rank then stops with the same
    line if they differ."""
    if world <= 1:
        return
    import mindspore as ms
    from mindspore import ops
    mine = np.zeros((world, 3), np.float32)
    mine[rank] = _fingerprint(state)
    seen = ops.AllReduce()(ms.Tensor(mine)).asnumpy()
    if len({tuple(r) for r in seen}) == 1:
        return
    missing = [r for r in range(world) if seen[r, 0] == 0]
    other = [r for r in range(world) if seen[r, 0] and tuple(seen[r]) != tuple(seen[0])]
    what = (f"rank(s) {_ranks(missing)} see no last.ckpt in {folder.path!r}" if missing else
            f"rank(s) {_ranks(other)} see another last.ckpt than rank 0 in {folder.path!r}")
    raise RunFolderError(f"cannot resume: {what}; a multi-node run needs one run folder on storage every node "
                         f"shares (NFS or a parallel file system), passed as the same --resume path on each node")


def _ranks(ranks: list) -> str:
    return ",".join(map(str, ranks[:8])) + (",..." if len(ranks) > 8 else "")


def restore(run, ckpt: dict, state: dict) -> Progress:
    """Load weights, optimizer moments and EMA state; place the optimizer at the first step of the next epoch."""
    import mindspore as ms
    opt, plan, last = run.optimizer, run.plan, run.folder.last
    table = {opt.global_step.name, getattr(opt.learning_rate, "name", "learning_rate")}
    params = {k: v for k, v in ckpt.items() if isinstance(v, ms.Parameter) and k not in table}
    not_net = ms.load_param_into_net(run.net, params, strict_load=False)[0]
    not_opt = ms.load_param_into_net(opt, params, strict_load=False)[0]
    missing = sorted((set(not_net) | set(not_opt)) - table)
    if missing:
        raise RunFolderError(f"{last!r} does not fit this recipe's model/optimizer: missing {', '.join(missing[:5])}")
    _restore_ema(run, params, last)
    progress = Progress(state["epoch"], state["best_top1"], state["best_epoch"], state["epoch"])
    step = progress.epoch * plan.steps_per_epoch
    ParameterWriter([opt.global_step]).write([np.full(opt.global_step.shape, step, np.int32)])
    was = (state.get("world"), state.get("batch_size"))
    if was != (plan.world, plan.batch_size):
        log.info("resume on %d card(s) x batch %d (was %s x %s): %d steps per epoch now, learning-rate table "
                 "rebuilt; continuing with epoch %d at step %d", plan.world, plan.batch_size, was[0], was[1],
                 plan.steps_per_epoch, progress.epoch + 1, step)
    elif state["step"] != step:
        raise RunFolderError(f"{last!r}: step {state['step']} does not match {progress.epoch} epochs x "
                             f"{plan.steps_per_epoch} steps; was the dataset changed? Resume with the same data")
    log.info("resumed from %s: epoch %d done, step %d (lr %.6g next), best val top-1 %.2f", last, progress.epoch,
             step, run.lrs[min(step, len(run.lrs) - 1)], progress.best_top1)
    return progress


def _restore_ema(run, params: dict, last: str) -> None:
    has_ema = any(k.startswith(TRAIN_PREFIX) for k in params)
    if run.ema is not None:
        try:
            run.ema.load_state(params, last)
        except ValueError as e:
            raise RunFolderError(str(e)) from None
    elif has_ema:
        raise RunFolderError(f"{last!r} was written with ema: True; resume with the recipe's ema setting unchanged "
                             f"(--ema True)")
