"""Backbone wrapper: a classification network's stage feature maps for detection and segmentation necks."""
from __future__ import annotations

from mindspore import nn

__all__ = ["FeatureExtractor"]


class FeatureExtractor(nn.Cell):
    """Runs ``net``'s stem and stages and returns the maps picked by ``out_indices`` as a tuple.

    Index 0 is the stem output (stride 4), 1-3 the outputs of stage2-4 (strides 8, 16, 32), as described by
    ``net.feature_info``; ``self.feature_info`` lists the selected ones.
    """

    def __init__(self, net: nn.Cell, out_indices=(0, 1, 2, 3)):
        super().__init__()
        out_indices = tuple(int(i) for i in out_indices)
        n = len(net.feature_info)
        bad = [i for i in out_indices if not 0 <= i < n]
        if bad or not out_indices:
            raise ValueError(f"out_indices {out_indices} invalid; choose from 0..{n - 1}")
        self.body = net
        self.out_indices = out_indices
        self.last = max(out_indices)
        self.feature_info = [net.feature_info[i] for i in out_indices]
        self.model_name = getattr(net, "model_name", "")
        self.stage_cells = nn.CellList(net.stages())

    def construct(self, x):
        outs = ()
        x = self.body.stem(x)
        if 0 in self.out_indices:
            outs = outs + (x,)
        for i, stage in enumerate(self.stage_cells):
            if i + 1 <= self.last:
                x = stage(x)
                if (i + 1) in self.out_indices:
                    outs = outs + (x,)
        return outs
