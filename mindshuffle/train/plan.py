"""The run plan: every device-dependent choice of a training run, resolved once from the recipe, the device
and the ranks, printed at start and recorded in the summary.

What runs where (MindSpore 2.7.1, read in its source):

- ``ms.jit`` takes only ``jit_level`` O0/O1; whole-graph sinking is ``backend="GE"`` (Atlas training series),
  ``"ms_backend"`` otherwise. A recipe's ``jit_level: O2`` (MindCV's published Ascend runs) therefore means
  ``backend="GE"`` with jit_level O0, as ``mindspore.data_sink`` itself maps it; O0/O1 mean ``ms_backend``.
  GE exists only on Ascend: elsewhere O2 runs as O0 on ms_backend, and the plan says so. MindSpore 2.9 deprecates
  ``backend="GE"`` (2.10's own ``data_sink`` still maps O2 to it): the plan keeps it and says so.
- AMP levels O1-O3 wrap the network (``ms.amp.auto_mixed_precision`` returns the network to use); the loss is
  always computed on float32 logits. fp16 is slower than fp32 on CPU: there the plan uses O0.
- Loss scaling as MindCV's trainer combines it: ``fixed`` without ``drop_overflow_update`` scales the loss and
  lets the optimizer divide the gradients (its ``loss_scale``); ``fixed`` with ``drop_overflow_update`` and
  ``dynamic`` unscale in the step and skip the update of a step whose gradients overflowed; ``dynamic`` also
  halves the scale on overflow and doubles it after 2,000 clean steps. ``dynamic`` always drops overflowed
  updates (MindCV refuses it otherwise). fp32 (O0) needs no scaling: the plan uses 1.
- Dataset sink mode (Ascend/GPU only; ``mindspore.data_sink`` refuses CPU) runs ``sink_size`` steps per host
  call with the data in a device queue; the metrics stay on the device and are read once per call. On CPU
  the host feeds the step and reads the metrics every ``HOST_STEPS_PER_CALL`` steps.
- ``gradient_accumulation_steps`` k: a step is a micro-batch; the optimizer updates every k-th step with the
  mean of the k gradients (one batch of k x batch_size). ``steps_per_epoch`` counts micro-batches, rounded down
  to a multiple of k (the trailing partial group of an epoch is dropped, like ``drop_remainder``), so a group
  never spans two epochs and a checkpoint never holds half a group. The lr schedule is computed over the
  updates (steps_per_epoch / k per epoch) and held for the k micro-batches of each (``learning_rates``); the
  optimizer's global step counts micro-batches, so a resume indexes the table as without accumulation.
- ``clip_grad``: the gradient of each update is clipped to global norm ``clip_value`` after the all-reduce
  and unscaling: with fixed loss scaling the step (not the optimizer) divides by the scale, so the clip acts
  on the true gradient.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import metadata

import numpy as np

from ..errors import RecipeError
from ..schedules import lr_table

__all__ = ["RunPlan", "resolve", "LOSS_SCALE_WINDOW", "LOSS_SCALE_FACTOR", "HOST_STEPS_PER_CALL"]

LOSS_SCALE_WINDOW = 2000   # MindCV's DynamicLossScaleManager settings
LOSS_SCALE_FACTOR = 2
# The host feed runs up to this many steps between two reads of the device-side metrics: a read waits for the
# step to finish, so reading often stops MindSpore from queueing the next step (bench/bench_engine.py: reading
# every step costs 13-25% of a small CPU step, every 8th 6-9%, every 32nd 3%); every step's loss is still logged.
HOST_STEPS_PER_CALL = 32


@dataclass(frozen=True)
class RunPlan:
    """What this run does on its device: see the module docstring for every rule."""

    device_target: str
    rank: int
    world: int
    jit_level: str                  # passed to ms.jit (O0 or O1)
    backend: str                    # ms_backend or GE
    amp_level: str                  # O0 (fp32) .. O3
    loss_scale: float               # the scale the loss is multiplied with
    loss_scale_type: str            # fixed | dynamic
    drop_overflow_update: bool      # unscale in the step and skip overflowed updates
    optimizer_loss_scale: float     # the optimizer divides the gradients by this (fixed, no drop)
    sink: bool                      # data through the device queue (mindspore.data_sink)
    sink_size: int                  # training steps per host call
    steps_per_epoch: int
    batch_size: int
    lr: float                       # after linear scaling to this run's global batch
    min_lr: float
    schedule: tuple = ("constant", 1, 0, 0.0, 0)  # scheduler, epochs, warmup_epochs, warmup_factor, decay_epochs
    notes: tuple = field(default_factory=tuple)
    accumulation: int = 1           # micro-batches per optimizer update (gradient_accumulation_steps)
    clip_norm: float = 0.0          # clip each update's gradient to this global norm (0 = no clipping)

    @property
    def global_batch(self) -> int:
        return self.world * self.batch_size

    @property
    def calls_per_epoch(self) -> int:
        return -(-self.steps_per_epoch // self.sink_size)

    def calls(self) -> list:
        """Steps of each host call of an epoch: ``sink_size`` each (the host feed's last call may be shorter)."""
        full, rest = divmod(self.steps_per_epoch, self.sink_size)
        return [self.sink_size] * full + ([rest] if rest else [])

    @property
    def graph(self) -> str:
        """What ran, for logs and the summary row: e.g. ``O0/ms_backend`` or ``O0/GE``."""
        return f"{self.jit_level}/{self.backend}"

    def learning_rates(self) -> np.ndarray:
        """The per-step learning-rate table of the whole run (the optimizer's global step indexes it). With
        accumulation the schedule runs over the updates, each rate held for its ``accumulation`` micro-batches."""
        scheduler, epochs, warmup, factor, decay = self.schedule
        k = self.accumulation
        table = lr_table(scheduler, self.lr, self.steps_per_epoch // k, epochs, min_lr=self.min_lr,
                         warmup_epochs=warmup, warmup_factor=factor, decay_epochs=decay)
        return np.repeat(table, k) if k > 1 else table

    def rows(self) -> list:
        scale = (f"{self.loss_scale:g} {self.loss_scale_type}"
                 + (", overflowed steps skipped" if self.drop_overflow_update else "")
                 + (f", optimizer divides by {self.optimizer_loss_scale:g}" if self.optimizer_loss_scale != 1
                    else ""))
        rows = [("device", f"{self.device_target}, rank {self.rank} of {self.world}"),
                ("graph", f"jit_level {self.jit_level}, backend {self.backend}"),
                ("precision", f"amp_level {self.amp_level}, loss in float32"),
                ("loss scale", scale),
                ("data", f"{'dataset sink' if self.sink else 'host feed'}, up to {self.sink_size} step(s) per "
                         f"call, {self.calls_per_epoch} call(s) = {self.steps_per_epoch} steps/epoch"),
                ("batch", f"{self.world} card(s) x {self.batch_size} = {self.global_batch}"),
                ("lr", f"{self.lr:.6g} (min {self.min_lr:.6g}), {self.schedule[0]}, {self.schedule[1]} epochs, "
                       f"{self.schedule[2]} warm-up")]
        return rows + ([("update", self._update_row())] if self.accumulation > 1 or self.clip_norm else [])

    def _update_row(self) -> str:
        k, parts = self.accumulation, []
        if k > 1:
            parts.append(f"every {k} micro-batches: {k} x {self.global_batch} = {k * self.global_batch} images, "
                         f"{self.steps_per_epoch // k} updates/epoch, lr per update; BN statistics per micro-batch")
        if self.clip_norm:
            parts.append(f"gradients clipped to global norm {self.clip_norm:g}")
        return "; ".join(parts)

    def describe(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        lines = [f"  {k:<{width}}  {v}" for k, v in self.rows()]
        lines += [f"  note: {n}" for n in self.notes]
        return "run plan:\n" + "\n".join(lines)

    def summary(self) -> dict:
        """The plan's part of summary.json."""
        return {"jit level": self.graph, "amp_level": self.amp_level, "loss_scale": self.loss_scale,
                "loss_scale_type": self.loss_scale_type, "sink_size": self.sink_size}


def _graph(cfg, notes: list, mindspore_version: str) -> tuple:
    level = cfg.jit_level
    if level != "O2":
        return level, "ms_backend"
    if cfg.device_target == "Ascend":
        if _version_tuple(mindspore_version) >= (2, 9):
            notes.append(f"jit_level O2 -> backend GE, which MindSpore {mindspore_version} deprecates (from 2.9); "
                         f"jit_level O0 or O1 runs on ms_backend")
        return "O0", "GE"
    notes.append(f"jit_level O2 -> O0 on ms_backend (GE whole-graph sinking exists only on Ascend, "
                 f"not {cfg.device_target})")
    return "O0", "ms_backend"


def _precision(cfg, notes: list) -> tuple:
    """(amp_level, loss_scale, loss_scale_type, drop_overflow_update, optimizer_loss_scale)."""
    amp, scale, kind, drop = cfg.amp_level, float(cfg.loss_scale), cfg.loss_scale_type, bool(cfg.drop_overflow_update)
    if cfg.device_target == "CPU" and amp != "O0":
        notes.append(f"amp_level {amp} -> O0 on CPU (fp16 is slower than fp32 there)")
        amp = "O0"
    if amp == "O0" and (scale != 1.0 or kind == "dynamic"):
        notes.append(f"loss_scale {scale:g} ({kind}) -> 1 (fp32 needs no scaling)")
        scale, kind, drop = 1.0, "fixed", False
    if kind == "dynamic" and not drop:
        notes.append("loss_scale_type dynamic: overflowed steps are skipped (drop_overflow_update True)")
        drop = True
    optimizer_scale = scale if (kind == "fixed" and not drop) else 1.0
    if cfg.clip_grad and optimizer_scale != 1.0:
        notes.append(f"clip_grad: the step divides the gradients by loss_scale {scale:g} before clipping "
                     f"(not the optimizer)")
        optimizer_scale = 1.0
    if cfg.opt == "lamb":
        if cfg.device_target == "CPU":
            raise RecipeError("recipe key 'opt': bad value 'lamb' on CPU (MindSpore has no Lamb kernel there; "
                              "choose adamw or lion, or train on Ascend/GPU)")
        if optimizer_scale != 1.0:
            notes.append(f"opt lamb: the step divides the gradients by loss_scale {scale:g} (MindSpore's Lamb "
                         f"takes no loss scale)")
            optimizer_scale = 1.0
    return amp, scale, kind, drop, optimizer_scale


def _accumulation(cfg, steps: int, notes: list) -> tuple:
    """(micro-batches per epoch, a multiple of k; k)."""
    k = cfg.gradient_accumulation_steps
    if k == 1:
        return steps, 1
    if steps < k:
        raise RecipeError(f"recipe key 'gradient_accumulation_steps': bad value {k} (more than the {steps} "
                          f"batch(es) per epoch each card sees; lower it or batch_size)")
    kept = steps - steps % k
    if kept != steps:
        notes.append(f"gradient_accumulation_steps {k}: {steps} -> {kept} micro-batches per epoch (the trailing "
                     f"partial group of {steps - kept} is dropped)")
    return kept, k


def _sink(cfg, steps: int, notes: list) -> tuple:
    host = (False, min(HOST_STEPS_PER_CALL, steps))
    if not cfg.dataset_sink_mode:
        return host
    if cfg.device_target == "CPU":
        notes.append("dataset_sink_mode off on CPU (mindspore.data_sink supports Ascend and GPU only)")
        return host
    want = steps if cfg.sink_size in (-1, 0) or cfg.sink_size >= steps else cfg.sink_size
    size = max(d for d in range(1, want + 1) if steps % d == 0)
    if size != want:
        notes.append(f"sink_size {want} -> {size} (a divisor of the {steps} steps per epoch)")
    return True, size


def _lr(cfg, world: int, notes: list) -> tuple:
    """Linear scaling to the batch of one update: cards x batch x gradient_accumulation_steps."""
    k = cfg.gradient_accumulation_steps
    global_batch = world * cfg.batch_size * k
    if not cfg.global_batch_size or cfg.global_batch_size == global_batch:
        return cfg.lr, cfg.min_lr
    factor = global_batch / cfg.global_batch_size
    notes.append(f"linear LR scaling: {world} card(s) x batch {cfg.batch_size}{f' x {k} accumulated' if k > 1 else ''}"
                 f" = {global_batch}, recipe tuned for {cfg.global_batch_size}: lr {cfg.lr:.4g} -> "
                 f"{cfg.lr * factor:.4g}")
    return cfg.lr * factor, cfg.min_lr * factor


def _schedule(cfg, notes: list) -> tuple:
    """The schedule's epochs, clipped to the run: a quick trial (``--epoch_size 2``) of a recipe with 4 warm-up
    epochs warms up for 2, and a decay longer than what follows the warm-up ends with the run."""
    epochs, warmup, decay = cfg.epoch_size, cfg.warmup_epochs, cfg.decay_epochs
    if warmup > epochs:
        notes.append(f"warmup_epochs {warmup} -> {epochs} (clipped to epoch_size {epochs})")
        warmup = epochs
    if decay > epochs - warmup:
        notes.append(f"decay_epochs {decay} -> {epochs - warmup} (the epochs after warm-up)")
        decay = epochs - warmup
    return cfg.scheduler, epochs, warmup, cfg.warmup_factor, decay


def _version_tuple(version: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:2])


def resolve(cfg, rank: int, world: int, steps_per_epoch: int, mindspore_version: str | None = None) -> RunPlan:
    """The plan for recipe ``cfg`` as rank ``rank`` of ``world`` with ``steps_per_epoch`` steps on
    ``mindspore_version`` (default: the installed one). Pure: it sets no MindSpore context, so a test (or a dry
    run) can resolve the plan of any device on a CPU machine."""
    notes: list = []
    jit_level, backend = _graph(cfg, notes, mindspore_version or metadata.version("mindspore"))
    amp, scale, kind, drop, opt_scale = _precision(cfg, notes)
    steps_per_epoch, k = _accumulation(cfg, steps_per_epoch, notes)
    sink, sink_size = _sink(cfg, steps_per_epoch, notes)
    lr, min_lr = _lr(cfg, world, notes)
    return RunPlan(cfg.device_target, rank, world, jit_level, backend, amp, scale, kind, drop, opt_scale, sink,
                   sink_size, steps_per_epoch, cfg.batch_size, lr, min_lr, _schedule(cfg, notes), tuple(notes),
                   accumulation=k, clip_norm=float(cfg.clip_value) if cfg.clip_grad else 0.0)
