"""Writing new values into parameters that a compiled graph already uses.

In MindSpore 2.7.1 (graph mode, CPU), ``Parameter.set_data`` or ``assign_value`` after a training step has been
compiled gives the Python side a new tensor while the compiled step keeps updating the old one: from then on
the training no longer moves what Python sees, and checkpoints save stale values. Writing through a compiled
``ops.assign`` updates the tensor the graphs share. ``ParameterWriter`` does that for a fixed list of
parameters (BatchNorm statistics averaged across ranks, EMA weight swaps).
"""
from __future__ import annotations

import numpy as np
from mindspore import ParameterTuple, Tensor, mutable, nn, ops

__all__ = ["ParameterWriter"]

_assign = ops.MultitypeFuncGraph("paramwrite_assign")


@_assign.register("Tensor", "Tensor")
def _assign_tensor(param, value):
    return ops.assign(param, value)


class ParameterWriter(nn.Cell):
    """``ParameterWriter(params).write(arrays)`` sets ``params[i]`` to ``arrays[i]`` (numpy or Tensor)."""

    def __init__(self, params):
        super().__init__(auto_prefix=False)
        self.params = ParameterTuple(list(params))
        self.hyper_map = ops.HyperMap()

    def construct(self, values):
        return self.hyper_map(_assign, self.params, values)

    def write(self, arrays) -> None:
        arrays = list(arrays)
        if len(arrays) != len(self.params):
            raise ValueError(f"{len(arrays)} values for {len(self.params)} parameters")
        values = tuple(Tensor(np.asarray(a.asnumpy() if isinstance(a, Tensor) else a).copy(), p.dtype)
                       for a, p in zip(arrays, self.params))
        self(mutable(values))  # a variable input: one compiled graph for every write
