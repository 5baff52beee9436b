"""ShuffleNet V2+ (Megvii's ShuffleNet-Series, "ShuffleNetV2+"): ShuffleNet V2 units with h-swish, SE and
kernel sizes / block types chosen by a one-shot search.

Facts from the authors' published code and README (megvii-model/ShuffleNet-Series, ShuffleNetV2+/):
- conv1: 3x3 stride 2 to 16 channels, BN, h-swish; no max pool, so the four stages run at strides 4..32.
- four stages of 4, 4, 8, 4 units; unit output widths Small 36/104/208/416, Medium 48/128/256/512,
  Large 68/168/336/672; the first unit of each stage down-samples.
- the searched choice for all three sizes (one per unit, 20 in all), 0/1/2 = ShuffleNet V2 unit with a 3x3/5x5/7x7
  depthwise conv, 3 = Xception-like unit (three 3x3 depthwise + 1x1 pairs):
  ``(0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2)``.
- stage 1 uses ReLU, stages 2-4 h-swish; SE (1x1 conv -> BN -> ReLU -> 1x1 conv -> h-sigmoid, reduction 4,
  convs without bias) at the end of the main branch in stages 3-4.
- head: 1x1 conv to 1280 (BN, h-swish), global average pool, SE on the pooled vector, a 1280 -> 1280 FC (no bias)
  with h-swish, dropout 0.2, classifier without bias.
- the down-sampling unit's identity-side branch uses the same kernel size as its main branch.
Published (authors' README, ImageNet-1k val, 224 px): Small 156 MFLOPs, 5.1 M params, 74.1 % top-1;
Medium 222 M, 5.6 M, 75.7 %; Large 360 M, 6.7 M, 77.1 %.
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .base import ClassifierNet, feature_levels, init_like_authors
from ..layers import ChannelSplit, ConvBNAct
from ..registry import register_model
from .shufflenet_v2 import TwoBranchUnit

__all__ = ["ShuffleNetV2Plus", "ShuffleUnitV2Plus", "SqueezeExciteBN", "ARCHITECTURE", "PLUS_WIDTHS"]

# the authors' searched architecture (their train.py and network.py use the same list for every size)
ARCHITECTURE = (0, 0, 3, 1, 1, 1, 0, 0, 2, 0, 2, 1, 1, 0, 2, 0, 2, 1, 3, 2)
BLOCK_KINDS = ("shuffle3", "shuffle5", "shuffle7", "xception")
# conv1, stage2..stage5, conv_last
PLUS_WIDTHS = {
    "small": (16, 36, 104, 208, 416, 1280),
    "medium": (16, 48, 128, 256, 512, 1280),
    "large": (16, 68, 168, 336, 672, 1280),
}
PLUS_REPEATS = (4, 4, 8, 4)


class SqueezeExciteBN(nn.Cell):
    """V2+'s squeeze-and-excitation: pool -> 1x1 conv (C/4, no bias) -> BN -> ReLU -> 1x1 conv (C) -> h-sigmoid."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        mid = channels // reduction
        self.reduce = nn.Conv2d(channels, mid, 1, has_bias=False)
        self.bn = nn.BatchNorm2d(mid, momentum=0.9)
        self.act = nn.ReLU()
        self.expand = nn.Conv2d(mid, channels, 1, has_bias=False)
        self.gate = nn.HSigmoid()

    def construct(self, x: Tensor) -> Tensor:
        s = ops.mean(x, (2, 3), True)
        s = self.gate(self.expand(self.act(self.bn(self.reduce(s)))))
        return x * s


class ShuffleUnitV2Plus(TwoBranchUnit):
    """One V2+ unit: a ShuffleNet V2 unit (Fig. 3c/d of the paper) of one of four searched kinds.

    ``shuffle3/5/7``: main branch 1x1 -> kxk depthwise -> 1x1 (act after the 1x1 convs);
    ``xception``: main branch (3x3 depthwise -> 1x1) three times. ``act`` is ``"relu"`` or ``"hswish"``;
    ``se`` appends :class:`SqueezeExciteBN` to the main branch. A stride-2 unit's identity-side branch is
    kxk depthwise (stride 2) -> 1x1 keeping the input width; the main branch makes ``out - in``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, kind: str = "shuffle3",
                 act: str = "relu", se: bool = False):
        super().__init__()
        if kind not in BLOCK_KINDS:
            raise ValueError(f"unknown block kind {kind!r}; choose one of {BLOCK_KINDS}")
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride, self.kind = stride, kind
        k = 3 if kind == "xception" else int(kind[-1])
        mid = out_channels // 2
        if stride == 1:
            if in_channels != out_channels:
                raise ValueError("a basic unit keeps its channel count")
            self.split = ChannelSplit(in_channels)
            inp = in_channels // 2
        else:
            inp = in_channels
            self.branch_proj = nn.SequentialCell([
                ConvBNAct(inp, inp, k, stride=2, groups=inp, act=None),
                ConvBNAct(inp, inp, 1, act=act),
            ])
        outputs = out_channels - inp
        if kind == "xception":
            # The authors' code strides all three depthwise convs; their searched architecture never puts an
            # Xception unit first in a stage, so only the stride-1 form exists there. We stride the first one.
            layers = [
                ConvBNAct(inp, inp, 3, stride=stride, groups=inp, act=None),
                ConvBNAct(inp, mid, 1, act=act),
                ConvBNAct(mid, mid, 3, groups=mid, act=None),
                ConvBNAct(mid, mid, 1, act=act),
                ConvBNAct(mid, mid, 3, groups=mid, act=None),
                ConvBNAct(mid, outputs, 1, act=act),
            ]
        else:
            layers = [
                ConvBNAct(inp, mid, 1, act=act),
                ConvBNAct(mid, mid, k, stride=stride, groups=mid, act=None),
                ConvBNAct(mid, outputs, 1, act=act),
            ]
        if se:
            layers.append(SqueezeExciteBN(outputs))
        self.branch_main = nn.SequentialCell(layers)


class ShuffleNetV2Plus(ClassifierNet):
    """ShuffleNet V2+ classifier / backbone.

    Args:
        size: ``"small"``, ``"medium"`` or ``"large"`` (or give ``widths``).
        num_classes: classifier outputs (0: no classifier).
        in_channels: input image channels.
        architecture: one block choice per unit (0-3, see ``BLOCK_KINDS``); default the authors' searched one.
        drop_rate: dropout before the classifier (``None``: 0.2, as the authors train).
    """

    def __init__(self, size: str = "large", num_classes: int = 1000, in_channels: int = 3,
                 architecture: tuple = ARCHITECTURE, drop_rate: float | None = None, widths: tuple | None = None,
                 repeats: tuple = PLUS_REPEATS):
        super().__init__()
        if widths is None:
            if size not in PLUS_WIDTHS:
                raise ValueError(f"unknown size {size!r}; choose one of {sorted(PLUS_WIDTHS)}")
            widths = PLUS_WIDTHS[size]
        architecture = tuple(int(a) for a in architecture)
        if len(architecture) != sum(repeats):
            raise ValueError(f"architecture needs {sum(repeats)} block choices, got {len(architecture)}")
        if any(a not in range(len(BLOCK_KINDS)) for a in architecture):
            raise ValueError(f"block choices must be 0..{len(BLOCK_KINDS) - 1}, got {architecture}")
        self.size, self.widths, self.architecture = size, tuple(widths), architecture
        self.num_classes, self.num_features = num_classes, widths[-1]

        self.conv1 = ConvBNAct(in_channels, widths[0], 3, stride=2, act="hswish")
        c_in, idx, stages = widths[0], 0, []
        for s, (c_out, n) in enumerate(zip(widths[1:5], repeats)):
            act = "relu" if s == 0 else "hswish"
            se = s >= 2
            units = []
            for i in range(n):
                kind = BLOCK_KINDS[architecture[idx]]
                idx += 1
                units.append(ShuffleUnitV2Plus(c_in, c_out, 2 if i == 0 else 1, kind=kind, act=act, se=se))
                c_in = c_out
            stages.append(nn.SequentialCell(units))
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.conv_last = ConvBNAct(c_in, widths[5], 1, act="hswish")
        self.last_se = SqueezeExciteBN(widths[5])
        self.fc = nn.Dense(widths[5], widths[5], has_bias=False)
        self.fc_act = nn.HSwish()
        self._make_head(num_classes, 0.2 if drop_rate is None else drop_rate)
        self.feature_info = feature_levels((widths[0], 2, "conv1"), (widths[1], 4, "stage2"),
                                           (widths[2], 8, "stage3"), (widths[3], 16, "stage4"),
                                           (widths[4], 32, "stage5"))
        self._init_weights()

    def _init_weights(self) -> None:
        """The authors' initialisation, with N(0, 0.01) for the SE convs too."""
        se_convs = {id(c) for _, se in self.cells_and_names() if isinstance(se, SqueezeExciteBN)
                    for c in (se.reduce, se.expand)}
        init_like_authors(self, small=lambda name, cell: id(cell) in se_convs)

    def stem(self, x: Tensor) -> Tensor:
        return self.conv1(x)

    def stages(self) -> list:
        return [self.stage2, self.stage3, self.stage4, self.stage5]

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.stage5(self.stage4(self.stage3(self.stage2(x))))
        return self.conv_last(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.last_se(ops.mean(x, (2, 3), True))
        x = self.fc_act(self.fc(ops.flatten(x)))
        if pre_logits:
            return x
        return self.classifier(self.dropout(x))

# ---------------------------------------------------------------------------------------------------------
# registered constructors

_SOURCE = "authors' ShuffleNet-Series README, ShuffleNetV2+ (ImageNet-1k val, 224 px)"
_PAPER = "ShuffleNet V2+ (Megvii ShuffleNet-Series; not in the ECCV 2018 paper)"
# size -> (trainable params, our MFLOPs, top1, top5, published MFLOPs, published params M)
_META = {
    "small": (5_137_116, 155.85, 74.1, 91.7, 156, 5.1),
    "medium": (5_679_840, 222.25, 75.7, 92.6, 222, 5.6),
    "large": (6_768_220, 360.05, 77.1, 93.3, 360, 6.7),
}


def _plus(size: str) -> dict:
    p, f, t1, t5, pub_f, pub_p = _META[size]
    return dict(family="shufflenet_v2_plus", params=p, flops=f, top1=t1, top5=t5, source=_SOURCE, paper=_PAPER,
                extra={"flops_published": pub_f, "params_published_m": pub_p})


@register_model(**_plus("small"))
def shufflenet_v2_plus_small(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2Plus:
    """ShuffleNet V2+ Small (authors' searched architecture)."""
    return ShuffleNetV2Plus("small", num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_plus("medium"))
def shufflenet_v2_plus_medium(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2Plus:
    """ShuffleNet V2+ Medium (authors' searched architecture)."""
    return ShuffleNetV2Plus("medium", num_classes=num_classes, in_channels=in_channels, **kw)


@register_model(**_plus("large"))
def shufflenet_v2_plus_large(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2Plus:
    """ShuffleNet V2+ Large (authors' searched architecture)."""
    return ShuffleNetV2Plus("large", num_classes=num_classes, in_channels=in_channels, **kw)
