"""ShuffleNet V2 variants from the paper: with squeeze-and-excitation (Table 8) and ShuffleNet V2* (Table 7).

- ``shufflenet_v2_x{0_5,1_0,1_5,2_0}_se``: SE at the end of each unit's main branch, before the concat
  (paper Appendix Fig. 2b); SE neurons = 1/2 of the branch's channels, the ratio the paper's Appendix Table 2
  states for its SE models (the 2x + SE row of Table 8 does not state one). The paper reports only 2x + SE:
  597 MFLOPs, 24.6 % top-1 error. Our count of this layout is 592.3 MFLOPs (-0.8 %).
- ``shufflenet_v2_star_x{0_5,1_0,1_5,2_0}``: ShuffleNet V2*, "an additional 3x3 depthwise convolution before
  the first pointwise convolution in each building block" (paper Sec. 5, detection) to enlarge the receptive
  field. The paper reports COCO mmAP with Light-Head R-CNN (Table 7), not ImageNet accuracy, and places the
  models at its 40/140/300/500 MFLOPs levels. Meant as backbones: ``create_model(..., features_only=True)``.

Both are ``ShuffleNetV2(se=True)`` / ``ShuffleNetV2(extra_dw=True)`` of :mod:`.shufflenet_v2`, so parameter
names, weight loading and ``features_only`` work as for the plain widths.
"""
from __future__ import annotations

from ..registry import register_model
from .shufflenet_v2 import ShuffleNetV2

__all__ = ["V2_STAR_MMAP"]

_PAPER = "ShuffleNet V2 (Ma et al., ECCV 2018)"

# width -> (trainable params, MFLOPs at 224 px as mindshuffle.research.analysis counts them)
_SE_META = {0.5: (1_424_688, 40.53), 1.0: (2_623_443, 146.16), 1.5: (4_301_328, 299.76), 2.0: (8_931_251, 592.30)}
_STAR_META = {0.5: (1_375_296, 42.89), 1.0: (2_301_354, 150.69), 1.5: (3_540_864, 306.01),
              2.0: (7_449_834, 600.28)}
# paper Table 7: COCO minival mmAP (%) of Light-Head R-CNN with a ShuffleNet V2* backbone, by FLOPs level
V2_STAR_MMAP = {0.5: 23.7, 1.0: 29.6, 1.5: 32.2, 2.0: 34.2}
_LEVEL = {0.5: 40, 1.0: 140, 1.5: 300, 2.0: 500}


def _se(width: float) -> dict:
    p, f = _SE_META[width]
    if width == 2.0:
        info = dict(top1=75.4, source="paper Table 8 (ImageNet-1k val, 224 px)", extra={"flops_published": 597})
    else:
        info = dict(top1=None, source="no published figure", extra={"flops_published": None})
    return dict(family="shufflenet_v2_se", params=p, flops=f, top5=None, paper=_PAPER, **info)


def _star(width: float) -> dict:
    p, f = _STAR_META[width]
    return dict(family="shufflenet_v2_star", params=p, flops=f, top1=None, top5=None,
                source="paper Table 7 (COCO mmAP only; no ImageNet accuracy published)", paper=_PAPER,
                extra={"flops_level_published": _LEVEL[width], "coco_mmap_light_head_rcnn": V2_STAR_MMAP[width]})


@register_model(**_se(0.5))
def shufflenet_v2_x0_5_se(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 0.5x with squeeze-and-excitation in every unit (paper Table 8)."""
    return ShuffleNetV2(0.5, num_classes=num_classes, in_channels=in_channels, se=True, **kw)


@register_model(**_se(1.0))
def shufflenet_v2_x1_0_se(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 1.0x with squeeze-and-excitation in every unit (paper Table 8)."""
    return ShuffleNetV2(1.0, num_classes=num_classes, in_channels=in_channels, se=True, **kw)


@register_model(**_se(1.5))
def shufflenet_v2_x1_5_se(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 1.5x with squeeze-and-excitation in every unit (paper Table 8)."""
    return ShuffleNetV2(1.5, num_classes=num_classes, in_channels=in_channels, se=True, **kw)


@register_model(**_se(2.0))
def shufflenet_v2_x2_0_se(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2 2.0x with squeeze-and-excitation in every unit (paper Table 8)."""
    return ShuffleNetV2(2.0, num_classes=num_classes, in_channels=in_channels, se=True, **kw)


@register_model(**_star(0.5))
def shufflenet_v2_star_x0_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2* 0.5x: an extra 3x3 depthwise conv before the first 1x1 conv of every unit (paper Table 7),
    a detection backbone."""
    return ShuffleNetV2(0.5, num_classes=num_classes, in_channels=in_channels, extra_dw=True, **kw)


@register_model(**_star(1.0))
def shufflenet_v2_star_x1_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2* 1.0x: an extra 3x3 depthwise conv before the first 1x1 conv of every unit (paper Table 7),
    a detection backbone."""
    return ShuffleNetV2(1.0, num_classes=num_classes, in_channels=in_channels, extra_dw=True, **kw)


@register_model(**_star(1.5))
def shufflenet_v2_star_x1_5(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2* 1.5x: an extra 3x3 depthwise conv before the first 1x1 conv of every unit (paper Table 7),
    a detection backbone."""
    return ShuffleNetV2(1.5, num_classes=num_classes, in_channels=in_channels, extra_dw=True, **kw)


@register_model(**_star(2.0))
def shufflenet_v2_star_x2_0(num_classes: int = 1000, in_channels: int = 3, **kw) -> ShuffleNetV2:
    """ShuffleNet V2* 2.0x: an extra 3x3 depthwise conv before the first 1x1 conv of every unit (paper Table 7),
    a detection backbone."""
    return ShuffleNetV2(2.0, num_classes=num_classes, in_channels=in_channels, extra_dw=True, **kw)
