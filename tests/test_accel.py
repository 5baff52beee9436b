"""The CPU accelerator (mindshuffle.accel): every kernel and every accelerated network computes what the plain
layers compute (forward and gradients, train and eval mode, folded and unfolded BatchNorm), and every way it
can be off is clean and said once. No timing here (bench/ measures speed)."""
import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from conftest import GraphCall, randomize

from mindshuffle import accel
from mindshuffle.accel import accelerate
from mindshuffle.accel.cpu import build, kernels as K
from mindshuffle.accel.cpu.cells import AccelChannelSplit, AccelConvBNAct, AccelShuffleNetV2
from mindshuffle.accel.cpu.rewrite import swap_in
from mindshuffle.layers import ChannelSplit, ConvBNAct, ZeroPadMaxPool, fuse_model
from mindshuffle.models.shufflenet_v2 import ShuffleNetV2
from mindshuffle.models.shufflenet_v2_large import SEShuffleNetV2Large, ShuffleNetV2_50
from mindshuffle.models.shufflenet_v2_plus import ShuffleNetV2Plus

RNG = np.random.default_rng(7)


class _Grads(nn.Cell):
    """Output, d(sum(out * r))/d(input) and /d(params) of ``net`` in one graph."""

    def __init__(self, net, r):
        super().__init__()
        self.net, self.r = net, r
        self.params = ParameterTuple(net.trainable_params())
        self.grad = ops.GradOperation(get_all=True, get_by_list=True)

    def _loss(self, x):
        return (self.net(x) * self.r).sum()

    def construct(self, x):
        return self.net(x), self.grad(self._loss, self.params)(x)


class _InputGrad(nn.Cell):
    def __init__(self, net, r):
        super().__init__()
        self.net, self.r = net, r
        self.grad = ops.GradOperation()

    def _loss(self, x):
        return (self.net(x) * self.r).sum()

    def construct(self, x):
        return self.grad(self._loss)(x)


def _np_dw(x, w, stride):
    """float64 numpy 3x3 depthwise conv, padding 1; and its two gradients for an upstream gradient r."""
    n, c, h, wd = x.shape
    ho, wo = (h - 1) // stride + 1, (wd - 1) // stride + 1
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    w = w.astype(np.float64).reshape(c, 3, 3)
    y = np.zeros((n, c, ho, wo))
    for i in range(3):
        for j in range(3):
            y += w[None, :, i, j, None, None] * xp[:, :, i:i + stride * ho:stride, j:j + stride * wo:stride]

    def grads(r):
        gxp, gw = np.zeros_like(xp), np.zeros((c, 3, 3))
        for i in range(3):
            for j in range(3):
                win = (slice(None), slice(None), slice(i, i + stride * ho, stride), slice(j, j + stride * wo, stride))
                gxp[win] += w[None, :, i, j, None, None] * r
                gw[:, i, j] = (xp[win] * r).sum(axis=(0, 2, 3))
        return gxp[:, :, 1:-1, 1:-1], gw.reshape(c, 1, 3, 3)
    return y, grads


class _DW(nn.Cell):
    def __init__(self, w, stride, native):
        super().__init__()
        self.weight = Parameter(Tensor(w), name="weight")
        self.op = K.depthwise3x3(_lib(), stride) if native else None
        c = w.shape[0]
        self.conv = ops.Conv2D(c, 3, pad_mode="pad", pad=1, stride=stride, group=c)

    def construct(self, x):
        if self.op is not None:
            return self.op(x, self.weight)
        return self.conv(x, self.weight)


def _lib():
    lib = build.library()
    if lib is None:
        pytest.skip(f"CPU accelerator off: {build.off_reason()}")
    return lib


@pytest.mark.parametrize("stride,size", [(1, 7), (2, 8), (2, 9)])
def test_native_depthwise_matches_reference(stride, size):
    x = RNG.standard_normal((2, 5, size, size + 1)).astype(np.float32)
    w = RNG.standard_normal((5, 1, 3, 3)).astype(np.float32)
    ho, wo = (size - 1) // stride + 1, size // stride + 1
    r = RNG.standard_normal((2, 5, ho, wo)).astype(np.float32)
    y_ref, grads = _np_dw(x, w, stride)
    gx_ref, gw_ref = grads(r.astype(np.float64))
    for native in (True, False):  # the kernel and MindSpore's own conv against the float64 reference
        y, (gx, gw) = _Grads(_DW(w, stride, native), Tensor(r))(Tensor(x))
        np.testing.assert_allclose(y.asnumpy(), y_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gx[0].asnumpy(), gx_ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gw[0].asnumpy(), gw_ref, rtol=1e-5, atol=1e-4)
    # finite differences: the conv is linear, so a central difference along a random direction is exact
    dw = RNG.standard_normal(w.shape).astype(np.float32)
    f = [float(((_np_dw(x, w + e * dw, stride)[0]) * r).sum()) for e in (0.5, -0.5)]
    np.testing.assert_allclose(f[0] - f[1], float((gw[0].asnumpy() * dw).sum()), rtol=1e-4)


@pytest.mark.parametrize("size", [8, 9])
def test_zero_pad_max_pool_equals_padded_pool(size):
    """relu -> pool: same output, and the same gradient on the ReLU's input (ties at 0 are killed by the ReLU)."""
    x = RNG.standard_normal((2, 3, size, size + 1)).astype(np.float32)
    ho, wo = (size - 1) // 2 + 1, size // 2 + 1
    r = Tensor(RNG.standard_normal((2, 3, ho, wo)).astype(np.float32))
    outs = []
    for pool in (nn.MaxPool2d(3, 2, pad_mode="pad", padding=1), ZeroPadMaxPool(3, 2, 1)):
        net = nn.SequentialCell([nn.ReLU(), pool])
        y = net(Tensor(x)).asnumpy()
        outs.append((y, _InputGrad(net, r)(Tensor(x)).asnumpy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_allclose(outs[0][1], outs[1][1], atol=1e-6)


class _Stem(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def construct(self, x):
        return self.net.stem(x)


def _train_twins(make, x, r):
    """Two copies of ``make()`` with the same random parameters and BN statistics, the first accelerated for
    training; one training-mode forward + gradient each. Returns [(output, input grad, param grads, moving
    statistics, eval-mode output after the step)] for (accelerated, plain)."""
    nets = [swap_in(make(), _lib()), make()]
    for p in nets[0].get_parameters():
        lo, hi = (0.5, 1.5) if ("gamma" in p.name or "variance" in p.name) else (-0.5, 0.5)
        p.set_data(Tensor(RNG.uniform(lo, hi, p.shape).astype(np.float32)))
    ms.load_param_into_net(nets[1], {p.name: Parameter(Tensor(p.asnumpy()), name=p.name)
                                     for p in nets[0].get_parameters()})
    out = []
    for net in nets:
        net.set_train(True)
        y, (gx, gp) = _Grads(net, r)(x)
        moving = [p.asnumpy() for p in net.get_parameters() if "moving" in p.name]
        net.set_train(False)
        out.append((y.asnumpy(), gx[0].asnumpy(), [g.asnumpy() for g in gp], moving, net(x).asnumpy()))
    return out


def _assert_twins_close(fast, plain, tol=1e-4):
    for what, a, b in zip(("output", "input gradient"), fast, plain):
        _close(a, b, tol, what)
    for k, (a, b) in enumerate(zip(fast[2], plain[2])):
        _close(a, b, tol, f"parameter gradient {k}")
    assert len(fast[3]) == len(plain[3]) > 0
    for a, b in zip(fast[3], plain[3]):
        _close(a, b, 1e-5, "moving statistics", floor=1.0)
    _close(fast[4], plain[4], 1e-5, "eval output after the step")


@pytest.mark.parametrize("act,kernel,groups", [("relu", 1, 1), (None, 3, 6), ("relu", 3, 1), ("hswish", 1, 1)])
def test_native_batchnorm_matches_nn_batchnorm(act, kernel, groups):
    """AccelConvBNAct's training BatchNorm (+ fused ReLU) against nn.BatchNorm2d (+ nn.ReLU): output,
    gradients w.r.t. input, conv weight, gamma and beta, the moving statistics, and eval mode afterwards."""
    def make():
        return ConvBNAct(6, 6, kernel, groups=groups, act=act)

    assert (swap_in(make(), _lib()).bn_op is not None) == (act != "hswish")
    x = Tensor(RNG.normal(1.0, 2.0, (3, 6, 9, 10)).astype(np.float32))
    r = Tensor(RNG.standard_normal((3, 6, 9, 10)).astype(np.float32))
    _assert_twins_close(*_train_twins(make, x, r))


@pytest.mark.parametrize("size", [(16, 16), (18, 18), (17, 22)])  # conv1 output even, odd, mixed
def test_native_stem_matches_plain_stem(size):
    """conv1 + the BN + ReLU + max pool kernel against conv1 + nn.BatchNorm2d + ReLU + padded pool."""
    def make():
        return _Stem(_small())

    assert swap_in(make(), _lib()).net.stem_op is not None
    h, w = size
    x = Tensor(RNG.standard_normal((2, 3, h, w)).astype(np.float32))
    r = Tensor(RNG.standard_normal(make()(x).shape).astype(np.float32))  # an upstream gradient of the output's shape
    _assert_twins_close(*_train_twins(make, x, r))


class _Cat(nn.Cell):
    """Both halves of a ChannelSplit, concatenated, times a fixed random tensor (distinct gradients per half).
    ``ca``: the split's input given as two parts, ``split_concat(x[:, :ca], x[:, ca:])``."""

    def __init__(self, split, r, ca=0):
        super().__init__()
        self.split, self.r, self.ca = split, r, ca
        self.plain = not isinstance(split, AccelChannelSplit)

    def construct(self, x):
        if self.ca:
            a, b = self.split(ops.concat((x[:, :self.ca], x[:, self.ca:]), 1)) if self.plain else \
                self.split.split_concat(x[:, :self.ca], x[:, self.ca:])
        else:
            a, b = self.split(x)
        return ops.concat((a, b * 2.0), 1) * self.r


# 0: one tensor; else the channels of the two parts: equal, and unequal (megvii's first down-sampling unit)
@pytest.mark.parametrize("ca", [0, 6, 4, 9])
def test_native_shuffle_split_matches_transpose(ca):
    x = RNG.standard_normal((2, 12, 5, 7)).astype(np.float32)
    r = Tensor(RNG.standard_normal((2, 12, 5, 7)).astype(np.float32))
    outs = []
    for native in (True, False):
        split = swap_in(ChannelSplit(12), _lib()) if native else ChannelSplit(12)
        net = _Cat(split, r, ca)
        net.set_train(True)
        outs.append((net(Tensor(x)).asnumpy(), _InputGrad(net, r)(Tensor(x)).asnumpy()))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    ref = np.concatenate((x[:, 0::2], 2 * x[:, 1::2]), 1) * r.asnumpy()  # even channels first (megvii order)
    np.testing.assert_allclose(outs[0][0], ref, rtol=1e-6)


class _Pool(nn.Cell):
    def __init__(self, native):
        super().__init__()
        self.op = K.global_avg_pool(_lib()) if native else None

    def construct(self, x):
        if self.op is not None:
            return self.op(x)
        return ops.mean(x, (2, 3))


def test_native_global_avg_pool_matches_mean():
    x = Tensor(RNG.standard_normal((3, 5, 7, 6)).astype(np.float32))
    r = Tensor(RNG.standard_normal((3, 5)).astype(np.float32))
    (y, gx), (y_ref, gx_ref) = [(_Pool(native)(x).asnumpy(), _InputGrad(_Pool(native), r)(x).asnumpy())
                                for native in (True, False)]
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, gx_ref, rtol=1e-6, atol=1e-7)


def _close(a, b, tol, what="", floor=1e-2):
    """max |a - b| <= tol * max(max |b|, floor): float32 sums in another order, amplified by train-mode
    BatchNorm; the floor covers gradients that are zero up to rounding."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, what
    assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), floor), f"{what}: {np.abs(a - b).max()}"


def _small(**kw):
    """A short ShuffleNet V2 (both unit kinds, every fast path) so that the graphs compile quickly."""
    return ShuffleNetV2(widths=(8, 16, 32, 64, 128), repeats=(2, 2, 1), num_classes=10, **kw)


# every V2-family network, small: V2 (authors' and torchvision's layout), V2* (extra depthwise conv), V2 with SE,
# V2+ (hswish, SE, 5x5 and 7x7 depthwise convs, xception blocks), V2-50 and SE-V2-164's units; no dropout, which
# would draw different masks
FAMILY = {
    "v2": lambda: _small(),
    "v2_tv": lambda: _small(layout="torchvision"),
    "v2_star": lambda: _small(extra_dw=True),
    "v2_se": lambda: _small(se=True),
    "v2_plus": lambda: ShuffleNetV2Plus(widths=(8, 16, 32, 48, 64, 128), repeats=(1, 1, 1, 1),
                                        architecture=(0, 1, 2, 3), num_classes=10, drop_rate=0.0),
    "v2_50": lambda: ShuffleNetV2_50(widths=(16, 32, 64, 128, 256, 128), repeats=(1, 1, 1, 1), num_classes=10),
    "v2_large": lambda: SEShuffleNetV2Large(stem=(8, 8, 16), widths=(32, 64, 128, 256), repeats=(1, 1, 1, 1),
                                            head_channels=64, num_classes=10, drop_rate=0.0),
}


def _twins(make):
    """(accelerated-to-be, plain): two copies of ``make()`` with the same random weights and BN statistics
    (something to fold; fixed, so that no rare float32 tie flips a ReLU mask or a max-pool choice)."""
    fast, plain = make(), make()
    randomize(fast)
    ms.load_param_into_net(plain, {p.name: Parameter(Tensor(p.asnumpy()), name=p.name)
                                   for p in fast.get_parameters()})
    return fast, plain


def _train_step(net, x, y):
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), nn.Momentum(net.trainable_params(), 0.01, 0.9))
    step.set_train(True)
    return float(step(x, y).asnumpy())


@pytest.mark.parametrize("name", sorted(FAMILY))
def test_accelerated_network_equals_plain(name):
    """accelerate(net, "train"): one training step (loss, every parameter's update, the moving statistics) equals
    the plain network's; then accelerate(net, "infer") (BatchNorm folded) gives the plain network's logits."""
    fast, plain = _twins(FAMILY[name])
    _lib()
    assert accelerate(fast, "train") is fast
    assert sum(isinstance(c, AccelConvBNAct) for _, c in fast.cells_and_names()) == \
        sum(isinstance(c, ConvBNAct) for _, c in plain.cells_and_names()) > 0
    assert [p.name for p in fast.get_parameters()] == [p.name for p in plain.get_parameters()]
    x = Tensor(RNG.standard_normal((4, 3, 64, 64)).astype(np.float32))
    y = Tensor(RNG.integers(0, 10, 4).astype(np.int32))
    before = {p.name: p.asnumpy() for p in plain.get_parameters()}
    losses = [_train_step(net, x, y) for net in (fast, plain)]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for p, q in zip(fast.get_parameters(), plain.get_parameters()):
        if "moving" in p.name:
            _close(p.asnumpy(), q.asnumpy(), 1e-4, p.name)
        else:  # the update is the learning rate times the gradient
            _close(p.asnumpy() - before[p.name], q.asnumpy() - before[p.name], 1e-3, p.name)
    plain.set_train(False)
    x = Tensor(RNG.standard_normal((2, 3, 66, 66)).astype(np.float32))  # odd-sized maps in every stage
    ref = plain(x).asnumpy()
    accelerate(fast, "infer")
    assert not fast.training and all(c.fused for _, c in fast.cells_and_names() if isinstance(c, ConvBNAct))
    _close(fast(x).asnumpy(), ref, 1e-4, "folded logits")


@pytest.mark.parametrize("variant,fast_units", [({}, True), ({"extra_dw": True}, True), ({"se": True}, False),
                                                 ({"layout": "torchvision"}, True)])
def test_v2_runs_its_fused_paths(variant, fast_units):
    """The V2 network takes its accelerated paths: in training the units pass on branch pairs and the stem is one
    kernel; folded, the stem is one kernel and the units and head run on ``infer_parts`` (SE units do not fit:
    their branch ends in the SE gate). The folded features equal the plain ones, conv5's bias and ReLU applied."""
    _lib()
    fast, plain = _twins(lambda: _small(**variant))
    accelerate(fast, "train")
    assert type(fast) is AccelShuffleNetV2 and fast.train_stages and fast.stem_op is not None
    accelerate(fast, "infer")
    assert fast.stem_folded and fast.fast_infer == fast_units
    pointwise = [c for _, c in fast.cells_and_names() if isinstance(c, ConvBNAct) and c.kernel_size == 1]
    assert pointwise and all(c.pw_op is not None for c in pointwise)
    x = Tensor(RNG.standard_normal((2, 3, 64, 64)).astype(np.float32))
    plain.set_train(False)
    _close(GraphCall(fast.stem)(x).asnumpy(), GraphCall(plain.stem)(x).asnumpy(), 1e-5, "folded stem")
    feats = GraphCall(fast.forward_features)(x).asnumpy()
    _close(feats, GraphCall(plain.forward_features)(x).asnumpy(), 1e-4, "folded features")
    assert feats.min() >= 0


def test_plain_undoes_the_rewrite_and_export_runs_plain():
    """accel.plain(net) puts back the plain classes (what export runs); layers.fuse_model stays plain."""
    _lib()
    from mindshuffle.export import make_exportable
    fast, plain = _twins(_small)
    accelerate(fast, "infer")
    make_exportable(fast)
    assert type(fast) is ShuffleNetV2 and fast.pad_pool is None
    assert not any(type(c).__name__.startswith("Accel") for _, c in fast.cells_and_names())
    fuse_model(plain)
    assert type(plain) is ShuffleNetV2
    x = Tensor(RNG.standard_normal((2, 3, 64, 64)).astype(np.float32))
    _close(fast(x).asnumpy(), plain(x).asnumpy(), 1e-5, "exported")


def _relu_bias(x, b):
    return np.maximum(x + b.reshape(1, -1, 1, 1), 0)


def test_inference_kernels_apply_the_pending_bias_and_relu():
    """act_cat_split / act_cat / act_avgpool / depthwise(act_in) equal relu(x + bias) followed by the plain op."""
    lib = _lib()
    a = RNG.standard_normal((3, 6, 5, 7)).astype(np.float32)
    b = RNG.standard_normal((3, 4, 5, 7)).astype(np.float32)
    ba, bb = RNG.standard_normal(6).astype(np.float32), RNG.standard_normal(4).astype(np.float32)
    cat = np.concatenate([_relu_bias(a, ba), _relu_bias(b, bb)], 1)
    inputs = [Tensor(v) for v in (a, ba, b, bb)]
    e, o = GraphCall(K.act_cat_split(lib))(*inputs)
    np.testing.assert_array_equal(e.asnumpy(), cat[:, 0::2])
    np.testing.assert_array_equal(o.asnumpy(), cat[:, 1::2])
    np.testing.assert_array_equal(GraphCall(K.act_cat(lib))(*inputs).asnumpy(), cat)
    np.testing.assert_allclose(GraphCall(K.act_avgpool(lib))(Tensor(a), Tensor(ba)).asnumpy(),
                               _relu_bias(a, ba).mean((2, 3)), rtol=1e-6, atol=1e-6)
    for stride in (1, 2):
        x = RNG.standard_normal((2, 5, 9, 8)).astype(np.float32)
        bin_, bias = RNG.standard_normal(5).astype(np.float32), RNG.standard_normal(5).astype(np.float32)
        w = RNG.standard_normal((5, 1, 3, 3)).astype(np.float32)
        got = GraphCall(K.depthwise3x3(lib, stride, bias=True, act_in=True))(Tensor(x), Tensor(bin_), Tensor(w), Tensor(bias))
        ref = _np_dw(_relu_bias(x, bin_), w, stride)[0] + bias.reshape(1, -1, 1, 1)
        np.testing.assert_allclose(got.asnumpy(), ref, rtol=1e-5, atol=1e-5)


# (N, Ci, Co, H, W): whole panels inside a sample (P = 64), panels across samples (P = 49, 3 x 7), fewer
# columns than a panel in all (N * P = 6), output channels not a multiple of the 6-row strip, one input channel
@pytest.mark.parametrize("n,cin,cout,h,w", [(2, 16, 12, 8, 8), (3, 23, 29, 7, 7), (5, 7, 13, 3, 7),
                                            (1, 5, 4, 2, 3), (2, 1, 7, 9, 5)])
def test_native_conv1x1_equals_conv2d(n, cin, cout, h, w):
    """The inference 1x1 conv (a matrix product over the columns of all samples) equals ops.conv2d."""
    lib = _lib()
    x = RNG.standard_normal((n, cin, h, w)).astype(np.float32)
    wt = RNG.standard_normal((cout, cin, 1, 1)).astype(np.float32)
    got = GraphCall(K.conv1x1(lib))(Tensor(x), Tensor(wt)).asnumpy()
    ref = np.einsum("nchw,oc->nohw", x.astype(np.float64), wt[:, :, 0, 0].astype(np.float64))
    assert got.shape == ref.shape
    _close(got, ref, 1e-5, "conv1x1")


@pytest.mark.parametrize("size,cin,cout", [((224, 224), 3, 24), ((17, 22), 3, 11), ((5, 6), 1, 8), ((66, 65), 4, 3)])
def test_native_stem_equals_conv_relu_maxpool(size, cin, cout):
    """conv1 (3x3/2, pad 1) + bias + ReLU + max pool (3x3/2, pad 1) in one kernel, any size, any channel count
    (blocks of output channels and their remainder)."""
    lib = _lib()
    x = RNG.standard_normal((2, cin) + size).astype(np.float32)
    w = RNG.standard_normal((cout, cin, 3, 3)).astype(np.float32)
    b = RNG.standard_normal(cout).astype(np.float32)
    ref = ops.relu(ops.conv2d(Tensor(x), Tensor(w), pad_mode="pad", padding=1, stride=2) +
                   Tensor(b).reshape(1, -1, 1, 1))
    ref = nn.MaxPool2d(3, 2, pad_mode="pad", padding=1)(ref).asnumpy()
    got = GraphCall(K.stem_conv_pool(lib))(Tensor(x), Tensor(w), Tensor(b)).asnumpy()
    assert got.shape == ref.shape
    _close(got, ref, 1e-5, "stem")


_THREADS_SCRIPT = """
import sys, numpy as np, mindspore as ms
from mindspore import Tensor, nn
ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
sys.path.insert(0, sys.argv[1])
from conftest import randomize
from mindshuffle.accel import accelerate
from mindshuffle.models.shufflenet_v2 import ShuffleNetV2
ms.set_seed(0)
net = ShuffleNetV2(widths=(24, 48, 96, 192, 256), repeats=(2, 2, 1), num_classes=10)
randomize(net)
# big enough that most kernels split their loops (parallel.h: from 2^17 elements a thread)
x = Tensor(np.random.default_rng(0).standard_normal((32, 3, 96, 96)).astype(np.float32))
y = Tensor(np.arange(32, dtype=np.int32) % 10)
step = nn.TrainOneStepCell(nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")),
                           nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9))
accelerate(net, "train")
step.set_train(True)
loss = [float(step(x, y).asnumpy()) for _ in range(2)]
logits = accelerate(net, "infer")(x).asnumpy()
np.savez(sys.argv[2], loss=np.array(loss), logits=logits, **{p.name: p.asnumpy() for p in net.get_parameters()})
"""


def test_results_do_not_depend_on_the_kernel_thread_count(tmp_path):
    """Two training steps and a folded forward give bit-identical results with 1 and 3 kernel threads (every
    split is over independent planes or channels); 3 threads on this 2-core machine also cover uneven parts."""
    _lib()
    tests = os.path.dirname(os.path.abspath(__file__))
    script = tmp_path / "run.py"
    script.write_text(_THREADS_SCRIPT)
    results = []
    for threads in ("1", "3"):
        out = tmp_path / f"t{threads}.npz"
        env = dict(os.environ, MINDSHUFFLE_THREADS=threads, GLOG_v="3",
                   PYTHONPATH=os.pathsep.join([os.path.dirname(tests), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.run([sys.executable, str(script), tests, str(out)], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results.append(np.load(out))
    assert sorted(results[0].files) == sorted(results[1].files)
    for key in results[0].files:
        np.testing.assert_array_equal(results[0][key], results[1][key], err_msg=key)


def test_wheel_ships_every_native_source(tmp_path):
    """``pip install .`` (not editable) must carry every source and header the kernel library compiles from,
    else the installed package silently falls back to MindSpore's slower layers."""
    import shutil
    import zipfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = tmp_path / "src"  # a clean copy: no build/ or egg-info left from an earlier build of the checkout
    shutil.copytree(os.path.join(root, "mindshuffle"), src / "mindshuffle",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "README.md"):
        shutil.copy(os.path.join(root, name), src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(src), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("mindshuffle-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = {"mindshuffle/accel/cpu/csrc/" + os.path.basename(p) for p in build.SOURCES + build.HEADERS}
    assert {"mindshuffle/accel/cpu/csrc/" + n for n in ("parallel.h", "simd.h", "conv1x1.cc")} <= needed
    assert needed <= names, sorted(needed - names)
