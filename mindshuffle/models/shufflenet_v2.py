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

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops

from .base import ClassifierNet, init_like_authors
from ..layers import ChannelSplit, ConvBNAct, SqueezeExcite, ZeroPadMaxPool
from ..native import act_avgpool, act_cat, bn_relu_maxpool, stem_conv_pool
from ..registry import register_model

__all__ = ["ShuffleUnitV2", "ShuffleNetV2", "STAGE_WIDTHS"]

# Table 5: output channels of conv1, stage2, stage3, stage4, conv5 per width multiplier
STAGE_WIDTHS = {
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 244, 488, 976, 2048),
}
STAGE_REPEATS = (4, 8, 4)
LAYOUTS = ("megvii", "torchvision")


class ShuffleUnitV2(nn.Cell):
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
            # the identity half needs no bias or ReLU: its channels come out of a ReLU already (infer_parts)
            self.zero_bias = Tensor(np.zeros(main_in, np.float32))
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

    def construct(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x_proj, x_main = self.split(x)
            return ops.concat((x_proj, self.branch_main(x_main)), 1)
        return ops.concat((self.branch_proj(x), self.branch_main(x)), 1)

    def parts(self, x):
        """``construct`` without its final concat: the two branch outputs. A basic unit takes its input as such
        a pair too (the previous unit's), so that the concat and the next split are one copy (ShuffleNetV2's
        training fast path)."""
        if self.stride == 1:
            x_proj, x_main = self.split.split_concat(x[0], x[1])
            return x_proj, self.branch_main(x_main)
        return self.branch_proj(x), self.branch_main(x)

    def infer_parts(self, x):
        """Inference of a folded unit with the native CPU kernels (``ShuffleNetV2.on_fused``). Like ``parts``,
        but each branch ends in its last 1x1 conv without bias and ReLU, and comes with that bias:
        ``(a, bias_a, b, bias_b)``, finished by the next reader (the next unit's split, a stage's concat). A
        basic unit takes such a quadruple, a down-sampling unit a tensor."""
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
        """Whether ``infer_parts`` applies: folded, native kernels, no SE."""
        layers = list(self.branch_main.cell_list) + (list(self.branch_proj.cell_list) if self.stride == 2 else [])
        if self.se or not all(isinstance(c, ConvBNAct) and c.fused for c in layers):
            return False
        if self.stride == 1 and self.split.act_split_op is None:
            return False
        return all(c.native and c.dw_act_op is not None if c.groups > 1 else isinstance(c.act, nn.ReLU)
                   for c in layers)


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
        # training: conv1's BatchNorm + ReLU + the padded pool as one native CPU kernel (mindshuffle.native)
        self.stem_op = None if maxpool_same or not self.conv1.bn_relu else bn_relu_maxpool()
        # inference after fuse_model(fast=True): the native kernels of on_fused
        self.stem_folded = self.fast_infer = False
        self.stem_pool_op, self.act_cat_op, self.act_pool_op = stem_conv_pool(), act_cat(), act_avgpool()
        c_in = widths[0]
        stages = []
        for c_out, n in zip(widths[1:4], repeats):
            proj = c_in if layout == "megvii" else c_out // 2
            units = [ShuffleUnitV2(c_in, c_out, 2, proj_channels=proj, se=se, extra_dw=extra_dw)]
            units += [ShuffleUnitV2(c_out, c_out, 1, se=se, extra_dw=extra_dw) for _ in range(n - 1)]
            stages.append(nn.SequentialCell(units))
            c_in = c_out
        self.stage2, self.stage3, self.stage4 = stages
        # training: units pass on their two branches, the concat fused into the next unit's split (native only)
        self.native_stages = all(unit.split.native for stage in stages for unit in stage if unit.stride == 1)
        self.conv5 = ConvBNAct(c_in, widths[4], 1)
        self.drop_rate = drop_rate
        self.dropout = nn.Dropout(p=drop_rate) if drop_rate > 0 else nn.Identity()
        self.classifier_bias = layout == "torchvision"
        self.classifier = self._make_classifier(num_classes)
        # (channels, stride, module) of the maps ``features_only`` returns: after maxpool and each stage
        self.feature_info = [
            dict(num_chs=widths[0], reduction=4, module="maxpool"),
            dict(num_chs=widths[1], reduction=8, module="stage2"),
            dict(num_chs=widths[2], reduction=16, module="stage3"),
            dict(num_chs=widths[3], reduction=32, module="stage4"),
        ]
        init_like_authors(self)

    def stem(self, x: Tensor) -> Tensor:
        if self.stem_folded and x.dtype == ms.float32:
            return self.stem_pool_op(x, self.conv1.conv.weight, self.conv1.conv.bias)
        if self.training and self.stem_op is not None and not self.conv1.fused and x.dtype == ms.float32:
            return self.conv1.train_bn(self.stem_op, self.conv1.conv(x))
        if self.pad_pool is not None:
            return self.pad_pool(self.conv1(x))
        return self.maxpool(self.conv1(x))

    def on_fused(self, fast: bool = False) -> None:
        """Called by ``fuse_model`` after the BatchNorms are folded. ``fast=False`` (export): plain ops, the
        padded ``self.maxpool``. ``fast=True`` (CPU inference) with the native kernels: conv1, its ReLU and the
        max pool as one kernel, and the stages and head on ``ShuffleUnitV2.infer_parts``, where no 1x1 conv's
        bias and ReLU take a pass of their own (``construct`` then also fuses conv5's with the global pool)."""
        self.stem_folded = self.fast_infer = False
        if not fast:
            self.pad_pool = None
            return
        conv = self.conv1.conv
        self.stem_folded = (self.stem_pool_op is not None and self.pad_pool is not None and self.conv1.fused
                            and conv.bias is not None and conv.kernel_size == (3, 3) and conv.stride == (2, 2)
                            and isinstance(self.conv1.act, nn.ReLU))
        units = [unit for stage in self.stages() for unit in stage.cell_list]
        self.fast_infer = (self.act_cat_op is not None and self.act_pool_op is not None and self.conv5.fused
                           and isinstance(self.conv5.act, nn.ReLU) and self.conv5.kernel_size == 1
                           and all(unit.can_infer_fast() for unit in units))

    def _infer_body(self, x: Tensor) -> Tensor:
        """Stem, stages and conv5 of a folded network on the native path; conv5's bias and ReLU left out."""
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
        x = self.stem(x)
        if self.training and self.native_stages and x.dtype == ms.float32:
            x = self._stage_parts(self.stage4, self._stage_parts(self.stage3, self._stage_parts(self.stage2, x)))
        else:
            x = self.stage4(self.stage3(self.stage2(x)))
        return self.conv5(x)

    def _stage_parts(self, stage: nn.SequentialCell, x: Tensor) -> Tensor:
        """``stage(x)`` with the units passing their outputs on as branch pairs (``ShuffleUnitV2.parts``)."""
        parts = x
        for unit in stage.cell_list:  # a down-sampling unit (takes x), then basic units (take a pair)
            parts = unit.parts(parts)
        return ops.concat(parts, 1)

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
