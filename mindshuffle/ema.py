"""Exponential moving average (EMA) of a model's weights, for the recipe keys ``ema`` and ``ema_decay``.

After every optimizer update, each averaged tensor moves towards the trained one:
``avg = d * avg + (1 - d) * weight`` with ``d = min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates (the
short ramp lets the average leave its starting point quickly in the first steps). All of the model's
parameters are averaged, BatchNorm's moving statistics included, so the averaged model is complete.

Validation and the saved checkpoints use the averaged weights when EMA is on. A run's checkpoints store them
under the model's own names, so validate/infer/export read them like any other weights; ``last.ckpt``
also keeps the trained weights (``train.<name>``) and the update count, which resume needs.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from .paramwrite import ParameterWriter

__all__ = ["WeightEMA", "TRAIN_PREFIX", "COUNT_NAME"]

TRAIN_PREFIX = "train."      # trained (not averaged) weights in last.ckpt
COUNT_NAME = "ema_updates"   # number of EMA updates so far, in last.ckpt

_update = ops.MultitypeFuncGraph("ema_update")


@_update.register("Tensor", "Tensor", "Tensor")
def _update_tensor(decay, avg, weight):
    return ops.assign(avg, avg * decay + ops.cast(weight, ms.float32) * (1.0 - decay))


class WeightEMA(nn.Cell):
    """Holds the averaged copy of ``net``'s parameters; calling it (inside the compiled train step, after the
    optimizer) performs one update and returns the decay it used."""

    def __init__(self, net: nn.Cell, decay: float):
        super().__init__(auto_prefix=False)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be between 0 and 1 (exclusive), got {decay}")
        self.decay = float(decay)
        self.weights = ParameterTuple(list(net.get_parameters()))
        # float32 even when AMP keeps float16 weights: a 1e-4 step would vanish in float16's 11-bit mantissa
        self.averages = ParameterTuple([Parameter(Tensor(w.asnumpy().astype(np.float32)), name="ema." + w.name,
                                                  requires_grad=False) for w in self.weights])
        self.updates = Parameter(Tensor(0.0, ms.float32), name="ema.updates", requires_grad=False)
        self.hyper_map = ops.HyperMap()
        self.writer = None

    def construct(self, after=None):
        n = self.updates + 1.0
        decay = ops.minimum(ops.scalar_to_tensor(self.decay, ms.float32), n / (n + 9.0))
        decay = ops.depend(decay, after)
        done = self.hyper_map(ops.partial(_update, decay), self.averages, self.weights)
        decay = ops.depend(decay, done)
        ops.assign(self.updates, n)
        return decay

    # -- outside the compiled step ----------------------------------------------------------------------------

    def swap(self) -> None:
        """Exchange the model's weights and the averages (twice restores both). Used to validate and save the
        averaged model between epochs; written through a compiled assign (see ``paramwrite``)."""
        trained = [w.asnumpy().copy() for w in self.weights]
        averaged = [a.asnumpy().copy() for a in self.averages]
        self._write(averaged, trained)

    def _write(self, weights: list, averages: list) -> None:
        if self.writer is None:
            self.writer = ParameterWriter(list(self.weights) + list(self.averages))
        self.writer.write(list(weights) + list(averages))

    def state(self) -> dict:
        """name -> tensor for ``last.ckpt`` (the model holding the trained weights, not swapped): the averaged
        weights under the model's names, the trained ones under ``train.<name>``, and the update count."""
        out = {w.name: a for w, a in zip(self.weights, self.averages)}
        out.update({TRAIN_PREFIX + w.name: w for w in self.weights})
        out[COUNT_NAME] = self.updates
        return out

    def load_state(self, ckpt: dict, path: str) -> None:
        """Restore from a ``last.ckpt`` written by ``state``; model weights become the trained ones."""
        if COUNT_NAME not in ckpt or any(TRAIN_PREFIX + w.name not in ckpt for w in self.weights):
            raise ValueError(f"{path!r} holds no EMA state ({TRAIN_PREFIX}* weights, {COUNT_NAME}): it was written "
                             f"with ema: False; resume with the recipe's ema setting unchanged")
        self._write([ckpt[TRAIN_PREFIX + w.name] for w in self.weights], [ckpt[w.name] for w in self.weights])
        ParameterWriter([self.updates]).write([np.float32(ckpt[COUNT_NAME].asnumpy().reshape(-1)[0])])
