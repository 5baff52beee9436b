"""The shared bricks of the ShuffleNet family: conv-BN-activation, the fused channel split+shuffle,
squeeze-and-excitation and h-swish.

Everything here is graph-mode safe: shapes are fixed at construction time and no branch depends on data.
"""
from __future__ import annotations

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops


__all__ = ["ConvBNAct", "ChannelSplit", "channel_shuffle", "SqueezeExcite", "ZeroPadMaxPool", "fuse_conv_bn",
           "fuse_model"]


def make_activation(act: str | None) -> nn.Cell | None:
    """Name -> activation cell; ``None`` or ``""`` for no activation."""
    if not act:
        return None
    table = {"relu": nn.ReLU, "hswish": nn.HSwish, "hsigmoid": nn.HSigmoid, "sigmoid": nn.Sigmoid}
    if act not in table:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(table)}")
    return table[act]()


class ConvBNAct(nn.Cell):
    """Convolution (no bias) -> BatchNorm -> optional activation.

    ``fuse()`` folds the BatchNorm into the convolution for inference: the same outputs in eval mode,
    one kernel fewer per layer.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, act: str | None = "relu", bn_eps: float = 1e-5):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.groups = kernel_size, stride, groups
        pad = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              pad_mode="pad" if pad else "valid", padding=pad, group=groups, has_bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=0.9)
        self.act = make_activation(act)
        self.use_act = self.act is not None
        self.fused = False

    def construct(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        if self.use_act:
            x = self.act(x)
        return x

    def fuse(self) -> "ConvBNAct":
        """Fold BN (moving statistics) into a biased conv. Irreversible; for inference and export only."""
        if self.fused:
            return self
        w, b = fuse_conv_bn(self.conv.weight.asnumpy(), None, self.bn)
        pad = self.kernel_size // 2
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         pad_mode="pad" if pad else "valid", padding=pad, group=self.groups, has_bias=True)
        conv.weight.set_data(Tensor(w, ms.float32))
        conv.bias.set_data(Tensor(b, ms.float32))
        self.conv = conv
        del self.bn
        self.bn = nn.Identity()
        self.fused = True
        return self


def fuse_conv_bn(weight: np.ndarray, bias: np.ndarray | None, bn: nn.BatchNorm2d) -> tuple[np.ndarray, np.ndarray]:
    """Weights of the conv that equals ``bn(conv(x))`` with the BN's moving statistics."""
    gamma = bn.gamma.asnumpy().astype(np.float64)
    beta = bn.beta.asnumpy().astype(np.float64)
    mean = bn.moving_mean.asnumpy().astype(np.float64)
    var = bn.moving_variance.asnumpy().astype(np.float64)
    scale = gamma / np.sqrt(var + bn.eps)
    w = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    b0 = np.zeros_like(mean) if bias is None else bias.astype(np.float64)
    b = (b0 - mean) * scale + beta
    return w.astype(np.float32), b.astype(np.float32)


def fuse_model(net: nn.Cell) -> nn.Cell:
    """Fold every ConvBNAct of ``net`` in place and put it in eval mode; returns ``net``. Plain MindSpore ops, as
    export needs them; ``mindshuffle.accel.accelerate(net, "infer")`` folds with this and then runs the folded
    network on the CPU kernels."""
    net.set_train(False)
    for _, cell in net.cells_and_names():
        if isinstance(cell, ConvBNAct):
            cell.fuse()
        # a graph compiled before fusing must not be reused: it still holds the BatchNorm nodes
        cache = getattr(cell, "compile_cache", None)
        if cache is not None:
            cache.clear()
    for name, param in net.parameters_and_names():  # new conv cells were named without their prefix
        param.name = name
    return net


def channel_shuffle(x: np.ndarray, groups: int) -> np.ndarray:
    """The textbook channel shuffle on a numpy array (N, C, ...): reshape to (N, g, C/g, ...), swap the two
    channel axes, flatten. Reference for tests and for weight converters."""
    n, c = x.shape[:2]
    rest = x.shape[2:]
    return x.reshape(n, groups, c // groups, *rest).swapaxes(1, 2).reshape(n, c, *rest)


class ChannelSplit(nn.Cell):
    """Channel shuffle fused with the channel split of the next unit (guideline G4).

    The paper's unit concatenates its two branches [a, b] and shuffles; the next unit splits the result into
    halves, so that each half takes half of a's and half of b's channels. Like the authors (Megvii's
    ShuffleNet-Series) and MindCV we shuffle by viewing the C channels as (C/2, 2) and transposing (the
    textbook reshape-transpose-flatten with C/2 groups, the inverse of the 2-group shuffle): the first half
    is the even channels (identity branch), the second the odd channels (main branch). This order is what
    their checkpoints expect; torchvision's (2-group shuffle after the concat) is a fixed permutation away,
    which the weight converters apply.

    Two equivalent kernels are used, chosen by what MindSpore runs fastest on CPU:
    - inference: two ``Gather`` ops with fixed indices (no data-dependent work, cheapest forward);
    - training: one transpose inside each sample, (N, C/2, 2, HW) -> (N, 2, C/2, HW), then a split into
      halves, whose backward is a transpose too (Gather's backward is a scatter-add, ~1.5x slower).
    MindCV's reshape over the batch axis is ~10-20x slower than either. The CPU accelerator's version
    (``mindshuffle.accel``) does it in one copy each way.
    """

    def __init__(self, channels: int):
        super().__init__()
        if channels % 2:
            raise ValueError(f"ChannelSplit needs an even channel count, got {channels}")
        self.channels = channels
        self.half = channels // 2
        self.even = Tensor(np.arange(0, channels, 2, dtype=np.int32))
        self.odd = Tensor(np.arange(1, channels, 2, dtype=np.int32))

    def construct(self, x: Tensor):
        if self.training:
            n, _, h, w = x.shape
            y = ops.reshape(x, (n, self.half, 2, h * w))
            y = ops.transpose(y, (0, 2, 1, 3))
            y = ops.reshape(y, (n, self.channels, h, w))
            a, b = ops.split(y, self.half, 1)
            return a, b
        return ops.gather(x, self.even, 1), ops.gather(x, self.odd, 1)


class GroupShuffle(nn.Cell):
    """ShuffleNet V1's channel shuffle with ``groups`` groups, written per sample (N, g, C/g, HW) -> (N, C/g, g, HW)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if channels % groups:
            raise ValueError(f"{channels} channels cannot be shuffled in {groups} groups")
        self.channels, self.groups = channels, groups
        perm = np.arange(channels).reshape(groups, channels // groups).T.reshape(-1).astype(np.int32)
        self.perm = Tensor(perm)

    def construct(self, x: Tensor) -> Tensor:
        if self.training:
            n, c, h, w = x.shape
            y = ops.reshape(x, (n, self.groups, c // self.groups, h * w))
            y = ops.transpose(y, (0, 2, 1, 3))
            return ops.reshape(y, (n, c, h, w))
        return ops.gather(x, self.perm, 1)


class ZeroPadMaxPool(nn.Cell):
    """``nn.MaxPool2d(kernel_size, stride, pad_mode="pad", padding=padding)`` for inputs >= 0 (after a ReLU).

    On such inputs zero padding equals the pool's -inf padding as long as every window holds a real element.
    MindSpore lowers the padded pool to MaxPool3DWithArgmax, several times slower forward and backward on CPU
    than the zero concat + unpadded ``MaxPool`` used here. Only the zeros that a window reaches are added.
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 1):
        super().__init__()
        if padding >= kernel_size:
            raise ValueError("padding must be smaller than the kernel")
        self.k, self.s, self.p = kernel_size, stride, padding
        self.pool = ops.MaxPool(kernel_size=kernel_size, strides=stride, pad_mode="valid")

    def after(self, size: int) -> int:
        """Zeros after the input along one axis that the padded pool's windows reach."""
        return max(0, self.p - (size + 2 * self.p - self.k) % self.s)

    def construct(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        p = self.p
        ah = self.after(h)
        aw = self.after(w)
        hp = h + p + ah
        if ah:
            x = ops.concat((ops.zeros((n, c, p, w), x.dtype), x, ops.zeros((n, c, ah, w), x.dtype)), 2)
        else:
            x = ops.concat((ops.zeros((n, c, p, w), x.dtype), x), 2)
        if aw:
            x = ops.concat((ops.zeros((n, c, hp, p), x.dtype), x, ops.zeros((n, c, hp, aw), x.dtype)), 3)
        else:
            x = ops.concat((ops.zeros((n, c, hp, p), x.dtype), x), 3)
        return self.pool(x)


class SqueezeExcite(nn.Cell):
    """Squeeze-and-excitation: global average -> 1x1 reduce -> ReLU -> 1x1 expand -> gate -> rescale."""

    def __init__(self, channels: int, reduction: int = 4, gate: str = "sigmoid", min_channels: int = 8):
        super().__init__()
        mid = max(channels // reduction, min_channels)
        self.reduce = nn.Conv2d(channels, mid, 1, has_bias=True)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(mid, channels, 1, has_bias=True)
        self.gate = make_activation(gate)

    def construct(self, x: Tensor) -> Tensor:
        s = ops.mean(x, (2, 3), True)
        s = self.gate(self.expand(self.act(self.reduce(s))))
        return x * s
