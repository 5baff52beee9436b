"""One training epoch and one validation pass, in the shape of torchvision's ``train_one_epoch`` /
``evaluate``: the loop runs the plan's host calls, reads the device-side metrics once per call, and tells the
callbacks; it knows nothing about files."""
from __future__ import annotations

import math
import time

import numpy as np

from ..data.loader import build_loader
from ..data.sampling import epoch_indices
from ..errors import DataError
from ..evaluate import Accumulator
from ..paramwrite import ParameterWriter

__all__ = ["train_one_epoch", "validate"]


def _losses_since(m: dict, done: int) -> list:
    new = m["steps"] - done
    return m["last_losses"][-new:] if new > 0 else []


def train_one_epoch(run, epoch: int) -> dict:
    """Epoch ``epoch`` (1-based). Returns its stats: loss, top-1, images, time, call times, step rows."""
    plan, step = run.plan, run.step
    run.callbacks.on_epoch_begin(run, epoch)
    run.net.set_train(True)
    step.metrics.reset()
    loader, source = run.data.epoch_loader(epoch, run)
    run.feed.start_epoch(loader)
    done, rows, call_times, call_seconds = 0, [], [], 0.0
    first = (epoch - 1) * plan.steps_per_epoch
    t0 = time.time()
    try:
        for n in plan.calls():
            tc = time.time()
            run.feed.call(n)
            m = step.metrics.read()  # the one host read of this call
            took = time.time() - tc
            call_seconds += took
            call_times.append(took / n)  # per step
            losses = _losses_since(m, done)
            for k, loss in enumerate(losses):
                at = first + done + k
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at epoch {epoch} step {done + k + 1}; lower lr "
                                             f"(now {run.lrs[at]:.4g}) or check the data")
                rows.append((at + 1, epoch, float(run.lrs[at]), loss))
            done = m["steps"]
            run.callbacks.on_call_end(run, epoch, done, losses)
    except RuntimeError:
        if source is not None and source.first_error:
            raise DataError(source.first_error + "; remove or replace it, or set strict_data: False") from None
        raise
    seconds = time.time() - t0
    return {"loss": m["loss_sum"] / max(m["seen"], 1), "top1": m["correct"] / max(m["seen"], 1) * 100.0,
            "seen": m["seen"], "skipped": m["skipped"], "seconds": seconds, "call_times": call_times,
            "call_seconds": call_seconds,
            "rows": rows}


def validate(run, files) -> Accumulator:
    """Each rank evaluates its shard with the compiled eval step; the confusion matrices are summed across
    ranks (float32 all-reduce)."""
    idx = epoch_indices(len(files), 0, run.cfg.seed, run.plan.rank, run.plan.world, shuffle=False, pad=False)
    run.net.set_train(False)
    acc = Accumulator(run.num_classes)
    try:
        if len(idx):
            loader, source = build_loader(run.cfg, files, idx, run.data.val_tf, is_training=False)
            try:
                for x, y in loader.create_tuple_iterator(num_epochs=1):
                    acc.update(run.eval_step(x).asnumpy(), y.asnumpy())
            except RuntimeError:
                if source.first_error:
                    raise DataError(source.first_error) from None
                raise
    finally:
        run.net.set_train(True)
    if run.plan.world > 1:
        import mindspore as ms
        from mindspore import ops
        acc.from_vector(ops.AllReduce()(ms.Tensor(acc.as_vector())).asnumpy())
    return acc


def sync_bn_stats(net, world: int) -> None:
    """Average BatchNorm running statistics over ranks, so every rank (and the checkpoint) holds the same."""
    from mindspore import ops
    stats = [p for p in net.get_parameters() if "moving_mean" in p.name or "moving_variance" in p.name]
    if stats:
        reduce = ops.AllReduce()
        ParameterWriter(stats).write([np.asarray(reduce(p.value()).asnumpy()) / world for p in stats])
