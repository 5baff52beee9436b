"""ShuffleNet V2 (Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV 2018).

Names follow the paper's Table 5 and Figure 3: conv1, maxpool, stage2-4 of basic units (Fig. 3c) led by a
down-sampling unit (Fig. 3d), conv5, global pool, classifier.

Two layouts of the down-sampling unit exist in the wild:
- ``"megvii"`` (default, the authors' ShuffleNet-Series and MindCV): the identity-side branch keeps ``in``
  channels and the main branch makes ``out - in``; classifier without bias. It reproduces the paper's FLOPs.
- ``"torchvision"``: both branches make ``out / 2``; classifier with bias.
The channel shuffle is fused into the split at each unit's input (see ``layers.ChannelSplit``).
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .base import ClassifierNet, feature_levels, init_like_authors
from ..layers import ChannelSplit, ConvBNAct, SqueezeExcite, ZeroPadMaxPool
from ..registry import register_model

__all__ = ["TwoBranchUnit", "ShuffleUnitV2", "ShuffleNetV2", "STAGE_WIDTHS"]

# Table 5: output channels of conv1, stage2, stage3, stage4, conv5 per width multiplier
STAGE_WIDTHS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
LAYOUTS = ("megvii", "torchvision")


class TwoBranchUnit(nn.Cell):
    """The V2 units' forward: stride 1 splits the input (the previous unit's shuffle, fused into
    ``self.split``) and keeps one half as it is; stride 2 feeds the input to both branches (``branch_proj`` and
    ``branch_main``). The branches' outputs are concatenated. Subclasses build the branches (V2, V2+)."""

    def construct(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x_proj, x_main = self.split(x)
            return ops.concat((x_proj, self.branch_main(x_main)), 1)
        return ops.concat((self.branch_proj(x), self.branch_main(x)), 1)


class ShuffleUnitV2(TwoBranchUnit):
    """One ShuffleNet V2 unit.

    stride 1 (basic unit): split the input into its even and odd channels (the previous unit's shuffle, fused);
    the even half passes through, the odd half goes through 1x1 -> 3x3 depthwise -> 1x1; concat.
    stride 2 (down-sampling unit): both branches see the whole input; the identity-side branch is
    3x3 depthwise (stride 2) -> 1x1 making ``proj_channels``; the main branch makes ``out - proj_channels``.

    Options used by the family's variants: ``se`` adds squeeze-and-excitation on the main branch's output;
    ``extra_dw`` puts a 3x3 depthwise conv before the first 1x1 of the main branch (ShuffleNet V2*, Table 7).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, proj_channels: int | None = None,
                 mid_channels: int | None = None, se: bool = False, extra_dw: bool = False):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride, self.se, self.extra_dw = stride, se, extra_dw
        if stride == 1:
            if in_channels != out_channels:
                raise ValueError("a basic unit keeps its channel count")
            self.split = ChannelSplit(in_channels)
            main_in = in_channels // 2
            main_out = out_channels - main_in
        else:
            proj_channels = in_channels if proj_channels is None else proj_channels
            self.branch_proj = nn.SequentialCell([
                ConvBNAct(in_channels, in_channels, 3, stride=2, groups=in_channels, act=None),
                ConvBNAct(in_channels, proj_channels, 1),
            ])
            main_in = in_channels
            main_out = out_channels - proj_channels
        mid = out_channels // 2 if mid_channels is None else mid_channels
        layers = []
        if extra_dw:
            layers.append(ConvBNAct(main_in, main_in, 3, groups=main_in, act=None))
        layers += [
            ConvBNAct(main_in, mid, 1),
            ConvBNAct(mid, mid, 3, stride=stride, groups=mid, act=None),
            ConvBNAct(mid, main_out, 1),
        ]
        if se:
            layers.append(SqueezeExcite(main_out, reduction=2))  # SE neurons = 1/2 channels (paper App. Table 2)
        self.branch_main = nn.SequentialCell(layers)


class ShuffleNetV2(ClassifierNet):
    """ShuffleNet V2 classifier / backbone.

    Args:
        width: width multiplier, one of 0.5, 1.0, 1.5, 2.0 (Table 5), or give ``widths`` directly.
        num_classes: classifier outputs (0: no classifier, ``construct`` returns pooled features).
        in_channels: input image channels.
        layout: ``"megvii"`` (authors', MindCV) or ``"torchvision"``.
        drop_rate: dropout before the classifier; defaults to 0.2 for x2.0 in the megvii layout, as the authors
            train it, else 0.
        se, extra_dw: unit options (SE; the V2* extra depthwise conv).
        maxpool_same: MindCV's pooling pads like TensorFlow's "same" (0 before, 1 after); the authors and
            torchvision pad 1 on each side. Only matters for weights trained with MindCV's code.
    """

    def __init__(self, width: float = 1.0, num_classes: int = 1000, in_channels: int = 3, layout: str = "megvii",
                 drop_rate: float | None = None, se: bool = False, extra_dw: bool = False,
                 widths: tuple | None = None, repeats: tuple = STAGE_REPEATS, maxpool_same: bool = False):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; choose one of {LAYOUTS}")
        if widths is None:
            if width not in STAGE_WIDTHS:
                raise ValueError(f"unknown width {width}; choose one of {sorted(STAGE_WIDTHS)}")
            widths = STAGE_WIDTHS[width]
        if drop_rate is None:
            drop_rate = 0.2 if (width == 2.0 and layout == "megvii") else 0.0
        self.width, self.layout, self.widths = width, layout, tuple(widths)
        self.num_classes, self.num_features = num_classes, widths[-1]

        self.conv1 = ConvBNAct(in_channels, widths[0], 3, stride=2)
        if maxpool_same:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        # the same pool as zero padding + unpadded pool (conv1 ends in a ReLU), ~3x faster on CPU
        self.pad_pool = None if maxpool_same else ZeroPadMaxPool(3, 2, 1)
        c_in = widths[0]
        stages = []
        for c_out, n in zip(widths[1:4], repeats):
            proj = c_in if layout == "megvii" else c_out // 2
            units = [ShuffleUnitV2(c_in, c_out, 2, proj_channels=proj, se=se, extra_dw=extra_dw)]
            units += [ShuffleUnitV2(c_out, c_out, 1, se=se, extra_dw=extra_dw) for _ in range(n - 1)]
            stages.append(nn.SequentialCell(units))
            c_in = c_out
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = ConvBNAct(c_in, widths[4], 1)
        self.classifier_bias = layout == "torchvision"
        self._make_head(num_classes, drop_rate)
        self.feature_info = feature_levels((widths[0], 4, "maxpool"), (widths[1], 8, "stage2"),
                                           (widths[2], 16, "stage3"), (widths[3], 32, "stage4"))
        init_like_authors(self)

    def stem(self, x: Tensor) -> Tensor:
        if self.pad_pool is not None:
            return self.pad_pool(self.conv1(x))
        return self.maxpool(self.conv1(x))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))

    def stages(self) -> list:
        return [self.stage2, self.stage3, self.stage4]

# ---------------------------------------------------------------------------------------------------------
# registered constructors

_PAPER = "ShuffleNet V2 (Ma et al., ECCV 2018)"
_MEGVII = "authors' ShuffleNet-Series README (ImageNet-1k val, 224 px)"
_TV = "torchvision ShuffleNet_V2 weights docs (ImageNet-1k val, 224 px)"

# width -> (trainable params megvii, flops M megvii, top1, top5) / (params tv, flops tv, top1, top5)
_MEGVII_META = {0.5: (1_365_792, 40.48, 61.1, 82.6), 1.0: (2_278_760, 145.81, 69.4, 88.9),
                1.5: (3_506_720, 298.97, 72.6, 90.6), 2.0: (7_402_600, 590.78, 75.0, 92.4)}
_TV_META = {0.5: (1_366_792, 40.48, 60.552, 81.746), 1.0: (2_278_604, 144.91, 69.362, 88.316),
            1.5: (3_503_624, 295.76, 72.996, 91.086), 2.0: (7_393_996, 583.25, 76.230, 93.006)}


def _authors(width: float) -> dict:
    p, f, t1, t5 = _MEGVII_META[width]
    return dict(family="shufflenet_v2", params=p, flops=f, top1=t1, top5=t5, source=_MEGVII, paper=_PAPER)


def _torchvision(width: float) -> dict:
    p, f, t1, t5 = _TV_META[width]
    return dict(family="shufflenet_v2", params=p, flops=f, top1=t1, top5=t5, source=_TV, paper=_PAPER,
                extra={"layout": "torchvision"})


@register_model(**_authors(0.5))
def shufflenet_v2_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x, the authors' layout (Table 5). ``layout='torchvision'`` switches."""
    return ShuffleNetV2(0.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_authors(1.0))
def shufflenet_v2_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 1.0x, the authors' layout (Table 5). ``layout='torchvision'`` switches."""
    return ShuffleNetV2(1.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_authors(1.5))
def shufflenet_v2_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x, the authors' layout (Table 5). ``layout='torchvision'`` switches."""
    return ShuffleNetV2(1.5, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_authors(2.0))
def shufflenet_v2_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 2.0x, the authors' layout (Table 5). ``layout='torchvision'`` switches."""
    return ShuffleNetV2(2.0, num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_torchvision(0.5))
def shufflenet_v2_x0_5_tv(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x in torchvision's layout, for torchvision weights."""
    return ShuffleNetV2(0.5, num_classes=num_classes, in_channels=in_channels, **{"layout": "torchvision", **kw})


@register_model(**_torchvision(1.0))
def shufflenet_v2_x1_0_tv(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 1.0x in torchvision's layout, for torchvision weights."""
    return ShuffleNetV2(1.0, num_classes=num_classes, in_channels=in_channels, **{"layout": "torchvision", **kw})


@register_model(**_torchvision(1.5))
def shufflenet_v2_x1_5_tv(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x in torchvision's layout, for torchvision weights."""
    return ShuffleNetV2(1.5, num_classes=num_classes, in_channels=in_channels, **{"layout": "torchvision", **kw})


@register_model(**_torchvision(2.0))
def shufflenet_v2_x2_0_tv(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 2.0x in torchvision's layout, for torchvision weights."""
    return ShuffleNetV2(2.0, num_classes=num_classes, in_channels=in_channels, **{"layout": "torchvision", **kw})
