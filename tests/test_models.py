"""Models: registry, exact parameter counts, shuffle order, feature maps, input sizes, a training step."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn, ops

from conftest import trainable_count
from mindshuffle import create_model, list_models, model_info
from mindshuffle.layers import ChannelSplit, GroupShuffle, channel_shuffle, fuse_model
from mindshuffle.registry import UnknownModelError, register_model

V2 = {"x0_5": (1_365_792, 1_366_792), "x1_0": (2_278_760, 2_278_604),
      "x1_5": (3_506_720, 3_503_624), "x2_0": (7_402_600, 7_393_996)}
V1 = {3: (717_324, 1_864_728, 3_441_168, 5_449_776), 8: (1_010_448, 2_433_768, 4_268_952, 6_521_232)}


@pytest.mark.parametrize("width", sorted(V2))
def test_v2_param_counts_exact(width):
    megvii, tv = V2[width]
    assert trainable_count(create_model(f"shufflenet_v2_{width}")) == megvii
    assert trainable_count(create_model(f"shufflenet_v2_{width}_tv")) == tv
    # the suffix and the argument are the same model
    assert trainable_count(create_model(f"shufflenet_v2_{width}", layout="torchvision")) == tv
    assert model_info(f"shufflenet_v2_{width}").params == megvii


@pytest.mark.parametrize("groups", sorted(V1))
def test_v1_param_counts_exact(groups):
    got = tuple(trainable_count(create_model(f"shufflenet_v1_g{groups}_x{s}")) for s in ("0_5", "1_0", "1_5", "2_0"))
    assert got == V1[groups]


def test_mindcv_v1_aliases_and_namespace():
    import mindcv
    assert trainable_count(create_model("shufflenet_v1_g3_10")) == V1[3][1]
    assert trainable_count(create_model("shufflenet_v1_g8_05")) == V1[8][0]
    # mindshuffle's registry is its own: MindCV's constructors are untouched
    assert type(mindcv.models.create_model("shufflenet_v2_x0_5")).__module__.startswith("mindcv")


@pytest.mark.parametrize("name", list_models())
def test_metadata_params_match_the_built_model(name):
    info = model_info(name)
    assert info.params is not None, f"{name}: register params"
    assert trainable_count(create_model(name)) == info.params


def test_bn_statistics_not_counted():
    net = create_model("shufflenet_v2_x0_5")
    names = [p.name for p in net.trainable_params()]
    assert not any("moving" in n for n in names)
    assert any("moving_mean" in p.name for p in net.get_parameters())


def test_unknown_name_names_closest():
    with pytest.raises(UnknownModelError, match="shufflenet_v2_x1_0"):
        create_model("shufflenet_v2_x1_O")
    with pytest.raises(UnknownModelError, match="unknown model 'resnet50'"):
        create_model("resnet50")


def test_register_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda **kw: None, name="shufflenet_v2_x0_5")


def test_list_models_pattern_and_metadata():
    v2 = list_models("shufflenet_v2_x*")
    assert {"shufflenet_v2_x0_5", "shufflenet_v2_x2_0_tv"} <= set(v2)
    assert all(n.startswith("shufflenet_v2_x") for n in v2)
    info = model_info("shufflenet_v2_x1_0")
    assert info.flops == pytest.approx(146, rel=0.01) and info.top1 and info.source
    assert "shufflenet_v1_g3_10" in list_models("*g3_10", include_aliases=True)


@pytest.mark.parametrize("groups", [2, 3, 4, 8])
def test_group_shuffle_matches_textbook(rng, groups):
    c = 4 * groups
    x = rng.normal(size=(2, c, 3, 3)).astype(np.float32)
    cell = GroupShuffle(c, groups)
    want = channel_shuffle(x, groups)
    for train in (True, False):
        cell.set_train(train)
        np.testing.assert_array_equal(cell(Tensor(x)).asnumpy(), want)


def test_channel_split_is_shuffle_then_split(rng):
    """The fused split equals the textbook shuffle (reshape to groups, transpose, flatten) followed by halving.

    The authors (and MindCV) shuffle by viewing the C channels as (C/2, 2) and transposing - the textbook
    definition with C/2 groups, which is the inverse of the 2-group shuffle - so the identity half is the even
    channels and the main half the odd ones. Either way each half takes exactly half of each branch's channels.
    """
    a = rng.normal(size=(2, 8, 4, 4)).astype(np.float32)     # previous unit's identity half
    b = rng.normal(size=(2, 8, 4, 4)).astype(np.float32)     # previous unit's main-branch output
    cat = np.concatenate([a, b], 1)
    textbook = channel_shuffle(cat, 8)                        # reshape (N, 8, 2, ...), swap, flatten
    split = ChannelSplit(16)
    for train in (True, False):
        split.set_train(train)
        first, second = (t.asnumpy() for t in split(Tensor(cat)))
        np.testing.assert_array_equal(np.concatenate([first, second], 1), textbook)
        # the inverse view: the 2-group textbook shuffle of the fused output gives back the concat
        np.testing.assert_array_equal(channel_shuffle(np.concatenate([first, second], 1), 2), cat)
        for half in (first, second):   # each half mixes 4 channels of a and 4 of b
            from_a = sum(any(np.array_equal(h, c) for c in a[0]) for h in half[0])
            from_b = sum(any(np.array_equal(h, c) for c in b[0]) for h in half[0])
            assert (from_a, from_b) == (4, 4)


class _GradOf(nn.Cell):
    def __init__(self, net):
        super().__init__()
        self.net, self.grad = net, ops.GradOperation()

    def construct(self, x):
        return self.grad(self.net)(x)


class _Weighted(nn.Cell):
    def __init__(self, split, w0, w1):
        super().__init__()
        self.split, self.w0, self.w1 = split, Tensor(w0), Tensor(w1)

    def construct(self, x):
        a, b = self.split(x)
        return (a * self.w0).sum() + (b * self.w1).sum()


def test_channel_split_gradient(rng):
    x = rng.normal(size=(2, 8, 3, 3)).astype(np.float32)
    w0 = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    w1 = rng.normal(size=(2, 4, 3, 3)).astype(np.float32)
    split = ChannelSplit(8)
    split.set_train(True)
    g = _GradOf(_Weighted(split, w0, w1))(Tensor(x)).asnumpy()
    want = np.zeros_like(x)
    want[:, 0::2], want[:, 1::2] = w0, w1
    np.testing.assert_allclose(g, want, rtol=1e-6)


CORE = [n for n in list_models() if model_info(n).family in ("shufflenet_v2", "shufflenet_v1")]


@pytest.mark.parametrize("name", CORE)   # the other families: tests/test_family.py
def test_every_model_forward_small(name):
    net = create_model(name, num_classes=7)
    net.set_train(False)
    size = 32
    y = net(Tensor(np.random.default_rng(1).normal(size=(1, 3, size, size)).astype(np.float32)))
    assert y.shape == (1, 7)
    assert np.isfinite(y.asnumpy()).all()


@pytest.mark.parametrize("size", [224, 64, 32])
def test_input_sizes(size):
    net = create_model("shufflenet_v2_x1_0", num_classes=5)
    net.set_train(False)
    y = net(Tensor(np.ones((1, 3, size, size), np.float32)))
    assert y.shape == (1, 5)


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5"])
def test_features_only(name):
    net = create_model(name, features_only=True)
    net.set_train(False)
    outs = net(Tensor(np.ones((2, 3, 64, 64), np.float32)))
    assert [o.shape for o in outs] == [(2, f["num_chs"], 64 // f["reduction"], 64 // f["reduction"])
                                       for f in net.feature_info]
    assert [f["reduction"] for f in net.feature_info] == [4, 8, 16, 32]
    sub = create_model(name, features_only=True, out_indices=(1, 3))
    sub.set_train(False)
    outs = sub(Tensor(np.ones((1, 3, 64, 64), np.float32)))
    assert [o.shape[2] for o in outs] == [8, 2]
    with pytest.raises(ValueError, match="out_indices"):
        create_model(name, features_only=True, out_indices=(4,))


def test_in_channels_and_reset_classifier():
    net = create_model("shufflenet_v2_x0_5", in_channels=1, num_classes=3)
    net.reset_classifier(11)
    net.set_train(False)
    assert net(Tensor(np.ones((1, 1, 32, 32), np.float32))).shape == (1, 11)
    assert net.forward_head(net.forward_features(Tensor(np.ones((1, 1, 32, 32), np.float32))),
                            pre_logits=True).shape == (1, 1024)


def test_x2_dropout_only_in_megvii_layout():
    assert create_model("shufflenet_v2_x2_0").drop_rate == pytest.approx(0.2)
    assert create_model("shufflenet_v2_x2_0_tv").drop_rate == 0


def _randomise_bn(net, rng):
    for p in net.get_parameters():
        if "moving_variance" in p.name or "gamma" in p.name:
            p.set_data(Tensor(rng.uniform(0.5, 2.0, p.shape).astype(np.float32)))
        elif "moving_mean" in p.name or "beta" in p.name:
            p.set_data(Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5"])
def test_fused_bn_same_outputs(name, rng):
    net = create_model(name, num_classes=10)
    _randomise_bn(net, rng)
    net.set_train(False)
    x = Tensor(rng.normal(size=(2, 3, 64, 64)).astype(np.float32))
    before = net(x).asnumpy()
    after = fuse_model(net)(x).asnumpy()
    assert not any("moving_mean" in p.name for p in net.get_parameters())
    np.testing.assert_allclose(after, before, atol=1e-4 * np.abs(before).max())


@pytest.mark.parametrize("name", ["shufflenet_v2_x0_5", "shufflenet_v1_g3_x0_5"])
def test_training_step_lowers_loss(name):
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(8, 3, 32, 32)).astype(np.float32))
    y = Tensor(np.arange(8, dtype=np.int32) % 4)
    net = create_model(name, num_classes=4)
    loss_net = nn.WithLossCell(net, nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean"))
    step = nn.TrainOneStepCell(loss_net, nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9))
    step.set_train(True)
    losses = [float(step(x, y).asnumpy()) for _ in range(12)]
    assert np.isfinite(losses).all()
    assert max(losses[-3:]) < 0.3 * losses[0], losses
