"""The compiled steps: the training step (forward on the AMP-wrapped network, loss in float32, loss scaling,
gradient accumulation, gradient all-reduce, clipping, optimizer, device-side metrics), the evaluation step,
and the feeds that run them: a host feed (one batch per step from a per-epoch loader, a few steps per call;
CPU, or sink mode off) and a sink feed (``sink_size`` steps per host call with the data in a device queue:
``mindspore.data_sink``, Ascend/GPU only).
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.ops import functional as F

from ..paramwrite import ParameterWriter
from .plan import LOSS_SCALE_FACTOR, LOSS_SCALE_WINDOW, RunPlan

__all__ = ["StepMetrics", "GradAccumulator", "TrainStep", "HostFeed", "SinkFeed", "compile_fn"]

_HEAD = 5  # seen, loss_sum, correct, steps, skipped


def compile_fn(fn, plan: RunPlan):
    """``fn`` as a graph with the plan's jit level and backend."""
    return ms.jit(fn, jit_level=plan.jit_level, backend=plan.backend)


class StepMetrics(nn.Cell):
    """Running sums of an epoch, kept on the device: images seen, loss x images, correct top-1, steps, steps
    skipped (overflow), and a ring of the last ``ring`` step losses. The host reads them once per call
    (``read``), so a sink of N steps costs one synchronisation instead of two per step."""

    def __init__(self, ring: int):
        super().__init__(auto_prefix=False)
        self.ring = int(ring)
        self.acc = Parameter(Tensor(np.zeros(_HEAD + self.ring, np.float32)), name="step_metrics",
                             requires_grad=False)

    def construct(self, loss, correct, batch, skipped):
        acc = self.acc
        slot = ops.one_hot(ops.cast(ops.floor_mod(acc[3], float(self.ring)), ms.int32), self.ring,
                           Tensor(1.0, ms.float32), Tensor(0.0, ms.float32))
        ring = acc[_HEAD:]
        head = acc[:_HEAD] + ops.stack([batch, loss * batch, correct, Tensor(1.0, ms.float32), skipped])
        return ops.depend(loss, ops.assign(self.acc, ops.concat([head, ring + slot * (loss - ring)])))

    def reset(self) -> None:
        """Zero the sums (through a compiled assign: see paramwrite)."""
        if not hasattr(self, "_writer"):
            self._writer = ParameterWriter([self.acc])
        self._writer.write([np.zeros(self.acc.shape, np.float32)])

    def read(self) -> dict:
        """The sums, and the losses of the steps since the last read in step order (``new`` steps)."""
        v = self.acc.asnumpy().astype(np.float64)
        steps = int(round(v[3]))
        ring = v[_HEAD:]
        order = [(steps - k) % self.ring for k in range(min(steps, self.ring), 0, -1)]
        return {"seen": v[0], "loss_sum": v[1], "correct": v[2], "steps": steps, "skipped": int(round(v[4])),
                "last_losses": [float(ring[i]) for i in order]}


_sum_mean = ops.MultitypeFuncGraph("sum_mean")
_store = ops.MultitypeFuncGraph("store")


@_sum_mean.register("Number", "Tensor", "Tensor")
def _add_share(k, total, grad):
    return total + F.cast(grad, F.dtype(total)) / k


@_store.register("Tensor", "Tensor")
def _assign(buffer, value):
    return F.assign(buffer, value)


class GradAccumulator(nn.Cell):
    """The gradients of the micro-batches of one optimizer update, summed on the device as ``grad / k`` (their
    mean once all k are in: the gradient of the mean loss over the k x b images), and the micro-batches seen
    in the group so far. Not saved: the plan makes every group end inside its epoch."""

    def __init__(self, params, k: int):
        super().__init__(auto_prefix=False)
        self.k = int(k)
        self.sums = params.clone(prefix="grad_accum", init="zeros")
        self.count = Parameter(Tensor(0, ms.int32), name="grad_accum_count", requires_grad=False)
        self.map = ops.HyperMap()

    def add(self, grads):
        """The group's sums with ``grads`` added (values; the buffers are unchanged until ``keep``)."""
        return self.map(F.partial(_sum_mean, float(self.k)), self.sums, grads)

    def keep(self, sums):
        return self.map(_store, self.sums, sums)

    def clear(self):
        return self.map(_store, self.sums, self.map(ops.zeros_like, self.sums))


class TrainStep:
    """``step(x, y)`` trains on one batch; ``ema_step()`` updates the weight average; ``eval(x)`` returns
    float32 logits. ``net`` is the plain model (saved, averaged); the plan's AMP wrapper of it runs."""

    def __init__(self, net, loss_fn, optimizer, plan: RunPlan, prep=None, ema=None):
        self.net, self.plan, self.ema = net, plan, ema
        self.run_net = net if plan.amp_level == "O0" else ms.amp.auto_mixed_precision(net, plan.amp_level)
        self.prep = prep
        self.loss_fn, self.optimizer = loss_fn, optimizer
        self.metrics = StepMetrics(plan.sink_size)
        self.scaler = self._scaler(plan)
        self.reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=plan.world) \
            if plan.world > 1 else None
        self.grad_fn = ms.value_and_grad(self.forward, None, optimizer.parameters, has_aux=True)
        # fixed scaling whose optimizer does not divide (clip_grad: see plan): the step unscales
        self.unscaler = ms.amp.StaticLossScaler(plan.loss_scale) \
            if self.scaler is None and plan.loss_scale != plan.optimizer_loss_scale else None
        self.accum = GradAccumulator(optimizer.parameters, plan.accumulation) if plan.accumulation > 1 else None
        self.one_step = Tensor([1], ms.int32)

    @staticmethod
    def _scaler(plan: RunPlan):
        if not plan.drop_overflow_update:
            return None  # fixed: the loss is multiplied, the optimizer divides (its loss_scale)
        if plan.loss_scale_type == "dynamic":
            return ms.amp.DynamicLossScaler(plan.loss_scale, LOSS_SCALE_FACTOR, LOSS_SCALE_WINDOW)
        return ms.amp.StaticLossScaler(plan.loss_scale)

    def logits(self, x):
        if self.prep is not None:
            x = self.prep(x)
        return ops.cast(self.run_net(x), ms.float32)

    def forward(self, x, y):
        logits = self.logits(x)
        loss = self.loss_fn(logits, y)
        scaled = self.scaler.scale(loss) if self.scaler is not None else loss * self.plan.loss_scale
        return scaled, (loss, logits)

    def step(self, x, y):
        """One (micro-)batch: gradients, then an update (or, accumulating, an update every k-th call)."""
        (_, (loss, logits)), grads = self.grad_fn(x, y)
        if self.accum is None:
            loss, skipped = self._update(loss, grads)
        else:
            loss, skipped = self._accumulate(loss, grads)
        hard = y.argmax(-1) if y.ndim == 2 else y  # mixup/cutmix targets: the class with the larger share
        correct = (logits.argmax(-1) == hard).astype(ms.float32).sum()
        batch = ops.scalar_to_tensor(y.shape[0], ms.float32)
        return self.metrics(loss, correct, batch, skipped)

    def _accumulate(self, loss, grads):
        """Add this micro-batch's share; the k-th updates with the mean and clears the sums. The optimizer's
        global step counts micro-batches (the plan's lr table holds each update's rate for its k of them)."""
        acc = self.accum
        sums = acc.add(grads)
        skipped = Tensor(0.0, ms.float32)
        count = acc.count + 1
        if count >= acc.k:
            loss, skipped = self._update(loss, sums)
            loss = ops.depend(loss, acc.clear())
            count = count - acc.k
        else:
            loss = ops.depend(loss, acc.keep(sums))
            loss = ops.depend(loss, ops.assign_add(self.optimizer.global_step, self.one_step))
        return ops.depend(loss, ops.assign(acc.count, count)), skipped

    def _update(self, loss, grads):
        """One optimizer update: all-reduce, unscale (skipping an overflowed update), clip. (loss, skipped)."""
        if self.reducer is not None:
            grads = self.reducer(grads)
        skipped = Tensor(0.0, ms.float32)
        if self.scaler is not None:
            grads = self.scaler.unscale(grads)
            finite = ms.amp.all_finite(grads)
            self.scaler.adjust(finite)
            if finite:
                loss = ops.depend(loss, self.optimizer(self._clip(grads)))
            else:
                skipped = Tensor(1.0, ms.float32)
        else:
            if self.unscaler is not None:
                grads = self.unscaler.unscale(grads)
            loss = ops.depend(loss, self.optimizer(self._clip(grads)))
        return loss, skipped

    def _clip(self, grads):
        if self.plan.clip_norm:
            return ops.clip_by_global_norm(grads, self.plan.clip_norm)
        return grads

    def ema_step(self):
        return self.ema()

    def step_and_ema(self, x, y):
        """The sink feed's function: the EMA update inside the same graph (on Ascend it costs nothing extra)."""
        done = self.step(x, y)
        if self.ema is not None:
            return self.ema(done)
        return done

    def eval(self, x):
        return self.logits(x)


class HostFeed:
    """One batch per compiled step from a per-epoch loader; ``call(n)`` runs ``n`` steps (up to the plan's
    ``sink_size``) before the loop reads the metrics. The EMA update runs in its own small graph after each step: inside the train step it
    cost ~200 ms per step on CPU (reading every weight after the optimizer's in-place update)."""

    def __init__(self, step: TrainStep, plan: RunPlan):
        self.train = compile_fn(step.step, plan)
        self.ema = compile_fn(step.ema_step, plan) if step.ema is not None else None
        self.it = None

    def start_epoch(self, loader) -> None:
        self.it = loader.create_tuple_iterator(num_epochs=1)

    def call(self, n: int) -> None:
        for _ in range(n):
            x, y = next(self.it)
            self.train(x, y)
            if self.ema is not None:
                self.ema()


class SinkFeed:
    """``sink_size`` steps per host call, the data in the device queue (MindSpore's ``data_sink``; Ascend and
    GPU only). ``dataset`` serves every remaining epoch (``data.build_train_dataset``)."""

    def __init__(self, step: TrainStep, plan: RunPlan, dataset):
        self.sink = ms.data_sink(step.step_and_ema, dataset, sink_size=plan.sink_size,
                                 jit_config=ms.JitConfig(jit_level=plan.jit_level, backend=plan.backend))

    def start_epoch(self, loader) -> None:
        pass  # the device queue already holds the next epoch's batches

    def call(self, n: int) -> None:
        self.sink()  # n == sink_size: the plan makes sink_size divide the steps per epoch
