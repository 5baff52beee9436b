"""Every registered model builds for Ascend 910B / 910_93 (Atlas A2/A3), with unchanged numerics.

MindSpore 2.7.1 asks for the Ascend SoC while it builds some layers: ``nn.AvgPool2d`` raises ValueError on
'ascend910b' and 'ascend910_93' when it would pad (``pad_mode="pad"``, ``padding``, ``ceil_mode``,
``count_include_pad=False``, ``divisor_override``). The SoC comes from ``MSContext.get_instance()
.get_ascend_soc_version()``. MindSpore 2.10 asks ``MSContext.get_instance().ascend_soc_supports_feature(name)``
instead, with feature names that its header ``include/mindspore/core/include/utils/ascend_soc_traits.h`` groups
into the ascend910 "classic" line and the ascend910b / ascend910_93 "successor" line (``avg_pool2d_pad_constraint_
train_successor`` for this check). The ``fake_soc`` fixture below makes both answer for a chosen SoC on this CPU
machine, so the build an Atlas A2 would run is run here, on either MindSpore.
"""
import functools
import importlib
import os

import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from conftest import randomize
from mindshuffle import create_model, list_models
from mindshuffle.checkpoints import set_authors_shuffle, set_pool_same, uses_pool_same
from mindshuffle.export import make_exportable
from mindshuffle.models.shufflenet_v1 import ShuffleUnitV1, ZeroPadAvgPool

A2_SOCS = ("ascend910b", "ascend910_93")
_MS_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ms.__file__)))


@functools.lru_cache(maxsize=None)
def soc_asking_modules() -> tuple:
    """Dotted names of the modules in mindspore/nn, mindspore/ops, mindspore/boost and mindspore/amp.py whose
    source asks for the Ascend SoC version (read from the installed files, so a new check is not missed)."""
    pkg = os.path.join(_MS_ROOT, "mindspore")
    paths = [os.path.join(pkg, "amp.py")]
    for sub in ("nn", "ops", "boost"):
        for folder, _, files in os.walk(os.path.join(pkg, sub)):
            paths += [os.path.join(folder, f) for f in files if f.endswith(".py")]
    found = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
            if "get_ascend_soc_version" in text or "ascend_soc_supports_feature" in text:
                found.append(os.path.relpath(path, _MS_ROOT)[:-3].replace(os.sep, "."))
    return tuple(sorted(found))


class _FakeInstance:
    """The real MSContext instance, except for the SoC version it reports."""

    def __init__(self, real, soc: str):
        self._real, self._soc = real, soc

    def get_ascend_soc_version(self) -> str:
        return self._soc

    def ascend_soc_supports_feature(self, feature: str) -> bool:
        """MindSpore >= 2.10's question, answered from the header's two training lines."""
        if feature.endswith("_successor") or feature == "train_hq_dtype_line":
            return self._soc in A2_SOCS
        if "_train_classic" in feature:
            return self._soc == "ascend910"
        return self._real.ascend_soc_supports_feature(feature)

    def __getattr__(self, name):
        return getattr(self._real, name)


class _FakeMSContext:
    """Stands in for the ``MSContext`` class a module imported: ``get_instance()`` gives a ``_FakeInstance``."""

    def __init__(self, real_cls, soc: str):
        self._real_cls, self._soc = real_cls, soc

    def get_instance(self):
        return _FakeInstance(self._real_cls.get_instance(), self._soc)

    def __getattr__(self, name):
        return getattr(self._real_cls, name)


@pytest.fixture
def fake_soc(monkeypatch):
    """``fake_soc("ascend910b")``: until the test ends, MindSpore's layers see that SoC when they are built."""
    from mindspore._c_expression import MSContext

    def set_soc(soc: str) -> list:
        patched = []
        for name in soc_asking_modules():
            module = importlib.import_module(name)
            if getattr(module, "MSContext", None) is not None:
                monkeypatch.setattr(module, "MSContext", _FakeMSContext(MSContext, soc))
                patched.append(name)
        return patched

    return set_soc


def _old_v1_pool() -> nn.AvgPool2d:
    """The construct ShuffleNet V1 used before: refused on Atlas A2 SoCs."""
    return nn.AvgPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)


# ---------------------------------------------------------------------------------------------------------
# the fake is real: it turns the old construct into the Atlas A2 failure, and only for A2 SoCs

def test_soc_checks_in_mindspore_are_the_known_ones(fake_soc):
    found = soc_asking_modules()
    # construction-time checks: nn.AvgPool2d (raises) and TrainOneStepWithLossScaleCell (picks the overflow
    # check); amp/boost choose overflow checks too; _custom_ops_utils looks up Ascend custom-op files
    for name in ("mindspore.nn.layer.pooling", "mindspore.nn.wrap.loss_scale", "mindspore.amp"):
        assert name in found
    patched = fake_soc("ascend910b")
    assert "mindspore.nn.layer.pooling" in patched and "mindspore.nn.wrap.loss_scale" in patched


@pytest.mark.parametrize("soc", A2_SOCS)
def test_fake_soc_makes_old_v1_pool_fail(fake_soc, soc):
    fake_soc(soc)
    with pytest.raises(ValueError, match="Ascend910B"):
        _old_v1_pool()
    # what the models use instead builds
    ZeroPadAvgPool(3, 2, 1)
    nn.AvgPool2d(kernel_size=3, stride=2, pad_mode="same")  # MindCV's V1 pool (set_pool_same)
    nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="pad", padding=1)  # the stems' max pool: not checked


@pytest.mark.parametrize("soc", ["", "ascend910", "ascend310p"])
def test_fake_soc_other_socs_build_old_pool(fake_soc, soc):
    fake_soc(soc)
    assert isinstance(_old_v1_pool(), nn.AvgPool2d)


# ---------------------------------------------------------------------------------------------------------
# every model builds on both A2 SoCs (every model on 910B; on 910_93 all V1 and one model per other class,
# since MindSpore checks both SoCs with the same code)

_SUBSET_910_93 = [n for n in list_models() if n.startswith("shufflenet_v1_")] + [
    "shufflenet_v2_x0_5", "shufflenet_v2_x0_5_tv", "shufflenet_v2_x0_5_se", "shufflenet_v2_star_x0_5",
    "shufflenet_v2_plus_small", "shufflenet_v2_50"]
_BUILDS = [("ascend910b", n) for n in list_models()] + [("ascend910_93", n) for n in _SUBSET_910_93]


@pytest.mark.parametrize("soc,name", _BUILDS)
def test_model_builds_on_atlas_a2(fake_soc, soc, name):
    fake_soc(soc)
    net = create_model(name, num_classes=10)
    assert not any(isinstance(c, nn.AvgPool2d) and c.pad_mode == "PAD" for _, c in net.cells_and_names())


@pytest.mark.parametrize("soc", A2_SOCS)
def test_v1_switches_and_export_build_on_atlas_a2(fake_soc, soc):
    fake_soc(soc)
    mindcv_like = set_authors_shuffle(set_pool_same(create_model("shufflenet_v1_g3_x0_5", num_classes=10)))
    assert uses_pool_same(mindcv_like)
    make_exportable(mindcv_like)
    make_exportable(create_model("shufflenet_v1_g8_x0_5", num_classes=10))
    create_model("shufflenet_v1_g3_x0_5", num_classes=10, features_only=True)


# ---------------------------------------------------------------------------------------------------------
# same numerics as the old construct (built on CPU, without a faked SoC)

@pytest.mark.parametrize("shape", [(2, 24, 56, 56), (2, 240, 25, 25), (1, 480, 13, 13), (1, 3, 8, 9)])
def test_zero_pad_pool_is_bit_identical_to_old_pool(shape):
    x = ms.Tensor(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    old, new = _old_v1_pool(), ZeroPadAvgPool(3, 2, 1)
    want, got = old(x).asnumpy(), new(x).asnumpy()
    assert got.shape == want.shape and np.array_equal(got, want)
    # the gradient too (training)
    assert np.array_equal(ms.grad(new)(x).asnumpy(), ms.grad(old)(x).asnumpy())


def _v1_units(net) -> list:
    return [c for _, c in net.cells_and_names() if isinstance(c, ShuffleUnitV1) and c.stride == 2]


def _old_pools(net, mindcv: bool):
    """``net`` with the pools the model had before this change (for MindCV's layout: what set_pool_same set)."""
    if mindcv:
        net = set_authors_shuffle(net)
        net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, pad_mode="same")
    for unit in _v1_units(net):
        unit.pool = nn.AvgPool2d(kernel_size=3, stride=2, pad_mode="same") if mindcv else _old_v1_pool()
    return net


# g3 in the authors' layout (their padding), g8 in MindCV's (set_pool_same + the authors' shuffle order);
# each compiles two whole networks, so the other two combinations are left to the pool test above
@pytest.mark.parametrize("name,mindcv", [("shufflenet_v1_g3_x1_0", False), ("shufflenet_v1_g8_x1_0", True)])
def test_v1_logits_unchanged(name, mindcv):
    # 100 px: the first shortcut pool sees a 25x25 map (odd), then 13x13 and 7x7
    x = ms.Tensor(np.random.default_rng(1).normal(size=(2, 3, 100, 100)).astype(np.float32))
    net = randomize(create_model(name, num_classes=10), seed=4)
    if mindcv:
        net = set_authors_shuffle(set_pool_same(net))
    units = _v1_units(net)
    assert len(units) == 3 and uses_pool_same(net) == mindcv
    assert all(isinstance(u.pool, nn.AvgPool2d if mindcv else ZeroPadAvgPool) for u in units)
    got = net(x).asnumpy()
    want = _old_pools(randomize(create_model(name, num_classes=10), seed=4), mindcv)(x).asnumpy()
    assert float(np.abs(want).max()) > 1e-2
    assert np.array_equal(got, want), float(np.abs(got - want).max())
