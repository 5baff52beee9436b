"""Large ShuffleNet V2 models (paper Table 6 and Appendix Table 2): ShuffleNet V2-50 and SE-ShuffleNet V2-164.

ShuffleNet V2-50 (paper, Appendix Table 2; no released code): ResNet-50's depth built from ShuffleNet V2 units.
conv1 3x3/64 stride 2, 3x3 max pool, stages conv2_x..conv5_x of 3, 4, 6, 3 units making 244, 488, 976, 1952
channels (down-sampling in conv3_1, conv4_1, conv5_1 only), conv6 1x1/2048, pool, fc. The paper does not draw
conv2_1, which changes the width (64 -> 244) at stride 1; we use a down-sampling unit without the stride
(:class:`WideningUnit`: both branches see the whole input and make half of the output each, as the authors'
large-model code does). 2.3 GFLOPs, 22.8 % top-1 error (paper Table 6).

SE-ShuffleNet V2-164 follows the authors' released ShuffleNetV2.Large code (megvii-model/ShuffleNet-Series), the
model behind the published 12.7 GFLOPs, 140.7 M params and 18.56 % top-1 error. Paper and code disagree:

==========================  =====================================  =======================================
                            paper (Appendix Table 2, Fig. 2c)      authors' code (followed here)
==========================  =====================================  =======================================
unit widths conv2..conv5    340, 680, 1360, 2720                   256, 512, 1024, 2048
3x3 conv of the main branch depthwise                              group conv, 8 groups, BN + ReLU
first unit's identity side  (ShuffleNet V2 down-sampling unit)     full 3x3 conv (stride), BN
after a stride-2 unit       -                                      1x1 conv + BN + ReLU on the whole output
SE neurons                  1/2 of the block's channels            all of them (FC C -> C -> C, with bias)
last conv                   conv6 1x1, 2048                        3x3, 1280, BN + ReLU
==========================  =====================================  =======================================

Both keep: stem of three 3x3 convs (64 stride 2, 64, 128) and max pool, 10/10/23/10 units, the residual path
in every unit but the first of a stage (x_main + branch(x_main), ReLU after the concat), SE before that add,
dropout 0.2. The code's auxiliary classifiers after stage2/3/4 (max pool, 1x1 and 3x3 conv-BN-ReLU, pool,
FC; losses weighted 1.0 main, 0.7/0.5/0.3 for the 14/28/56 px heads) are an option (``aux_heads=True``)
that only acts in training; they are not built by default and never run in inference.
The published 140.7 M parameters include the auxiliary heads (140,685,664 here with them, 125,120,936
without). Where the code uses BN eps 1e-9 we keep 1e-5 (no effect on shapes; safer in fp16).
"""
from __future__ import annotations

from mindspore import Tensor, nn, ops

from .base import ClassifierNet, feature_levels, init_like_authors
from ..layers import ChannelSplit, ConvBNAct, SqueezeExcite
from ..registry import register_model
from .shufflenet_v2 import ShuffleUnitV2

__all__ = ["ShuffleNetV2_50", "SEShuffleNetV2Large", "WideningUnit", "ResidualSEUnit", "AuxHead",
           "AuxHeadLoss", "AUX_LOSS_WEIGHTS"]

V2_50_WIDTHS = (64, 244, 488, 976, 1952, 2048)   # conv1, conv2_x..conv5_x, conv6 (Appendix Table 2)
V2_50_REPEATS = (3, 4, 6, 3)
V2_164_STEM = (64, 64, 128)
V2_164_WIDTHS = (256, 512, 1024, 2048)           # unit output widths (authors' code: 2 x (2 x 64..512))
V2_164_REPEATS = (10, 10, 23, 10)
V2_164_HEAD = 1280
AUX_LOSS_WEIGHTS = (1.0, 0.7, 0.5, 0.3)          # main, 14 px (after stage4), 28 px (stage3), 56 px (stage2)


class _LargeBase(ClassifierNet):
    """What both large networks share: head, classifier swap, feature description."""

    def stages(self) -> list:
        return [self.stage2, self.stage3, self.stage4, self.stage5]

    def reset_classifier(self, num_classes: int) -> None:
        """New, freshly initialised classifier for ``num_classes`` (fine-tuning). Auxiliary heads are dropped."""
        super().reset_classifier(num_classes)
        if getattr(self, "aux_heads", False):
            self.aux_heads = False
            del self.aux56, self.aux28, self.aux14
            self.aux56 = self.aux28 = self.aux14 = nn.Identity()


# ---------------------------------------------------------------------------------------------------------
# ShuffleNet V2-50

class WideningUnit(nn.Cell):
    """conv2_1 of ShuffleNet V2-50: a down-sampling unit (Fig. 3d) without the stride, which widens
    ``in_channels`` to ``out_channels``; each branch makes half of the output."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.branch_proj = nn.SequentialCell([
            ConvBNAct(in_channels, in_channels, 3, groups=in_channels, act=None),
            ConvBNAct(in_channels, half, 1),
        ])
        self.branch_main = nn.SequentialCell([
            ConvBNAct(in_channels, half, 1),
            ConvBNAct(half, half, 3, groups=half, act=None),
            ConvBNAct(half, out_channels - half, 1),
        ])

    def construct(self, x: Tensor) -> Tensor:
        return ops.concat((self.branch_proj(x), self.branch_main(x)), 1)


class ShuffleNetV2_50(_LargeBase):  # noqa: N801 (the paper's name)
    """ShuffleNet V2-50 (paper Appendix Table 2): conv1, max pool, four stages of ShuffleNet V2 units, conv6."""

    classifier_bias = False

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, widths: tuple = V2_50_WIDTHS,
                 repeats: tuple = V2_50_REPEATS, drop_rate: float | None = None):
        super().__init__()
        self.widths, self.num_classes, self.num_features = tuple(widths), num_classes, widths[-1]
        self.conv1 = ConvBNAct(in_channels, widths[0], 3, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        c_in, stages = widths[0], []
        for s, (c_out, n) in enumerate(zip(widths[1:5], repeats)):
            first = WideningUnit(c_in, c_out) if s == 0 else ShuffleUnitV2(c_in, c_out, 2, proj_channels=c_in)
            units = [first] + [ShuffleUnitV2(c_out, c_out, 1) for _ in range(n - 1)]
            stages.append(nn.SequentialCell(units))
            c_in = c_out
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.conv6 = ConvBNAct(c_in, widths[5], 1)
        self._make_head(num_classes, 0.0 if drop_rate is None else drop_rate)
        self.feature_info = feature_levels((widths[0], 4, "maxpool"), (widths[1], 4, "stage2"),
                                           (widths[2], 8, "stage3"), (widths[3], 16, "stage4"),
                                           (widths[4], 32, "stage5"))
        init_like_authors(self)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stage5(self.stage4(self.stage3(self.stage2(self.stem(x)))))
        return self.conv6(x)

    def construct(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


# ---------------------------------------------------------------------------------------------------------
# SE-ShuffleNet V2-164

class ResidualSEUnit(nn.Cell):
    """SE-ShuffleNet V2-164's unit (authors' ShuffleNetV2.Large code; paper Appendix Fig. 2c in spirit).

    The input is split into its even/odd channels (fused shuffle). The odd half goes through
    1x1 -> 3x3 group conv (``groups``, stride) -> 1x1 -> SE; in a stage's first unit the even half goes through a
    3x3 conv (stride) instead of passing through, elsewhere the odd half is added back (residual path).
    ReLU after the concat; after a stride-2 unit a 1x1 conv-BN-ReLU mixes the whole output.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, first: bool, groups: int = 8,
                 se: bool = True):
        super().__init__()
        if not first and (stride != 1 or in_channels != out_channels):
            raise ValueError("only a stage's first unit may change width or stride")
        half_in, half_out = in_channels // 2, out_channels // 2
        self.first, self.down_sample = first, stride == 2
        self.split = ChannelSplit(in_channels)
        self.branch_proj = ConvBNAct(half_in, half_out, 3, stride=stride, act=None) if first else nn.Identity()
        self.branch_main = nn.SequentialCell([
            ConvBNAct(half_in, half_out, 1),
            ConvBNAct(half_out, half_out, 3, stride=stride, groups=groups),
            ConvBNAct(half_out, half_out, 1, act=None),
        ])
        # FC C -> C -> C with bias and sigmoid, as 1x1 convs
        self.se = SqueezeExcite(half_out, reduction=1) if se else nn.Identity()
        self.relu = nn.ReLU()
        self.down = ConvBNAct(out_channels, out_channels, 1) if stride == 2 else nn.Identity()

    def construct(self, x: Tensor) -> Tensor:
        x_proj, x_main = self.split(x)
        y = self.se(self.branch_main(x_main))
        if self.first:
            x_proj = self.branch_proj(x_proj)
        else:
            y = y + x_main
        out = self.relu(ops.concat((x_proj, y), 1))
        if self.down_sample:
            out = self.down(out)
        return out


class AuxHead(nn.Cell):
    """Auxiliary classifier of the authors' large-model training: max pool (stride 2), 1x1 and 3x3
    conv-BN-ReLU, global pool, FC."""

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        self.conv = nn.SequentialCell([ConvBNAct(in_channels, channels, 1), ConvBNAct(channels, channels, 3)])
        self.fc = nn.Dense(channels, num_classes)

    def construct(self, x: Tensor) -> Tensor:
        return self.fc(ops.mean(self.conv(self.maxpool(x)), (2, 3)))


class SEShuffleNetV2Large(_LargeBase):
    """SE-ShuffleNet V2-164 as the authors released it (ShuffleNetV2.Large).

    Args:
        num_classes, in_channels: as usual.
        aux_heads: build the three auxiliary classifiers; in training ``construct`` then returns
            ``(logits, aux14, aux28, aux56)`` (use :class:`AuxHeadLoss`); in inference only the logits.
        drop_rate: dropout before the classifier (``None``: 0.2, the authors').
    """

    classifier_bias = True

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, aux_heads: bool = False,
                 drop_rate: float | None = None, stem: tuple = V2_164_STEM, widths: tuple = V2_164_WIDTHS,
                 repeats: tuple = V2_164_REPEATS, head_channels: int = V2_164_HEAD, groups: int = 8):
        super().__init__()
        self.widths, self.num_classes, self.num_features = tuple(widths), num_classes, head_channels
        self.conv1 = nn.SequentialCell([
            ConvBNAct(in_channels, stem[0], 3, stride=2),
            ConvBNAct(stem[0], stem[1], 3),
            ConvBNAct(stem[1], stem[2], 3),
        ])
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)
        c_in, stages = stem[2], []
        for s, (c_out, n) in enumerate(zip(widths, repeats)):
            units = [ResidualSEUnit(c_in, c_out, 1 if s == 0 else 2, first=True, groups=groups)]
            units += [ResidualSEUnit(c_out, c_out, 1, first=False, groups=groups) for _ in range(n - 1)]
            stages.append(nn.SequentialCell(units))
            c_in = c_out
        self.stage2, self.stage3, self.stage4, self.stage5 = stages
        self.conv_last = ConvBNAct(c_in, head_channels, 3)
        self._make_head(num_classes, 0.2 if drop_rate is None else drop_rate)
        self.aux_heads = bool(aux_heads) and num_classes > 0
        if self.aux_heads:
            self.aux56 = AuxHead(widths[0], widths[0], num_classes)
            self.aux28 = AuxHead(widths[1], widths[1], num_classes)
            self.aux14 = AuxHead(widths[2], widths[2], num_classes)
        self.feature_info = feature_levels((stem[2], 4, "maxpool"), (widths[0], 4, "stage2"),
                                           (widths[1], 8, "stage3"), (widths[2], 16, "stage4"),
                                           (widths[3], 32, "stage5"))
        init_like_authors(self)

    def stem(self, x: Tensor) -> Tensor:
        return self.maxpool(self.conv1(x))

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stage5(self.stage4(self.stage3(self.stage2(self.stem(x)))))
        return self.conv_last(x)

    def construct(self, x: Tensor):
        if self.aux_heads and self.training:
            x = self.stage2(self.stem(x))
            a56 = self.aux56(x)
            x = self.stage3(x)
            a28 = self.aux28(x)
            x = self.stage4(x)
            a14 = self.aux14(x)
            logits = self.forward_head(self.conv_last(self.stage5(x)))
            return logits, a14, a28, a56
        return self.forward_head(self.forward_features(x))


class AuxHeadLoss(nn.Cell):
    """Weighted sum of ``loss_fn`` over ``(logits, aux14, aux28, aux56)``; plain ``loss_fn`` on one tensor."""

    def __init__(self, loss_fn: nn.Cell, weights: tuple = AUX_LOSS_WEIGHTS):
        super().__init__()
        self.loss_fn = loss_fn
        self.weights = tuple(float(w) for w in weights)

    def construct(self, logits, label):
        if isinstance(logits, tuple):
            total = self.loss_fn(logits[0], label) * self.weights[0]
            for i in range(1, len(logits)):
                total = total + self.loss_fn(logits[i], label) * self.weights[i]
            return total
        return self.loss_fn(logits, label)


# ---------------------------------------------------------------------------------------------------------
# registered constructors

_PAPER = "ShuffleNet V2 (Ma et al., ECCV 2018), Table 6 and Appendix Table 2"


def shufflenet_v2_50(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2_50:
    """ShuffleNet V2-50 (paper Table 6: 2.3 GFLOPs, 77.2 % top-1)."""
    return ShuffleNetV2_50(num_classes=num_classes, in_channels=in_channels, **kw)


def se_shufflenet_v2_164(num_classes: int = 1000, in_channels: int = 3, **kw) -> SEShuffleNetV2Large:
    """SE-ShuffleNet V2-164 (authors' ShuffleNetV2.Large: 12.7 GFLOPs, 140.7 M params, 81.44 % top-1).
    ``aux_heads=True`` adds the training-time auxiliary classifiers."""
    return SEShuffleNetV2Large(num_classes=num_classes, in_channels=in_channels, **kw)


register_model(shufflenet_v2_50, name="shufflenet_v2_50", family="shufflenet_v2_large", params=16_572_534,
               flops=2304.15, top1=77.2, top5=None, source="paper Table 6 (ImageNet-1k val, 224 px)",
               paper=_PAPER, extra={"flops_published": 2300})
register_model(se_shufflenet_v2_164, name="se_shufflenet_v2_164", family="shufflenet_v2_large",
               params=125_120_936, flops=12780.65, top1=81.44, top5=95.52,
               source="paper Table 6 / authors' ShuffleNetV2.Large README (ImageNet-1k val, 224 px)",
               paper=_PAPER, first_conv="conv1.0.conv",
               extra={"flops_published": 12700, "params_published_m": 140.7, "aux_heads": "off by default",
                      # the published 140.7 M counts the auxiliary heads (the authors' profiler counts every
                      # module); without them the network has 125.1 M
                      "params_with_aux_heads": 140_685_664})
