"""Params, FLOPs and MAC counting (mindshuffle.research.analysis) against hand-computed values and published totals."""
import math

import mindspore as ms
import pytest
from mindspore import nn, ops

from conftest import trainable_count
from mindshuffle.research.analysis import conv_flops, conv_mac, mac_lower_bound, profile_cell, profile_model
from mindshuffle.registry import UnknownModelError


class Tiny(nn.Cell):
    """3x16x16 -> conv3x3/2 -> BN -> ReLU -> 1x1 -> 1x1 g=4 -> dw3x3 -> maxpool/2 -> mean -> dense."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, pad_mode="pad", padding=1, has_bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pw = nn.Conv2d(8, 16, 1, has_bias=False)
        self.gconv = nn.Conv2d(16, 16, 1, group=4, has_bias=False)
        self.dw = nn.Conv2d(16, 16, 3, pad_mode="same", group=16, has_bias=True)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.fc = nn.Dense(16, 10)

    def construct(self, x):
        x = self.relu(self.bn(self.conv(x)))
        x = self.dw(self.gconv(self.pw(x)))
        return self.fc(ops.mean(self.pool(x), (2, 3)))


# (name, output shape, params, FLOPs, MAC) computed by hand for a 3x16x16 input
EXPECTED = [
    ("conv", (8, 8, 8), 216, 8 * 8 * 8 * 3 * 9, 3 * 256 + 8 * 64 + 216),
    ("bn", (8, 8, 8), 16, 0, 512 + 512 + 4 * 8),          # gamma, beta + moving mean/var are read
    ("relu", (8, 8, 8), 0, 0, 512 + 512),
    ("pw", (16, 8, 8), 128, 64 * 16 * 8, 64 * (8 + 16) + 8 * 16),  # the paper's hw(c1+c2)+c1c2
    ("gconv", (16, 8, 8), 64, 64 * 16 * 4, 64 * (16 + 16) + 16 * 16 // 4),  # Eq. 2: ... + c1c2/g
    ("dw", (16, 8, 8), 160, 64 * 16 * 9, 1024 + 1024 + 160),
    ("pool", (16, 4, 4), 0, 0, 1024 + 256),
    ("fc", (10,), 170, 160, 16 + 10 + 170),
]


def test_tiny_network_exact():
    net = Tiny()
    prof = profile_cell(net, (3, 16, 16))
    got = [(r.name, r.output_shape, r.params, r.flops, r.mac) for r in prof.layers]
    assert got == EXPECTED
    assert prof.flops == sum(e[3] for e in EXPECTED) == 13824 + 8192 + 4096 + 9216 + 160
    assert prof.mac == sum(e[4] for e in EXPECTED)
    assert prof.params == trainable_count(net) == sum(e[2] for e in EXPECTED)
    # the G1 bound is given only for the ungrouped stride-1 1x1 conv, and MAC respects it
    bounds = {r.name: r.mac_bound for r in prof.layers}
    assert bounds["pw"] == pytest.approx(2 * math.sqrt(64 * 8192) + 8192 / 64)
    assert all(b is None for n, b in bounds.items() if n != "pw")
    assert prof.layers[3].mac >= bounds["pw"] and prof.layers[3].balance > 1.0


def test_formulas_and_balanced_bound():
    assert conv_flops(32, 64, 7, 7, 3, groups=2) == 7 * 7 * 64 * 16 * 9
    assert conv_mac(32, 14, 14, 64, 7, 7, 3, groups=2, bias=True) == 32 * 196 + 64 * 49 + 64 * 16 * 9 + 64
    # c1 == c2: the paper's MAC equals its lower bound exactly
    h = w = 28
    c = 116
    assert conv_mac(c, h, w, c, h, w) == pytest.approx(mac_lower_bound(h, w, conv_flops(c, c, h, w)))


def test_restores_mode_and_training_flag():
    net = Tiny()
    net.set_train(True)
    profile_cell(net, (3, 16, 16))
    assert ms.get_context("mode") == ms.GRAPH_MODE
    assert net.training


def test_tuple_outputs_and_repeated_calls():
    from mindshuffle.layers import ChannelSplit

    class Twice(nn.Cell):
        def __init__(self):
            super().__init__()
            self.split = ChannelSplit(8)
            self.conv = nn.Conv2d(4, 4, 1, has_bias=False)

        def construct(self, x):
            a, b = self.split(x)
            return self.conv(a) + self.conv(b)

    prof = profile_cell(Twice(), (8, 4, 4))
    assert [r.name for r in prof.layers] == ["split", "conv", "conv#2"]
    assert prof.layers[0].output_shape == ((4, 4, 4), (4, 4, 4))
    assert prof.layers[0].mac == 2 * 128 and prof.flops == 2 * 16 * 16
    assert prof.params == 16  # a shared cell's weights count once


class NativeDW(nn.Cell):
    """Applies its depthwise conv's weight with an op of its own (like a native kernel) and never calls it;
    ``spare`` is a conv it neither calls nor reads."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, stride=2, pad_mode="pad", padding=1, group=4, has_bias=False)
        self.spare = nn.Conv2d(4, 4, 1)
        self.relu = nn.ReLU()

    def construct(self, x):
        return self.relu(ops.conv2d(x, self.conv.weight, None, 2, "pad", 1, 1, 4))


def test_conv_applied_by_its_parent_is_counted():
    net = nn.SequentialCell([NativeDW()])
    prof = profile_cell(net, (4, 8, 8))
    assert [(r.name, r.kind, r.output_shape) for r in prof.layers] == [
        ("0.conv", "Conv2d 3x3 dw /2", (4, 4, 4)), ("0.relu", "ReLU", (4, 4, 4))]
    assert prof.flops == 16 * 4 * 9 and prof.layers[0].mac == 256 + 64 + 36


def test_every_registered_model_matches_its_published_flops():
    # models of other families (V1, V2+, V2-50, SE) carry published FLOPs too; the count must agree within 1%
    from mindshuffle import list_models, model_info

    smallest: dict = {}
    for n in list_models():  # the smallest model of each other family (the big ones cost test time)
        i = model_info(n)
        key = (i.family, n[:15])
        if not i.flops or i.flops >= 1000 or n in V2_TOTALS:
            continue
        if key not in smallest or i.flops < model_info(smallest[key]).flops:
            smallest[key] = n
    names = sorted(smallest.values())
    assert names
    for n in names:
        # within 1%, or within the rounding of figures published as whole MFLOPs (V1: 38, 138, ...)
        assert profile_model(n).flops / 1e6 == pytest.approx(model_info(n).flops, rel=0.01, abs=0.5), n


V2_TOTALS = {  # multiply-adds of convs + classifier at 224 px, in millions (issue 5)
    "shufflenet_v2_x0_5": 40.48, "shufflenet_v2_x1_0": 145.81, "shufflenet_v2_x1_5": 298.97,
    "shufflenet_v2_x2_0": 590.78, "shufflenet_v2_x0_5_tv": 40.48, "shufflenet_v2_x1_0_tv": 144.91,
    "shufflenet_v2_x1_5_tv": 295.76, "shufflenet_v2_x2_0_tv": 583.25,
}


@pytest.mark.parametrize("name", sorted(V2_TOTALS))
def test_v2_totals_at_224(name):
    from mindshuffle import model_info

    prof = profile_model(name, image_size=224)
    assert prof.flops / 1e6 == pytest.approx(V2_TOTALS[name], rel=0.01)
    assert prof.flops / 1e6 == pytest.approx(model_info(name).flops, rel=0.001)
    assert prof.params == model_info(name).params


def test_table_and_csv(tmp_path):
    prof = profile_cell(Tiny(), (3, 16, 16), name="tiny")
    text = prof.table()
    assert "total" in text and "pw" in text and f"{prof.params:,}" in text
    md = prof.table(markdown=True, min_flops=5000)
    assert md.startswith("| layer") and "| relu |" not in md and "| conv |" in md
    path = tmp_path / "sub" / "p.csv"
    prof.to_csv(str(path))
    lines = path.read_text().splitlines()
    assert lines[0].startswith("name,type") and len(lines) == 1 + len(EXPECTED) + 1
    assert lines[-1].startswith("total,") and f",{prof.flops}," in lines[-1]


def test_unknown_model():
    with pytest.raises(UnknownModelError):
        profile_model("shufflenet_v7")
