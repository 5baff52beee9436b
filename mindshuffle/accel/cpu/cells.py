"""The accelerated cells: subclasses of the plain layers and networks that run the CPU kernels (``kernels.py``),
beside the float ones as torchvision's quantized ShuffleNet V2 is beside its float model. ``rewrite.py`` swaps a
built network's cells to them in place (same parameters, same names); each class names its plain base in
``plain``, and ``accel_init(lib)`` makes its operators from the kernel library ``lib``.

- ``AccelConvBNAct``: the 3x3 depthwise conv on the native kernel (training, eval, folded); the training-mode
  BatchNorm (+ the ReLU after it) on one kernel; for folded inference, the 1x1 conv on the native kernel and the
  depthwise conv that applies the previous 1x1 conv's bias and ReLU while it reads (``dw_after``).
- ``AccelChannelSplit``: the training-mode split+shuffle in one copy, also straight from a unit's two branches
  (``split_concat``: the concat and the next split as one copy), and for folded inference ``act_split``.
- ``AccelShuffleUnitV2`` / ``AccelShuffleNetV2``: in training the units pass on their two branches; the stem's
  BatchNorm + ReLU + max pool is one kernel. Folded inference runs the stem as one kernel (conv1 + bias + ReLU
  + pool) and leaves each 1x1 conv's bias and ReLU to the kernel that reads its output next.
- ``AccelHead``: the pooled head's global average pool (training), for every ``ClassifierNet``.
Each path runs only for float32 inputs; other dtypes take the plain path.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from ...layers import ChannelSplit, ConvBNAct
from ...models.shufflenet_v2 import ShuffleNetV2, ShuffleUnitV2
from . import kernels as K

__all__ = ["AccelConvBNAct", "AccelChannelSplit", "AccelShuffleUnitV2", "AccelShuffleNetV2", "AccelHead"]


class AccelConvBNAct(ConvBNAct):
    plain = ConvBNAct

    def accel_init(self, lib: str) -> None:
        self.dw_op = self.dw_bias_op = self.dw_act_op = None
        if self.groups == self.in_channels == self.out_channels and self.kernel_size == 3 and self.stride in (1, 2):
            self.dw_op = K.depthwise3x3(lib, self.stride)
            self.dw_bias_op = K.depthwise3x3(lib, self.stride, bias=True)
            self.dw_act_op = K.depthwise3x3(lib, self.stride, bias=True, act_in=True)
        self.pw_op = K.conv1x1(lib) if self.kernel_size == 1 and self.groups == 1 and self.stride == 1 else None
        self.bn_relu = isinstance(self.act, nn.ReLU)
        self.bn_op = None
        if not self.fused and (self.bn_relu or not self.use_act):
            self.bn_op = K.batchnorm_train(lib, self.bn_relu)
            # the kernel takes eps and nn.BatchNorm2d's momentum, which keeps 1 - momentum
            self.bn_hyper = Tensor(np.array([self.bn.eps, 1.0 - self.bn.momentum], np.float32))

    def construct(self, x: Tensor) -> Tensor:
        if x.dtype != ms.float32:
            return super().construct(x)
        if self.dw_op is None:
            x = self.conv(x)
        elif self.fused:
            x = self.dw_bias_op(x, self.conv.weight, self.conv.bias)
        else:
            x = self.dw_op(x, self.conv.weight)
        if self.training and self.bn_op is not None and not self.fused:
            x = self.train_bn(self.bn_op, x)
            if self.use_act and not self.bn_relu:
                x = self.act(x)
            return x
        x = self.bn(x)
        if self.use_act:
            x = self.act(x)
        return x

    def train_bn(self, op, x: Tensor) -> Tensor:
        """A training-mode BatchNorm kernel ``op`` on ``x`` with this layer's BN parameters; stores the updated
        moving statistics like nn.BatchNorm2d and returns the op's output."""
        bn = self.bn
        out = op(x, bn.gamma, bn.beta, bn.moving_mean, bn.moving_variance, self.bn_hyper)
        y = ops.depend(out[0], ops.assign(bn.moving_mean, out[3]))
        return ops.depend(y, ops.assign(bn.moving_variance, out[4]))

    # folded inference: a 1x1 conv + ReLU layer leaves its bias and ReLU to the kernel that reads its output next
    def conv_pre_act(self, x: Tensor) -> Tensor:
        """A folded layer's convolution without its bias: the pre-activation less the bias."""
        if self.pw_op is not None:
            return self.pw_op(x, self.conv.weight)
        return self.conv.conv2d(x, self.conv.weight)

    def dw_after(self, x: Tensor, bias_in: Tensor) -> Tensor:
        """This folded depthwise layer applied to ``relu(x + bias_in)`` (one kernel)."""
        return self.dw_act_op(x, bias_in, self.conv.weight, self.conv.bias)


class AccelChannelSplit(ChannelSplit):
    plain = ChannelSplit

    def accel_init(self, lib: str) -> None:
        self.split_op = K.shuffle_split(lib)
        self.cat_split_op = K.cat_shuffle_split(lib)
        self.act_split_op = K.act_cat_split(lib)

    def construct(self, x: Tensor):
        if self.training and x.dtype == ms.float32:
            a, b = self.split_op(x)
            return a, b
        return super().construct(x)

    def split_concat(self, a: Tensor, b: Tensor):
        """``self(ops.concat((a, b), 1))``, in training without the concat (a unit's two branches)."""
        if self.training and a.dtype == ms.float32:
            e, o = self.cat_split_op(a, b)
            return e, o
        return self.construct(ops.concat((a, b), 1))

    def act_split(self, a: Tensor, bias_a: Tensor, b: Tensor, bias_b: Tensor):
        """``self(concat((relu(a + bias_a), relu(b + bias_b)), 1))`` in one copy (folded inference)."""
        e, o = self.act_split_op(a, bias_a, b, bias_b)
        return e, o


class AccelShuffleUnitV2(ShuffleUnitV2):
    plain = ShuffleUnitV2

    def accel_init(self, lib: str) -> None:
        if self.stride == 1:  # the identity half needs no bias or ReLU: its channels come out of a ReLU already
            self.zero_bias = Tensor(np.zeros(self.split.half, np.float32))

    def parts(self, x):
        """``construct`` without its final concat: the two branch outputs. A basic unit takes its input as such
        a pair too (the previous unit's), so that the concat and the next split are one copy (training)."""
        if self.stride == 1:
            x_proj, x_main = self.split.split_concat(x[0], x[1])
            return x_proj, self.branch_main(x_main)
        return self.branch_proj(x), self.branch_main(x)

    def infer_parts(self, x):
        """Folded inference. Like ``parts``, but each branch ends in its last 1x1 conv without bias and ReLU, and
        comes with that bias: ``(a, bias_a, b, bias_b)``, finished by the next reader (the next unit's split, a
        stage's concat). A basic unit takes such a quadruple, a down-sampling unit a tensor."""
        if self.stride == 1:
            e, o = self.split.act_split(x[0], x[1], x[2], x[3])
            b, bias_b = self._infer_main(o)
            return e, self.zero_bias, b, bias_b
        dw, pw = self.branch_proj[0], self.branch_proj[1]
        b, bias_b = self._infer_main(x)
        return pw.conv_pre_act(dw(x)), pw.conv.bias, b, bias_b

    def _infer_main(self, x):
        """The main branch of ``infer_parts``: 1x1 -> 3x3 depthwise (with the 1x1's bias + ReLU) -> 1x1."""
        k = 1 if self.extra_dw else 0
        if self.extra_dw:
            x = self.branch_main[0](x)
        first, dw, last = self.branch_main[k], self.branch_main[k + 1], self.branch_main[k + 2]
        return last.conv_pre_act(dw.dw_after(first.conv_pre_act(x), first.conv.bias)), last.conv.bias

    def can_infer_fast(self) -> bool:
        """Whether ``infer_parts`` applies: folded accelerated layers, no SE."""
        layers = list(self.branch_main.cell_list) + (list(self.branch_proj.cell_list) if self.stride == 2 else [])
        if self.se or not all(isinstance(c, AccelConvBNAct) and c.fused for c in layers):
            return False
        if self.stride == 1 and not isinstance(self.split, AccelChannelSplit):
            return False
        return all(c.dw_act_op is not None if c.groups > 1 else c.bn_relu for c in layers)


class AccelHead:
    """The pooled head's global average pool on the kernel in training (a cheaper backward); mixed into the
    accelerated class of every ``ClassifierNet``."""

    def accel_init(self, lib: str) -> None:
        self.pool_op = K.global_avg_pool(lib)

    def global_pool(self, x: Tensor) -> Tensor:
        if self.training and x.dtype == ms.float32:
            return self.pool_op(x)
        return ops.mean(x, (2, 3))


class AccelShuffleNetV2(AccelHead, ShuffleNetV2):
    plain = ShuffleNetV2

    def accel_init(self, lib: str) -> None:
        """After the sub-cells are swapped: the stem and head operators, and which paths apply."""
        super().accel_init(lib)
        conv1 = self.conv1
        self.stem_op = K.bn_relu_maxpool(lib) if self.pad_pool is not None and conv1.bn_relu else None
        self.stem_pool_op, self.act_cat_op, self.act_pool_op = K.stem_conv_pool(lib), K.act_cat(lib), K.act_avgpool(lib)
        units = [unit for stage in self.stages() for unit in stage.cell_list]
        # training: units pass on their two branches, the concat fused into the next unit's split
        self.train_stages = all(isinstance(u, AccelShuffleUnitV2) and isinstance(u.split, AccelChannelSplit)
                                for u in units if u.stride == 1)
        # folded inference: conv1 + ReLU + max pool as one kernel; units on infer_parts; conv5 with the pool
        self.stem_folded = (self.pad_pool is not None and conv1.fused and conv1.bn_relu
                            and conv1.kernel_size == 3 and conv1.stride == 2 and conv1.groups == 1)
        self.fast_infer = (conv5_fits(self.conv5) and all(isinstance(u, AccelShuffleUnitV2) and u.can_infer_fast()
                                                           for u in units))

    def set_pool_same(self):
        super().set_pool_same()
        self.stem_op, self.stem_folded = None, False
        return self

    def stem(self, x: Tensor) -> Tensor:
        if self.stem_folded and x.dtype == ms.float32:
            return self.stem_pool_op(x, self.conv1.conv.weight, self.conv1.conv.bias)
        if self.training and self.stem_op is not None and not self.conv1.fused and x.dtype == ms.float32:
            return self.conv1.train_bn(self.stem_op, self.conv1.conv(x))
        return super().stem(x)

    def _infer_body(self, x: Tensor) -> Tensor:
        """Stem, stages and conv5 of a folded network on the kernels; conv5's bias and ReLU left out."""
        x = self.stem(x)
        for stage in (self.stage2, self.stage3, self.stage4):
            parts = x
            for unit in stage.cell_list:
                parts = unit.infer_parts(parts)
            x = self.act_cat_op(parts[0], parts[1], parts[2], parts[3])
        return self.conv5.conv_pre_act(x)

    def construct(self, x: Tensor) -> Tensor:
        if self.fast_infer and not self.training and x.dtype == ms.float32:
            pooled = self.act_pool_op(self._infer_body(x), self.conv5.conv.bias)
            return self.classifier(self.dropout(pooled))
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: Tensor) -> Tensor:
        if self.fast_infer and not self.training and x.dtype == ms.float32:
            return ops.relu(ops.bias_add(self._infer_body(x), self.conv5.conv.bias))
        if self.training and self.train_stages and x.dtype == ms.float32:
            x = self.stem(x)
            x = self._stage_parts(self.stage4, self._stage_parts(self.stage3, self._stage_parts(self.stage2, x)))
            return self.conv5(x)
        return super().forward_features(x)

    def _stage_parts(self, stage: nn.SequentialCell, x: Tensor) -> Tensor:
        """``stage(x)`` with the units passing their outputs on as branch pairs (``AccelShuffleUnitV2.parts``)."""
        parts = x
        for unit in stage.cell_list:  # a down-sampling unit (takes x), then basic units (take a pair)
            parts = unit.parts(parts)
        return ops.concat(parts, 1)


def conv5_fits(conv5) -> bool:
    """Whether the last 1x1 conv can leave its bias and ReLU to the pool kernel (folded, accelerated, ReLU)."""
    return isinstance(conv5, AccelConvBNAct) and conv5.fused and conv5.bn_relu and conv5.kernel_size == 1
