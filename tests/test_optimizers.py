"""``opt``: every optimizer MindCV's factory builds trains through our plan and step, Lion's update is the one its
paper defines, Lamb (which takes no loss scale) gets an unscaled gradient, and Lion's state survives a resume."""
import os

import mindspore as ms
import numpy as np
import pytest

from mindshuffle.errors import RecipeError
from mindshuffle.recipe import KEYS
from mindshuffle.train.build import make_loss, make_optimizer, param_groups
from mindshuffle.train.plan import resolve
from mindshuffle.train.step import TrainStep, compile_fn

from cli_helpers import tool
from test_optim_keys import _cfg, _data, _fit, _grads, _net, _weights
from test_train import base_args

OPTIMIZERS = next(k for k in KEYS if k.name == "opt").choices


@pytest.mark.parametrize("opt", [o for o in OPTIMIZERS if o != "lamb"])
def test_every_optimizer_trains_through_the_step(opt):
    """Two updates in graph mode: every weight moves, the loss stays finite and the global step counts (Lamb has
    no CPU kernel: below)."""
    start = _weights(_net())
    trained, metrics, _, step = _fit(["--opt", opt, "--lr", "0.01", "--weight_decay", "1e-4"], 4, 2)
    assert metrics["steps"] == 2 and np.isfinite(metrics["loss_sum"]) and len(metrics["last_losses"]) == 2
    assert int(step.optimizer.global_step.asnumpy()[0]) == 2
    for name, w in trained.items():
        assert np.isfinite(w).all() and not np.array_equal(w, start[name]), (opt, name)


def test_lion_takes_the_sign_of_the_gradient_and_decoupled_decay():
    """Lion's first step from zero moments: w - lr * (sign(g) + wd * w), decay on conv/fc weights only."""
    lr, wd = 0.01, 0.1
    cfg = _cfg("--opt", "lion", "--lr", str(lr), "--weight_decay", str(wd), "--scheduler", "constant",
               "--epoch_size", "1", "--batch_size", "4")
    x, y = _data(4)
    grads = _grads(x, y, cfg)
    net = _net()
    decays = {p.name: group["weight_decay"] > 0 for group in param_groups(net, cfg)
              for p in group.get("params", [])}
    assert decays == {"conv.weight": True, "conv.bias": False, "fc.weight": True, "fc.bias": False}
    before = _weights(net)
    plan = resolve(cfg, 0, 1, 1)
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, plan.learning_rates(), 1.0), plan)
    compile_fn(step.step, plan)(ms.Tensor(x), ms.Tensor(y))
    for name, w in _weights(net).items():
        want = before[name] - lr * (np.sign(grads[name]) + (wd * before[name] if decays[name] else 0))
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6, err_msg=name)
    assert any(np.abs(w - before[n]).max() > 0.9 * lr for n, w in _weights(net).items())   # sign steps, not g


def test_lamb_with_a_fixed_loss_scale_is_unscaled_by_the_step():
    """MindSpore's Lamb has no loss_scale: the plan hands the unscaling to the step, and the update equals the
    one without any loss scale."""
    common = ["--opt", "lamb", "--lr", "0.01", "--device_target", "Ascend", "--amp_level", "O2"]
    plan = resolve(_cfg(*common, "--loss_scale", "1024"), 0, 1, 4)
    assert plan.loss_scale == 1024 and plan.optimizer_loss_scale == 1.0
    assert any("opt lamb" in note for note in plan.notes)
    unscaled = resolve(_cfg(*common, "--loss_scale", "1"), 0, 1, 4)
    assert unscaled.optimizer_loss_scale == 1.0 and not any("opt lamb" in n for n in unscaled.notes)


def test_lamb_on_cpu_is_a_recipe_error_before_anything_is_built():
    with pytest.raises(RecipeError, match="'lamb' on CPU"):
        resolve(_cfg("--opt", "lamb"), 0, 1, 4)


def test_lion_resumes_exactly(tmp_path, data_dir_small):
    """Lion's moments (lion_m.*) are saved in last.ckpt and restored: an interrupted and resumed run ends with
    the uninterrupted run's weights."""
    lion = ("--opt", "lion", "--lr", "0.002", "--weight_decay", "0.05")
    full, cut = str(tmp_path / "full"), str(tmp_path / "cut")
    train = tool("train")
    assert train.main(base_args(data_dir_small, full, *lion)) == 0
    assert train.main(base_args(data_dir_small, cut, *lion, "--stop_after_epoch", "1")) == 0
    saved = ms.load_checkpoint(os.path.join(cut, "last.ckpt"))
    moments = [k for k in saved if k.startswith("lion_m.")]
    assert moments and any(np.abs(saved[k].asnumpy()).max() > 0 for k in moments)
    assert train.main(["--resume", cut]) == 0
    a = ms.load_checkpoint(os.path.join(full, "last.ckpt"))
    b = ms.load_checkpoint(os.path.join(cut, "last.ckpt"))
    for k, v in a.items():
        if isinstance(v, ms.Parameter):
            np.testing.assert_allclose(b[k].asnumpy(), v.asnumpy(), rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.fixture
def data_dir_small(tmp_path):
    from test_train import make_dataset
    return make_dataset(str(tmp_path / "ds"))
