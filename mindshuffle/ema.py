"""Exponential moving average (EMA) of a model's weights, for the recipe keys ``ema`` and ``ema_decay``.

After every optimizer update, each averaged tensor moves towards the trained one:
``avg = d * avg + (1 - d) * weight`` with ``d = min(ema_decay, (1 + n) / (10 + n))`` after ``n`` updates (the
short ramp lets the average leave its starting point quickly in the first steps). All of the model's
parameters are averaged, BatchNorm's moving statistics included, so the averaged model is complete.

Validation and the saved checkpoints use the averaged weights when EMA is on. A run's checkpoints store them
under the model's own names, so validate/infer/export read them like any other weights; ``last.ckpt``
also keeps the trained weights (``train.<name>``) and the update count, which resume needs.

The averages live in one flat float32 buffer: an update is a handful of kernels (one concat of the weights, one
multiply-add) instead of several per parameter, which on CPU costs 100+ ms per step for ShuffleNet's ~330
parameter tensors. Float32 also when AMP keeps float16 weights: a 1e-4 step would vanish in float16.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from .paramwrite import ParameterWriter

__all__ = ["WeightEMA", "TRAIN_PREFIX", "COUNT_NAME"]

TRAIN_PREFIX = "train."      # trained (not averaged) weights in last.ckpt
COUNT_NAME = "ema_updates"   # number of EMA updates so far, in last.ckpt


class WeightEMA(nn.Cell):
    """Holds the average of ``net``'s parameters; calling it (inside the compiled train step, after the
    optimizer) performs one update and returns the decay it used."""

    def __init__(self, net: nn.Cell, decay: float):
        super().__init__(auto_prefix=False)
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be between 0 and 1 (exclusive), got {decay}")
        self.decay = float(decay)
        self.weights = ParameterTuple(list(net.get_parameters()))
        self.sizes = [int(np.prod(w.shape)) for w in self.weights]
        self.cast = any(w.dtype != ms.float32 for w in self.weights)
        self.average = Parameter(Tensor(self._flat([w.asnumpy() for w in self.weights])), name="ema.average",
                                 requires_grad=False)
        self.updates = Parameter(Tensor(0.0, ms.float32), name="ema.updates", requires_grad=False)
        self.writer = None

    def construct(self, after=None):
        n = self.updates + 1.0
        decay = ops.minimum(ops.scalar_to_tensor(self.decay, ms.float32), n / (n + 9.0))
        decay = ops.depend(decay, after)
        parts = [w.reshape(-1) for w in self.weights]
        if self.cast:
            parts = [ops.cast(p, ms.float32) for p in parts]
        flat = ops.concat(parts)
        done = ops.assign(self.average, self.average * decay + flat * (1.0 - decay))
        decay = ops.depend(decay, done)
        ops.assign(self.updates, n)
        return decay

    # -- outside the compiled step ----------------------------------------------------------------------------

    @staticmethod
    def _flat(arrays) -> np.ndarray:
        return np.concatenate([np.asarray(a, np.float32).reshape(-1) for a in arrays])

    def averages(self) -> list:
        """The averaged tensors as numpy arrays, in the order and shapes of the model's parameters."""
        flat = self.average.asnumpy()
        out, at = [], 0
        for w, n in zip(self.weights, self.sizes):
            out.append(flat[at:at + n].reshape(w.shape).copy())
            at += n
        return out

    def swap(self) -> None:
        """Exchange the model's weights and the averages (twice restores both). Used to validate and save the
        averaged model between epochs; written through a compiled assign (see ``paramwrite``)."""
        trained = [w.asnumpy().copy() for w in self.weights]
        self._write(self.averages(), trained)

    def _write(self, weights: list, averages: list) -> None:
        if self.writer is None:
            self.writer = ParameterWriter(list(self.weights) + [self.average])
        self.writer.write([np.asarray(w.asnumpy() if isinstance(w, Tensor) else w) for w in weights]
                          + [self._flat(a.asnumpy() if isinstance(a, Tensor) else a for a in averages)])

    def sync(self, world: int) -> None:
        """Average across ranks (distributed runs: each rank's BN statistics differ; the rest is identical)."""
        from mindspore import ops as P
        total = P.AllReduce()(self.average.value()).asnumpy() / world
        flat = total.reshape(-1)
        pieces, at = [], 0
        for n in self.sizes:
            pieces.append(flat[at:at + n])
            at += n
        self._write([w.asnumpy().copy() for w in self.weights], pieces)

    def state(self) -> dict:
        """name -> tensor for ``last.ckpt`` (the model holding the trained weights, not swapped): the averaged
        weights under the model's names, the trained ones under ``train.<name>``, and the update count."""
        out = {w.name: Tensor(a, w.dtype) for w, a in zip(self.weights, self.averages())}
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
