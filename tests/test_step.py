"""The compiled training step on CPU, graph mode: N steps per host call (the loop the Ascend sink runs in)
equal N single steps; metrics stay on the device and are read once per call; AMP keeps its wrapper and computes
the loss in float32; overflowed steps are skipped with drop_overflow_update and dynamic scaling."""
import dataclasses

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore import nn

from mindshuffle.recipe import load
from mindshuffle.train.build import make_loss, make_optimizer
from mindshuffle.train.plan import resolve
from mindshuffle.train.step import HostFeed, TrainStep, compile_fn

CLASSES = 4


class Tiny(nn.Cell):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, has_bias=False, weight_init="he_uniform")
        self.bn = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(8, CLASSES)

    def construct(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.bn(self.conv(x))))))


def _cfg(*args):
    return load(None, ["--data_dir", "/d", "--lr", "0.1", "--label_smoothing", "0.1", *args])


def _twin(seed=0):
    ms.set_seed(seed)
    return Tiny()


def _batches(n=6, batch=4, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n * batch, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, CLASSES, n * batch).astype(np.int32)
    return ds.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(batch)


def _train(sink_size, calls):
    cfg = _cfg()
    plan = dataclasses.replace(resolve(cfg, 0, 1, 6), sink_size=sink_size)
    net = _twin()
    net.set_train(True)
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, np.full(6, 0.1, np.float32), 1.0), plan)
    feed = HostFeed(step, plan)
    feed.start_epoch(_batches())
    losses, reads = [], 0
    for _ in range(calls):
        feed.call(sink_size)
        m = step.metrics.read()
        reads += 1
        losses += m["last_losses"][-sink_size:]
    return {p.name: p.asnumpy() for p in net.get_parameters()}, losses, m, reads


def test_n_steps_per_call_equal_n_single_steps():
    w1, l1, m1, r1 = _train(1, 6)
    w3, l3, m3, r3 = _train(3, 2)
    assert (r1, r3) == (6, 2)                                     # one host read per call
    assert len(l1) == len(l3) == 6 and m1["steps"] == m3["steps"] == 6
    np.testing.assert_allclose(l3, l1, rtol=1e-6)                 # the same logged losses, step by step
    for k in w1:
        np.testing.assert_allclose(w3[k], w1[k], rtol=1e-6, atol=1e-7, err_msg=k)
    assert m3["seen"] == 24 and m3["loss_sum"] == pytest.approx(sum(l1) * 4, rel=1e-5)
    assert len(set(np.round(l1, 6))) > 1                          # it trained: the losses moved


def test_amp_keeps_the_wrapper_and_computes_the_loss_in_float32():
    cfg = _cfg()
    plan = dataclasses.replace(resolve(cfg, 0, 1, 6), amp_level="O3")
    net = _twin()
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, np.full(6, 0.1, np.float32), 1.0), plan)
    assert step.run_net is not None
    x = ms.Tensor(np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32))
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    def raw_logits(a):
        return step.run_net(a)

    raw = compile_fn(raw_logits, plan)(x)
    raw = raw.asnumpy()
    assert np.array_equal(raw, raw.astype(np.float16).astype(np.float32))   # the fp16 network ran ...
    scaled, (loss, logits) = compile_fn(step.forward, plan)(x, y)
    assert logits.dtype == ms.float32 and loss.dtype == ms.float32  # ... the loss sees float32 logits


@pytest.mark.parametrize("kind", ["fixed", "dynamic"])
def test_overflowed_step_is_skipped(kind):
    cfg = _cfg("--loss_scale_type", kind, "--drop_overflow_update", "True", "--loss_scale", "1024")
    plan = dataclasses.replace(resolve(cfg, 0, 1, 6), amp_level="O0", loss_scale=1024.0, loss_scale_type=kind,
                               drop_overflow_update=True, optimizer_loss_scale=1.0)
    net = _twin()
    net.set_train(True)
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, np.full(6, 0.1, np.float32), 1.0), plan)
    train = compile_fn(step.step, plan)
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    y = ms.Tensor(np.array([0, 1, 2, 3], np.int32))
    before = net.fc.weight.asnumpy().copy()
    bad = x.copy()
    bad[0, 0, 0, 0] = np.inf
    train(ms.Tensor(bad), y)
    m = step.metrics.read()
    assert m["skipped"] == 1
    np.testing.assert_array_equal(net.fc.weight.asnumpy(), before)   # no update from inf gradients
    if kind == "dynamic":
        assert float(step.scaler.scale_value.asnumpy()) == 512.0      # halved on overflow
    train(ms.Tensor(x), y)
    assert step.metrics.read()["skipped"] == 1
    assert not np.array_equal(net.fc.weight.asnumpy(), before)      # a clean step updates
    w = net.fc.weight.asnumpy()
    assert np.isfinite(w).all()
