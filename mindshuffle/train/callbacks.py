"""Per-run policy hooks, in MindCV's callback spirit: the epoch loop calls them at fixed points and they
never touch the compiled step. Progress (a tqdm bar on rank 0), logging (``log_interval``), EMA (validate and
save the averaged weights) ship here; a test adds its own (a fault hook) through ``fit(..., callbacks=[...])``.
"""
from __future__ import annotations

import logging
import sys

__all__ = ["Callback", "CallbackList", "ProgressBar", "StepLog", "EMASwap"]

log = logging.getLogger("mindshuffle")


class Callback:
    """Override what you need. ``run`` is the engine's ``Run`` (plan, folder, recipe, lr table, ...)."""

    def on_epoch_begin(self, run, epoch: int) -> None: ...

    def on_call_end(self, run, epoch: int, step: int, losses: list) -> None:
        """After each host call: ``step`` steps of this epoch are done, ``losses`` are the new steps' losses."""

    def on_epoch_trained(self, run, epoch: int) -> None:
        """After the epoch's last step, before validation and the checkpoint."""

    def on_validate_begin(self, run, epoch: int) -> None: ...

    def on_validate_end(self, run, epoch: int) -> None: ...

    def on_epoch_end(self, run, epoch: int, row: dict) -> None: ...

    def on_train_end(self, run) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks):
        self.callbacks = list(callbacks)

    def _each(self, name, *args):
        for cb in self.callbacks:
            getattr(cb, name)(*args)

    def on_epoch_begin(self, run, epoch):
        self._each("on_epoch_begin", run, epoch)

    def on_call_end(self, run, epoch, step, losses):
        self._each("on_call_end", run, epoch, step, losses)

    def on_epoch_trained(self, run, epoch):
        self._each("on_epoch_trained", run, epoch)

    def on_validate_begin(self, run, epoch):
        self._each("on_validate_begin", run, epoch)

    def on_validate_end(self, run, epoch):
        self._each("on_validate_end", run, epoch)

    def on_epoch_end(self, run, epoch, row):
        self._each("on_epoch_end", run, epoch, row)

    def on_train_end(self, run):
        self._each("on_train_end", run)


class ProgressBar(Callback):
    """A tqdm bar per epoch on rank 0 (stderr), advanced once per host call (per sink on Ascend)."""

    def __init__(self):
        self.bar = None

    def on_epoch_begin(self, run, epoch):
        from tqdm import tqdm
        self.bar = tqdm(total=run.plan.steps_per_epoch, desc=f"epoch {epoch}/{run.cfg.epoch_size}", leave=False,
                        dynamic_ncols=True, file=sys.stderr)

    def on_call_end(self, run, epoch, step, losses):
        self.bar.update(len(losses))
        if losses:
            self.bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)

    def on_epoch_end(self, run, epoch, row):
        self.close()

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StepLog(Callback):
    """A log line every ``log_interval`` steps (at the first call that reaches it)."""

    def __init__(self, interval: int):
        self.interval = interval
        self.next = interval

    def on_epoch_begin(self, run, epoch):
        self.next = self.interval

    def on_call_end(self, run, epoch, step, losses):
        if not self.interval or step < self.next or not losses:
            return
        while self.next <= step:
            self.next += self.interval
        at = (epoch - 1) * run.plan.steps_per_epoch + step - 1
        log.info("epoch %d step %d/%d loss %.4f lr %.5g", epoch, step, run.plan.steps_per_epoch, losses[-1],
                 run.lrs[at])


class EMASwap(Callback):
    """Validation (and the checkpoints) see the averaged weights: swap them in around validation; average the
    per-rank BatchNorm statistics in the average at the end of each epoch of a distributed run."""

    def __init__(self, ema, world: int):
        self.ema, self.world = ema, world

    def on_epoch_trained(self, run, epoch):
        if self.world > 1:
            self.ema.sync(self.world)

    def on_validate_begin(self, run, epoch):
        self.ema.swap()

    def on_validate_end(self, run, epoch):
        self.ema.swap()
