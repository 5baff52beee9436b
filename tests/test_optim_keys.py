"""MindCV's optimisation keys, on CPU in graph mode through the real plan, TrainStep and host feed:
``gradient_accumulation_steps`` (k micro-batches of b update as one batch of k x b) and ``clip_grad`` /
``clip_value`` (clip by global norm before the optimizer, on the true gradient when the loss is scaled)."""
import dataclasses
import os
import subprocess
import sys

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
import pytest
from mindspore import nn

from mindshuffle.errors import RecipeError
from mindshuffle.recipe import load
from mindshuffle.train.build import make_loss, make_optimizer
from mindshuffle.train.plan import resolve
from mindshuffle.train.step import HostFeed, TrainStep, compile_fn

from test_train import base_args, make_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 4


class NoBN(nn.Cell):
    """Conv, ReLU, pooling and a classifier, no BatchNorm: its gradient is a plain mean over the batch, so
    accumulating micro-batches must give the big batch's update exactly (BN would normalise per micro-batch)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, has_bias=True, weight_init="he_uniform")
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Dense(8, CLASSES)

    def construct(self, x):
        return self.fc(self.flatten(self.pool(self.relu(self.conv(x)))))


def _cfg(*args):
    return load(None, ["--data_dir", "/d", "--label_smoothing", "0.1", *args])


def _net(seed=0):
    ms.set_seed(seed)
    net = NoBN()
    net.set_train(True)
    return net


def _data(images=16, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((images, 3, 8, 8)).astype(np.float32),
            rng.integers(0, CLASSES, images).astype(np.int32))


def _weights(net):
    return {p.name: p.asnumpy().copy() for p in net.trainable_params()}


def _fit(args, batch, steps, sink_size=None):
    """One epoch of ``steps`` batches of ``batch`` through resolve -> learning_rates -> make_optimizer ->
    TrainStep -> HostFeed, in the plan's host calls. Returns (weights, step metrics, plan, step)."""
    cfg = _cfg("--batch_size", str(batch), "--epoch_size", "1", *args)
    plan = resolve(cfg, 0, 1, steps)
    if sink_size:
        plan = dataclasses.replace(plan, sink_size=sink_size)
    net = _net()
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, plan.learning_rates(), 1.0), plan)
    feed = HostFeed(step, plan)
    x, y = _data(steps * batch)
    feed.start_epoch(ds.NumpySlicesDataset({"x": x, "y": y}, shuffle=False).batch(batch))
    for n in plan.calls():
        feed.call(n)
    return _weights(net), step.metrics.read(), plan, step


OPT = ["--opt", "momentum", "--momentum", "0.9", "--weight_decay", "1e-3", "--lr", "0.2",
       "--scheduler", "linear_decay", "--min_lr", "0.01"]


@pytest.mark.parametrize("k, sink_size", [(2, 3), (4, 3)])
def test_accumulation_equals_one_step_on_the_concatenated_batch(k, sink_size):
    """k micro-batches of 4 == one batch of 4k, over 3 updates with momentum, weight decay and a decaying lr
    (the lr table counted in updates); host calls of 3 micro-steps cut across the groups (device-side sums)."""
    updates = 3
    big, mb, _, _ = _fit(OPT, 4 * k, updates)
    acc, ma, plan, step = _fit(OPT + ["--gradient_accumulation_steps", str(k)], 4, updates * k, sink_size)
    assert plan.accumulation == k and plan.calls()[0] == 3 and ma["steps"] == updates * k
    assert ma["seen"] == mb["seen"] == updates * k * 4
    assert int(step.optimizer.global_step.asnumpy()[0]) == updates * k   # counts micro-batches, as a resume
    np.testing.assert_array_equal(np.unique(plan.learning_rates()).size, updates)
    start = _weights(_net())
    for name, w in big.items():
        assert not np.allclose(w, start[name], rtol=1e-3), name               # it trained
        np.testing.assert_allclose(acc[name], w, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.all(step.accum.sums[0].asnumpy() == 0) and int(step.accum.count.asnumpy()) == 0


def test_accumulation_differs_from_updating_every_micro_batch():
    """The comparison above can fail: without accumulation the same micro-batches give other weights."""
    big, _, _, _ = _fit(OPT, 8, 3)
    every, _, _, _ = _fit(OPT, 4, 6)
    assert not all(np.allclose(every[n], big[n], rtol=1e-3) for n in big)


def _grads(x, y, cfg):
    """The true gradient of the mean loss at the start weights, computed apart from the step."""
    net = _net()
    loss_fn = make_loss(cfg)
    params = net.trainable_params()

    def loss(a, b):
        return loss_fn(net(a), b)

    fn = ms.value_and_grad(loss, None, params)
    _, g = compile_fn(fn, resolve(cfg, 0, 1, 1))(ms.Tensor(x), ms.Tensor(y))
    return {p.name: v.asnumpy() for p, v in zip(params, g)}


def _one_sgd_step(x, y, *args, plan_change=None):
    cfg = _cfg("--opt", "sgd", "--momentum", "0", "--weight_decay", "0", "--lr", "0.1", "--scheduler", "constant",
               "--epoch_size", "1", *args)
    plan = resolve(cfg, 0, 1, 1)
    if plan_change:
        plan = dataclasses.replace(plan, **plan_change)
    net = _net()
    before = _weights(net)
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, plan.learning_rates(),
                                                          plan.optimizer_loss_scale), plan)
    compile_fn(step.step, plan)(ms.Tensor(x), ms.Tensor(y))
    return {n: (before[n] - w) / 0.1 for n, w in _weights(net).items()}, cfg, plan   # the gradient applied


def _norm(g):
    return float(np.sqrt(sum(float((v.astype(np.float64) ** 2).sum()) for v in g.values())))


def test_clip_grad_bounds_the_global_norm():
    x, y = _data(8)
    x *= 300.0                                                     # gradients far above the clip value
    applied, cfg, plan = _one_sgd_step(x, y, "--clip_grad", "True", "--clip_value", "1.0")
    true = _grads(x, y, cfg)
    assert plan.clip_norm == 1.0 and _norm(true) > 50
    assert _norm(applied) == pytest.approx(1.0, rel=1e-4)          # lr x clipped gradient, norm = clip_value
    for n, g in true.items():                                      # same direction: g x clip / ||g||
        np.testing.assert_allclose(applied[n], g / _norm(true), rtol=1e-3, atol=1e-6, err_msg=n)


def test_clip_grad_leaves_small_gradients_alone():
    x, y = _data(8)
    applied, cfg, _ = _one_sgd_step(x, y, "--clip_grad", "True", "--clip_value", "15")
    true = _grads(x, y, cfg)
    assert _norm(true) < 15
    for n, g in true.items():
        np.testing.assert_allclose(applied[n], g, rtol=1e-4, atol=1e-6, err_msg=n)


def test_clip_acts_on_the_unscaled_gradient_with_a_fixed_loss_scale():
    """Ascend's fixed loss scale (the optimizer would divide by it): with clip_grad the step unscales first,
    so the clip sees the true norm, not 1024 times it (which would shrink the update 1024-fold)."""
    x, y = _data(8)
    x *= 300.0
    args = ("--device_target", "Ascend", "--amp_level", "O3", "--loss_scale", "1024", "--clip_grad", "True",
            "--clip_value", "1.0")
    applied, cfg, plan = _one_sgd_step(x, y, *args, plan_change={"amp_level": "O0", "device_target": "CPU"})
    assert (plan.loss_scale, plan.optimizer_loss_scale) == (1024.0, 1.0)
    assert any("divides the gradients by loss_scale 1024 before clipping" in n for n in plan.notes)
    assert _norm(applied) == pytest.approx(1.0, rel=1e-4)
    small, _, _ = _one_sgd_step(x / 300.0, y, *args, plan_change={"amp_level": "O0", "device_target": "CPU"})
    true = _grads(x / 300.0, y, cfg)
    for n, g in true.items():                                      # unclipped: exactly the true gradient
        np.testing.assert_allclose(small[n], g, rtol=1e-4, atol=1e-6, err_msg=n)


@pytest.mark.parametrize("form", ["space", "equals"])
def test_keys_parse(form):
    pairs = [("clip_grad", "True"), ("clip_value", "1.0"), ("gradient_accumulation_steps", "2")]
    argv = [t for k, v in pairs for t in (f"--{k}", v)] if form == "space" else [f"--{k}={v}" for k, v in pairs]
    cfg = _cfg(*argv)
    assert (cfg.clip_grad, cfg.clip_value, cfg.gradient_accumulation_steps) == (True, 1.0, 2)
    d = _cfg()
    assert (d.clip_grad, d.clip_value, d.gradient_accumulation_steps) == (False, 15.0, 1)   # MindCV's defaults


@pytest.mark.parametrize("key, value", [("gradient_accumulation_steps", "0"), ("gradient_accumulation_steps", "-2"),
                                        ("gradient_accumulation_steps", "1.5"), ("clip_value", "0"),
                                        ("clip_value", "-1"), ("clip_grad", "maybe")])
def test_bad_values_are_one_line_recipe_errors(key, value):
    with pytest.raises(RecipeError) as e:
        _cfg(f"--{key}", value)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_a_mindcv_recipe_key_is_now_honoured(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data_dir: /d\nclip_grad: True\nclip_value: 5.0\ngradient_accumulation_steps: 4\n")
    cfg = load(str(path))
    assert (cfg.clip_grad, cfg.clip_value, cfg.gradient_accumulation_steps) == (True, 5.0, 4)


def test_the_plan_describes_accumulation_and_clipping():
    p = resolve(_cfg("--gradient_accumulation_steps", "4", "--clip_grad", "True", "--clip_value", "2",
                     "--batch_size", "16", "--epoch_size", "2"), 0, 2, 10)
    assert p.steps_per_epoch == 8 and p.calls() == [8]              # 10 -> 8: the partial group is dropped
    assert any("10 -> 8 micro-batches per epoch" in n for n in p.notes)
    text = p.describe()
    assert "every 4 micro-batches: 4 x 32 = 128 images, 2 updates/epoch" in text
    assert "gradients clipped to global norm 2" in text
    lrs = p.learning_rates()
    assert len(lrs) == 16 and np.array_equal(lrs[0::4], lrs[3::4])     # one rate per update, held for 4
    assert "update" not in dict(resolve(_cfg(), 0, 1, 10).rows())        # the default plan says nothing new
    with pytest.raises(RecipeError, match="gradient_accumulation_steps"):
        resolve(_cfg("--gradient_accumulation_steps", "4"), 0, 1, 3)    # fewer batches than one group


def test_accumulation_counts_in_linear_lr_scaling():
    p = resolve(_cfg("--batch_size", "64", "--global_batch_size", "512", "--gradient_accumulation_steps", "8",
                     "--lr", "0.5"), 0, 1, 16)
    assert p.lr == 0.5 and not any("linear LR scaling" in n for n in p.notes)   # 1 x 64 x 8 = 512


def test_train_tool_runs_with_accumulation_and_clipping(tmp_path):
    data = make_dataset(str(tmp_path / "data"))
    run = str(tmp_path / "run")
    argv = base_args(data, run, "--epoch_size", "1", "--gradient_accumulation_steps", "2", "--clip_grad", "True")
    r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), *argv], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout + r.stderr
    assert "every 2 micro-batches" in out and "gradients clipped to global norm 15" in out
    assert os.path.isfile(os.path.join(run, "last.ckpt"))
