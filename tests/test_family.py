"""The rest of the family: V2 + SE, V2*, V2-50, SE-ShuffleNet V2-164, V2+ (issue 6).

FLOPs come from the project's profiler (mindshuffle.research.analysis: multiply-adds of convolutions and FC layers).
"""
import glob
import os

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from conftest import ROOT, trainable_count
from mindshuffle import create_model, list_models, model_info
from mindshuffle.research.analysis import profile_cell
from mindshuffle.models.shufflenet_v2_large import (AUX_LOSS_WEIGHTS, AuxHead, AuxHeadLoss, ResidualSEUnit,
                                                    SEShuffleNetV2Large, ShuffleNetV2_50)
from mindshuffle.models.shufflenet_v2_plus import (ARCHITECTURE, BLOCK_KINDS, ShuffleNetV2Plus,
                                                   ShuffleUnitV2Plus, SqueezeExciteBN)
from mindshuffle.layers import ConvBNAct, SqueezeExcite

NEW = (list_models("shufflenet_v2_x*_se") + list_models("shufflenet_v2_star_*") + list_models("shufflenet_v2_plus_*")
       + ["shufflenet_v2_50", "se_shufflenet_v2_164"])

# name -> (published MFLOPs, published params or None, where)
PUBLISHED = {
    "shufflenet_v2_x2_0_se": (597, None, "paper Table 8"),
    "shufflenet_v2_50": (2300, None, "paper Table 6"),
    "se_shufflenet_v2_164": (12700, None, "paper Table 6; params checked with aux heads below"),
    "shufflenet_v2_plus_small": (156, 5.1e6, "authors' README"),
    "shufflenet_v2_plus_medium": (222, 5.6e6, "authors' README"),
    "shufflenet_v2_plus_large": (360, 6.7e6, "authors' README"),
}


def count_mflops(net, size=224):
    """Multiply-adds per image at ``size`` px, in millions (one PyNative pass with hooks)."""
    flops = profile_cell(net, (3, size, size)).flops / 1e6
    assert ms.get_context("mode") == ms.GRAPH_MODE  # the profiler restores the mode
    return flops


@pytest.fixture(scope="module")
def v2_164():
    return create_model("se_shufflenet_v2_164")


def _build(name, v2_164):
    return v2_164 if name == "se_shufflenet_v2_164" else create_model(name)


def test_counter_reproduces_v2_figures():
    assert count_mflops(create_model("shufflenet_v2_x1_0")) == pytest.approx(145.81, abs=0.01)


def test_everything_registered():
    assert len(NEW) == 4 + 4 + 3 + 2
    for name in NEW:
        info = model_info(name)
        assert info.params and info.flops and info.source and info.paper, name


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_flops_and_params_against_published(name, v2_164):
    net = _build(name, v2_164)
    flops_pub, params_pub, _ = PUBLISHED[name]
    ours = count_mflops(net)
    assert ours == pytest.approx(model_info(name).flops, abs=0.01)
    assert abs(ours / flops_pub - 1) <= 0.03, (name, ours, flops_pub)
    assert trainable_count(net) == model_info(name).params
    if params_pub:
        assert abs(trainable_count(net) / params_pub - 1) <= 0.02, (name, trainable_count(net))


@pytest.mark.parametrize("name", ["shufflenet_v2_star_x1_0", "shufflenet_v2_x0_5_se"])
def test_unpublished_metadata_is_measured(name):
    net = create_model(name)
    assert count_mflops(net) == pytest.approx(model_info(name).flops, abs=0.01)
    assert trainable_count(net) == model_info(name).params


def test_164_params_with_aux_heads_match_published(v2_164):
    # the authors' 140.7 M counts the three auxiliary classifiers; build them alone (cheap) and add them up
    heads = [AuxHead(c, c, 1000) for c in (256, 512, 1024)]
    total = trainable_count(v2_164) + sum(trainable_count(h) for h in heads)
    assert total == model_info("se_shufflenet_v2_164").extra["params_with_aux_heads"]
    assert abs(total / 140.7e6 - 1) <= 0.002


# Graph-mode forwards here cover each code path once (SE unit, V2+, V2-50, the 164's units; V2* in the feature
# test); the published models also run in PyNative in the FLOPs test, and
# tests/test_models.py::test_every_model_forward_small runs every registered model in graph mode at 64 px.
# name -> stage map (channels, stride) expected at the stage outputs
FORWARD = {
    "shufflenet_v2_x0_5_se": ((48, 8), (96, 16), (192, 32)),
    "shufflenet_v2_plus_small": ((36, 4), (104, 8), (208, 16), (416, 32)),
    "shufflenet_v2_50": ((244, 4), (488, 8), (976, 16), (1952, 32)),
    "se_shufflenet_v2_164": ((256, 4), (512, 8), (1024, 16), (2048, 32)),
}


class _MapsLogitsPreLogits(nn.Cell):
    """Stage maps, logits and pre-logits in one graph, so that each model compiles once."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.stage_cells = nn.CellList(net.stages())
        self.last = getattr(net, "conv5", None) or getattr(net, "conv6", None) or net.conv_last

    def construct(self, x):
        y = self.net.stem(x)
        maps = ()
        for stage in self.stage_cells:
            y = stage(y)
            maps = maps + (y,)
        feats = self.last(y)
        return maps, self.net.forward_head(feats), self.net.forward_head(feats, True)


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_small(name, v2_164):
    classes = 1000 if name == "se_shufflenet_v2_164" else 7
    net = v2_164 if name == "se_shufflenet_v2_164" else create_model(name, num_classes=classes)
    net.set_train(False)
    size = 64
    maps, y, pre = _MapsLogitsPreLogits(net)(
        Tensor(np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)))
    assert [m.shape for m in maps] == [(1, c, size // r, size // r) for c, r in FORWARD[name]]
    assert [(f["num_chs"], f["reduction"]) for f in net.feature_info[-len(maps):]] == list(FORWARD[name])
    assert y.shape == (1, classes) and np.isfinite(y.asnumpy()).all()
    assert pre.shape == (1, net.num_features)


def test_se_sits_at_the_end_of_the_main_branch():
    net = create_model("shufflenet_v2_x1_0_se")
    for stage, c in zip(net.stages(), (116, 232, 464)):
        for i, unit in enumerate(stage):
            se = unit.branch_main[-1]
            assert isinstance(se, SqueezeExcite)
            # main branch output: c/2, or c - c_in in the down-sampling unit (authors' layout)
            branch_out = c // 2 if i else c - unit.branch_proj[1].out_channels
            assert unit.branch_main[-2].out_channels == branch_out
            assert se.reduce.in_channels == branch_out and se.reduce.out_channels == branch_out // 2
    # the plain model has none
    assert not any(isinstance(c, SqueezeExcite) for _, c in create_model("shufflenet_v2_x1_0").cells_and_names())


def test_v2_star_extra_depthwise_before_first_pointwise():
    net = create_model("shufflenet_v2_star_x1_0")
    for stage in net.stages():
        for unit in stage:
            dw, pw = unit.branch_main[0], unit.branch_main[1]
            assert dw.kernel_size == 3 and dw.groups == dw.in_channels == dw.out_channels and dw.stride == 1
            assert pw.kernel_size == 1 and pw.groups == 1
    # 3 * 3 weights per channel more than the plain model, nothing else
    extra = trainable_count(net) - trainable_count(create_model("shufflenet_v2_x1_0"))
    chans = sum(u.branch_main[0].in_channels for s in net.stages() for u in s)
    assert extra == chans * (9 + 2)  # depthwise weights + BN gamma/beta


def test_v2_star_feature_maps():
    net = create_model("shufflenet_v2_star_x0_5", features_only=True)
    net.set_train(False)
    outs = net(Tensor(np.ones((2, 3, 64, 64), np.float32)))
    assert [(f["num_chs"], f["reduction"]) for f in net.feature_info] == [(24, 4), (48, 8), (96, 16), (192, 32)]
    assert [o.shape for o in outs] == [(2, 24, 16, 16), (2, 48, 8, 8), (2, 96, 4, 4), (2, 192, 2, 2)]
    assert [f["num_chs"] for f in create_model("shufflenet_v2_star_x1_0", features_only=True).feature_info] == \
        [24, 116, 232, 464]


def test_v2_plus_structure():
    net = ShuffleNetV2Plus("medium")
    units = [u for s in net.stages() for u in s]
    assert [u.kind for u in units] == [BLOCK_KINDS[a] for a in ARCHITECTURE]
    for s, stage in enumerate(net.stages()):
        for unit in stage:
            acts = {type(c.act).__name__ for _, c in unit.cells_and_names() if isinstance(c, ConvBNAct) and c.use_act}
            assert acts == ({"ReLU"} if s == 0 else {"HSwish"})
            assert isinstance(unit.branch_main[-1], SqueezeExciteBN) == (s >= 2)
    ks = [u.branch_main[1].kernel_size for u in units if u.kind != "xception"]
    assert ks == [int(BLOCK_KINDS[a][-1]) for a in ARCHITECTURE if a != 3]
    # a down-sampling unit's identity side uses its main branch's kernel
    assert units[8].kind == "shuffle7" and units[8].branch_proj[0].kernel_size == 7
    with pytest.raises(ValueError, match="20 block choices"):
        ShuffleNetV2Plus("small", architecture=(0,) * 19)
    with pytest.raises(ValueError, match="unknown size"):
        ShuffleNetV2Plus("tiny")


def test_v2_plus_xception_unit_stride_two():
    # never in the searched architecture, but the unit must still be well formed
    unit = ShuffleUnitV2Plus(16, 32, 2, kind="xception", act="hswish", se=True)
    unit.set_train(False)
    assert unit(Tensor(np.ones((1, 16, 8, 8), np.float32))).shape == (1, 32, 4, 4)


def test_aux_heads_off_by_default(v2_164):
    assert v2_164.aux_heads is False
    assert not any("aux" in p.name for p in v2_164.get_parameters())


def _tiny_164(**kw):
    # stage2 has a residual unit after its first; the rest one (down-sampling) unit each
    return SEShuffleNetV2Large(num_classes=5, stem=(8, 8, 16), widths=(16, 32, 64, 128), repeats=(2, 1, 1, 1),
                               head_channels=32, groups=4, **kw)


def test_aux_head_loss_weights():
    rng = np.random.default_rng(0)
    outs = tuple(Tensor(rng.normal(size=(3, 5)).astype(np.float32)) for _ in range(4))
    label = Tensor(np.array([1, 3, 0], np.int32))
    ce = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    manual = sum(w * float(ce(o, label).asnumpy()) for w, o in zip(AUX_LOSS_WEIGHTS, outs))
    assert float(AuxHeadLoss(ce)(outs, label).asnumpy()) == pytest.approx(manual, rel=1e-5)
    assert float(AuxHeadLoss(ce)(outs[0], label).asnumpy()) == pytest.approx(float(ce(outs[0], label).asnumpy()))


def test_aux_heads_train_and_stay_out_of_inference():
    net = _tiny_164(aux_heads=True)
    assert {p.name.split(".")[0] for p in net.trainable_params()} >= {"aux14", "aux28", "aux56"}
    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(4, 3, 32, 32)).astype(np.float32))
    label = Tensor(np.array([1, 3, 0, 2], np.int32))
    loss_net = nn.WithLossCell(net, AuxHeadLoss(nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")))
    step = nn.TrainOneStepCell(loss_net, nn.Momentum(net.trainable_params(), learning_rate=0.02, momentum=0.9))
    step.set_train(True)
    aux_w = net.aux14.fc.weight.asnumpy().copy()
    losses = [float(step(x, label).asnumpy()) for _ in range(4)]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert not np.allclose(net.aux14.fc.weight.asnumpy(), aux_w)  # the auxiliary heads are trained
    net.set_train(False)
    assert net(x).shape == (4, 5)  # inference: the main logits only


def test_drop_rate_defaults():
    assert ShuffleNetV2Plus("small").drop_rate == pytest.approx(0.2)
    assert ShuffleNetV2_50(widths=(8, 16, 32, 64, 128, 64), repeats=(1, 1, 1, 1)).drop_rate == 0
    assert _tiny_164().drop_rate == pytest.approx(0.2)
    assert ShuffleNetV2Plus("small", drop_rate=0.0).drop_rate == 0


RECIPES = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*_ascend.yaml"))
                 if any(k in os.path.basename(p) for k in ("v2_se_", "v2_star_", "v2_plus_", "v2_50_", "v2_164_")))


def test_every_new_model_has_a_recipe():
    from mindshuffle import recipe
    assert sorted(recipe.load(p).model for p in RECIPES) == sorted(NEW)


@pytest.mark.parametrize("path", RECIPES, ids=os.path.basename)
def test_recipes_load(path):
    from mindshuffle import recipe
    cfg = recipe.load(path)
    assert cfg.model in NEW and cfg.device_target == "Ascend"
    assert cfg.batch_size * 8 == cfg.global_batch_size


def test_residual_unit_rejects_width_change():
    with pytest.raises(ValueError, match="first unit"):
        ResidualSEUnit(16, 32, 1, first=False)


def test_reset_classifier_large_and_plus():
    tiny = _tiny_164(aux_heads=True)
    tiny.reset_classifier(4)
    assert tiny.classifier.weight.shape == (4, 32) and tiny.classifier.bias.shape == (4,)
    assert not tiny.aux_heads and not any("aux" in p.name for p in tiny.trainable_params())
    plus = ShuffleNetV2Plus("small", num_classes=3)
    plus.reset_classifier(4)
    assert plus.classifier.weight.shape == (4, 1280) and plus.classifier.bias is None
    plus.reset_classifier(0)
    assert isinstance(plus.classifier, nn.Identity)
