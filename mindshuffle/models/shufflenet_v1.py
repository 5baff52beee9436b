"""ShuffleNet V1 (Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
Devices", CVPR 2018): the predecessor ShuffleNet V2's guidelines were drawn against.

A unit is 1x1 group conv -> channel shuffle -> 3x3 depthwise -> 1x1 group conv, added to the input (stride 1)
or concatenated with a 3x3 average pool of it (stride 2). The first 1x1 of the network's first unit is not
grouped: its input has too few channels.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .base import ClassifierNet, feature_levels, init_like_authors
from ..layers import ConvBNAct, GroupShuffle
from ..registry import register_model

__all__ = ["ShuffleUnitV1", "ShuffleNetV1", "ZeroPadAvgPool", "v1_widths"]

# Table 1 of the V1 paper: stage2-4 output channels at 1x for each group count
_BASE = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088), 8: (384, 768, 1536)}
_SCALES = (0.5, 1.0, 1.5, 2.0)


def v1_widths(groups: int, scale: float) -> tuple:
    """(conv1, stage2, stage3, stage4) channels.

    conv1 has 24 channels at 1x and 1.5x, 48 at 2x and 12 at 0.5x (16 for 8 groups), as in the authors' code.
    Stage widths are Table 1's times ``scale``, rounded to a multiple of 4*groups so that the bottleneck
    (a quarter of the width) splits into equal groups; for the authors' g=3 and g=8 models this rounding
    changes nothing.
    """
    if groups not in _BASE:
        raise ValueError(f"groups must be one of {sorted(_BASE)}, got {groups}")
    if scale not in _SCALES:
        raise ValueError(f"scale must be one of {_SCALES}, got {scale}")
    conv1 = {0.5: 16 if groups == 8 else 12, 1.0: 24, 1.5: 24, 2.0: 48}[scale]
    q = 4 * groups
    stages = tuple(int(c * scale / q + 0.5) * q for c in _BASE[groups])
    return (conv1,) + stages


class ZeroPadAvgPool(nn.Cell):
    """Average pool of the input zero-padded by ``padding`` on each side; every window is divided by
    ``kernel_size`` squared, padding included.

    This computes what ``nn.AvgPool2d(kernel_size, stride, pad_mode="pad", padding=padding)`` computes (it counts
    the padding as zeros), bit for bit on CPU (tests/test_ascend_build.py), but as a zero pad followed by an
    unpadded pool: MindSpore 2.7.1 refuses to build a padded ``nn.AvgPool2d`` for Ascend 910B and 910_93
    (Atlas A2/A3), and ONNX export can express both pieces. The two are operators, not cells, so the pool
    stays one leaf cell for ``mindshuffle.research.analysis`` (its MAC is input + output, as before).
    """

    def __init__(self, kernel_size: int = 3, stride: int = 2, padding: int = 1):
        super().__init__()
        self.pad = ops.Pad(((0, 0), (0, 0), (padding, padding), (padding, padding)))
        self.pool = ops.AvgPool(kernel_size=kernel_size, strides=stride, pad_mode="valid")

    def construct(self, x: Tensor) -> Tensor:
        return self.pool(self.pad(x))


class ShuffleUnitV1(nn.Cell):
    """ShuffleNet V1 unit (V1 paper, Fig. 2b/2c)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, group_first: bool = True):
        super().__init__()
        self.stride = stride
        main_out = out_channels - in_channels if stride == 2 else out_channels
        mid = out_channels // 4
        self.groups = groups
        self.pw1 = ConvBNAct(in_channels, mid, 1, groups=groups if group_first else 1)
        self.use_shuffle = groups > 1
        self.shuffle = GroupShuffle(mid, groups) if groups > 1 else nn.Identity()
        self.dw = ConvBNAct(mid, mid, 3, stride=stride, groups=mid, act=None)
        self.pw2 = ConvBNAct(mid, main_out, 1, groups=groups, act=None)
        if stride == 2:
            # the authors' shortcut: 3x3 average pool, padding 1 counted as zeros (builds on every Ascend SoC)
            self.pool = ZeroPadAvgPool(3, 2, 1)
        self.relu = nn.ReLU()

    def set_pool_same(self) -> None:
        """Pool the stride-2 shortcut like MindCV (``pad_mode="same"``: 0 before, 1 after); MindSpore builds
        this pool on Ascend 910B/910_93 too. A stride-1 unit has no pool and is left as it is."""
        if self.stride == 2:
            self.pool = nn.AvgPool2d(kernel_size=3, stride=2, pad_mode="same")

    def construct(self, x: Tensor) -> Tensor:
        y = self.pw1(x)
        if self.use_shuffle:
            y = self.shuffle(y)
        y = self.pw2(self.dw(y))
        if self.stride == 1:
            return self.relu(x + y)
        return self.relu(ops.concat((self.pool(x), y), 1))


class ShuffleNetV1(ClassifierNet):
    """ShuffleNet V1 with ``groups`` in {1, 2, 3, 4, 8} and width ``scale`` in {0.5, 1.0, 1.5, 2.0}."""

    def set_authors_shuffle(self) -> "ShuffleNetV1":
        """Shuffle like the authors and MindCV: the C bottleneck channels viewed as (C/g, g) and transposed, i.e.
        ``GroupShuffle(C, C // g)``, instead of mindshuffle's (g, C/g) view."""
        for _, cell in self.cells_and_names():
            if isinstance(cell, ShuffleUnitV1) and cell.use_shuffle and cell.shuffle.groups == cell.groups:
                c = cell.shuffle.channels
                cell.shuffle = GroupShuffle(c, c // cell.groups)
        return self

    def uses_authors_shuffle(self) -> bool:
        return any(isinstance(c, ShuffleUnitV1) and c.use_shuffle and c.shuffle.groups != c.groups
                   for _, c in self.cells_and_names())

    def __init__(self, groups: int = 3, scale: float = 1.0, num_classes: int = 1000, in_channels: int = 3,
                 drop_rate: float = 0.0, repeats: tuple = (4, 8, 4)):
        super().__init__()
        widths = v1_widths(groups, scale)
        self.groups, self.scale, self.widths = groups, scale, widths
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.conv1 = ConvBNAct(in_channels, widths[0], 3, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        c_in = widths[0]
        stages = []
        for i, (c_out, n) in enumerate(zip(widths[1:], repeats)):
            units = [ShuffleUnitV1(c_in, c_out, 2, groups, group_first=i > 0)]
            units += [ShuffleUnitV1(c_out, c_out, 1, groups) for _ in range(n - 1)]
            stages.append(nn.SequentialCell(units))
            c_in = c_out
        self.stage2, self.stage3, self.stage4 = stages
        self._make_head(num_classes, drop_rate)
        self.feature_info = feature_levels((widths[0], 4, "maxpool"), (widths[1], 8, "stage2"),
                                           (widths[2], 16, "stage3"), (widths[3], 32, "stage4"))
        init_like_authors(self)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))

    def forward_features(self, x: Tensor) -> Tensor:
        return self.stage4(self.stage3(self.stage2(self.stem(x))))

    def stages(self) -> list:
        return [self.stage2, self.stage3, self.stage4]

# ---------------------------------------------------------------------------------------------------------
# registered constructors. Params: the authors' counts (1000 classes); FLOPs and accuracy: the authors'
# ShuffleNet-Series README (g=3, g=8) - other group counts have no published weights.

_AUTHORS = "authors' ShuffleNet-Series README (ImageNet-1k val, 224 px)"
_META = {  # (groups, scale): (flops M, top1, top5)
    (3, 0.5): (38, 57.3, 80.0), (3, 1.0): (138, 67.8, 87.7), (3, 1.5): (292, 71.6, 90.2), (3, 2.0): (524, 74.1, 91.4),
    (8, 0.5): (40, 58.8, 81.0), (8, 1.0): (138, 68.0, 86.4), (8, 1.5): (290, 71.0, 89.6), (8, 2.0): (522, 72.9, 90.8),
}


# trainable parameters with 1000 classes (g=3 and g=8 equal the authors' models exactly; a test rebuilds all)
_PARAMS = {
    1: (533_484, 1_530_936, 2_992_032, 4_917_744), 2: (643_320, 1_732_848, 3_272_400, 5_256_896),
    3: (717_324, 1_864_728, 3_441_168, 5_449_776), 4: (777_592, 1_967_344, 3_574_536, 5_592_528),
    8: (1_010_448, 2_433_768, 4_268_952, 6_521_232),
}


def _v1(groups: int, scale: float, alias: str) -> dict:
    """register_model's metadata; ``alias`` is MindCV's spelling (shufflenet_v1_g3_10 for g3 x1.0)."""
    flops, top1, top5 = _META.get((groups, scale), (None, None, None))
    return dict(family="shufflenet_v1", flops=flops, params=_PARAMS[groups][_SCALES.index(scale)], top1=top1,
                top5=top5, source=_AUTHORS if top1 else "", aliases=(alias,),
                paper="ShuffleNet (Zhang et al., CVPR 2018)")


@register_model(**_v1(1, 0.5, "shufflenet_v1_g1_05"))
def shufflenet_v1_g1_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 0.5x with 1 groups."""
    return ShuffleNetV1(1, 0.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(1, 1.0, "shufflenet_v1_g1_10"))
def shufflenet_v1_g1_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.0x with 1 groups."""
    return ShuffleNetV1(1, 1.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(1, 1.5, "shufflenet_v1_g1_15"))
def shufflenet_v1_g1_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.5x with 1 groups."""
    return ShuffleNetV1(1, 1.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(1, 2.0, "shufflenet_v1_g1_20"))
def shufflenet_v1_g1_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 2.0x with 1 groups."""
    return ShuffleNetV1(1, 2.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(2, 0.5, "shufflenet_v1_g2_05"))
def shufflenet_v1_g2_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 0.5x with 2 groups."""
    return ShuffleNetV1(2, 0.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(2, 1.0, "shufflenet_v1_g2_10"))
def shufflenet_v1_g2_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.0x with 2 groups."""
    return ShuffleNetV1(2, 1.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(2, 1.5, "shufflenet_v1_g2_15"))
def shufflenet_v1_g2_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.5x with 2 groups."""
    return ShuffleNetV1(2, 1.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(2, 2.0, "shufflenet_v1_g2_20"))
def shufflenet_v1_g2_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 2.0x with 2 groups."""
    return ShuffleNetV1(2, 2.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(3, 0.5, "shufflenet_v1_g3_05"))
def shufflenet_v1_g3_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 0.5x with 3 groups."""
    return ShuffleNetV1(3, 0.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(3, 1.0, "shufflenet_v1_g3_10"))
def shufflenet_v1_g3_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.0x with 3 groups."""
    return ShuffleNetV1(3, 1.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(3, 1.5, "shufflenet_v1_g3_15"))
def shufflenet_v1_g3_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.5x with 3 groups."""
    return ShuffleNetV1(3, 1.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(3, 2.0, "shufflenet_v1_g3_20"))
def shufflenet_v1_g3_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 2.0x with 3 groups."""
    return ShuffleNetV1(3, 2.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(4, 0.5, "shufflenet_v1_g4_05"))
def shufflenet_v1_g4_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 0.5x with 4 groups."""
    return ShuffleNetV1(4, 0.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(4, 1.0, "shufflenet_v1_g4_10"))
def shufflenet_v1_g4_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.0x with 4 groups."""
    return ShuffleNetV1(4, 1.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(4, 1.5, "shufflenet_v1_g4_15"))
def shufflenet_v1_g4_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.5x with 4 groups."""
    return ShuffleNetV1(4, 1.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(4, 2.0, "shufflenet_v1_g4_20"))
def shufflenet_v1_g4_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 2.0x with 4 groups."""
    return ShuffleNetV1(4, 2.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(8, 0.5, "shufflenet_v1_g8_05"))
def shufflenet_v1_g8_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 0.5x with 8 groups."""
    return ShuffleNetV1(8, 0.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(8, 1.0, "shufflenet_v1_g8_10"))
def shufflenet_v1_g8_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.0x with 8 groups."""
    return ShuffleNetV1(8, 1.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(8, 1.5, "shufflenet_v1_g8_15"))
def shufflenet_v1_g8_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 1.5x with 8 groups."""
    return ShuffleNetV1(8, 1.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_v1(8, 2.0, "shufflenet_v1_g8_20"))
def shufflenet_v1_g8_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV1:
    """ShuffleNet V1 2.0x with 8 groups."""
    return ShuffleNetV1(8, 2.0, num_classes=num_classes, in_channels=in_channels, **kw)
