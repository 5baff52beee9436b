"""The run plan: every Ascend/GPU-only choice resolved from the recipe and the device, on this CPU machine
(MindSpore 2.7.1's rules: ms.jit takes O0/O1 only, whole-graph sinking is backend GE; data_sink refuses CPU;
MindCV's loss-scale combinations)."""
import glob
import os

import pytest

from mindshuffle.recipe import load
from mindshuffle.train.plan import resolve

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def plan_for(*args, steps=20, world=1, mindspore="2.7.1"):
    return resolve(load(None, ["--data_dir", "/d", *args]), 0, world, steps, mindspore)


@pytest.mark.parametrize("level, expect", [("O0", ("O0", "ms_backend")), ("O1", ("O1", "ms_backend")),
                                           ("O2", ("O0", "GE"))])
def test_jit_level_to_backend_on_ascend(level, expect):
    p = plan_for("--device_target", "Ascend", "--jit_level", level)
    assert (p.jit_level, p.backend) == expect
    assert p.summary()["jit level"] == f"{expect[0]}/{expect[1]}"   # the summary row names what ran


@pytest.mark.parametrize("version, deprecated", [("2.7.1", False), ("2.8.0", False), ("2.9.0", True),
                                                 ("2.10.0", True)])
def test_o2_on_newer_mindspore_keeps_ge_and_says_it_is_deprecated(version, deprecated):
    p = plan_for("--device_target", "Ascend", "--jit_level", "O2", mindspore=version)
    assert (p.jit_level, p.backend) == ("O0", "GE")                # what MindSpore 2.10's own data_sink does
    assert any(f"MindSpore {version} deprecates" in n for n in p.notes) == deprecated
    assert plan_for("--device_target", "Ascend", "--jit_level", "O1", mindspore=version).notes == ()


@pytest.mark.parametrize("device", ["CPU", "GPU"])
def test_o2_elsewhere_runs_o0_and_says_so(device):
    p = plan_for("--device_target", device, "--jit_level", "O2")
    assert (p.jit_level, p.backend) == ("O0", "ms_backend")
    assert any("GE whole-graph sinking exists only on Ascend" in n for n in p.notes)


def test_cpu_runs_fp32_unscaled_without_sink():
    p = plan_for("--device_target", "CPU", "--amp_level", "O3", "--loss_scale", "1024", "--dataset_sink_mode", "True",
                 steps=100)
    assert (p.amp_level, p.loss_scale, p.optimizer_loss_scale, p.sink, p.sink_size) == ("O0", 1.0, 1.0, False, 32)
    assert len(p.notes) == 3 and "run plan:" in p.describe()


def test_loss_scale_as_mindcv_combines_it():
    fixed = plan_for("--device_target", "Ascend", "--amp_level", "O3", "--loss_scale", "1024")
    assert (fixed.loss_scale, fixed.optimizer_loss_scale, fixed.drop_overflow_update) == (1024, 1024, False)
    drop = plan_for("--device_target", "Ascend", "--amp_level", "O2", "--loss_scale", "1024",
                    "--drop_overflow_update", "True")
    assert (drop.loss_scale, drop.optimizer_loss_scale, drop.drop_overflow_update) == (1024, 1.0, True)
    dyn = plan_for("--device_target", "Ascend", "--amp_level", "O2", "--loss_scale", "65536",
                   "--loss_scale_type", "dynamic")
    assert (dyn.loss_scale_type, dyn.optimizer_loss_scale, dyn.drop_overflow_update) == ("dynamic", 1.0, True)
    assert any("overflowed steps are skipped" in n for n in dyn.notes)
    fp32 = plan_for("--device_target", "Ascend", "--amp_level", "O0", "--loss_scale", "1024")
    assert (fp32.loss_scale, fp32.optimizer_loss_scale) == (1.0, 1.0)


def test_sink_size_whole_epoch_or_a_divisor():
    whole = plan_for("--device_target", "Ascend", "--dataset_sink_mode", "True", steps=2502)
    assert (whole.sink, whole.sink_size, whole.calls_per_epoch) == (True, 2502, 1)
    part = plan_for("--device_target", "Ascend", "--dataset_sink_mode", "True", "--sink_size", "100", steps=2502)
    assert part.sink_size == 18 and 2502 % part.sink_size == 0                # 2502 = 2 x 9 x 139
    assert any("sink_size 100 -> 18" in n for n in part.notes)
    off = plan_for("--device_target", "Ascend", "--dataset_sink_mode", "False", steps=2502)
    assert (off.sink, off.sink_size) == (False, 32)                         # the host feed: 32 steps per read
    assert off.calls() == [32] * 78 + [6] and sum(plan_for(steps=5).calls()) == 5


def test_linear_lr_scaling_in_the_plan():
    p = plan_for("--lr", "0.5", "--batch_size", "64", "--global_batch_size", "512", world=4)
    assert p.lr == pytest.approx(0.25) and any("linear LR scaling" in n for n in p.notes)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*ascend*.yaml"))),
                         ids=os.path.basename)
def test_every_ascend_recipe_resolves_for_eight_cards(path):
    cfg = load(path, ["--data_dir", "/d"])
    p = resolve(cfg, 0, 8, 2502)
    assert p.device_target == "Ascend" and p.world == 8
    assert p.backend == ("GE" if cfg.jit_level == "O2" else "ms_backend") and p.jit_level in ("O0", "O1")
    assert p.amp_level == cfg.amp_level and p.sink == cfg.dataset_sink_mode
    if cfg.amp_level != "O0":
        assert p.loss_scale == cfg.loss_scale


def test_quick_trial_clips_the_warm_up_to_the_run():
    cfg = load(os.path.join(ROOT, "configs", "shufflenet_v2_0.5_ascend.yaml"), ["--epoch_size", "2"])
    assert cfg.warmup_epochs == 4                                          # a recipe with 4 warm-up epochs
    p = resolve(cfg, 0, 8, 10)
    assert p.schedule[1:3] == (2, 2)
    assert "warmup_epochs 4 -> 2 (clipped to epoch_size 2)" in p.notes
    lrs = p.learning_rates()
    assert len(lrs) == 20 and lrs[0] == 0.0 and lrs[-1] == pytest.approx(0.35 * 19 / 20)  # all warm-up
    decay = resolve(load(None, ["--data_dir", "/d", "--epoch_size", "3", "--decay_epochs", "10"]), 0, 1, 4)
    assert decay.schedule[4] == 3 and decay.learning_rates()[-1] == pytest.approx(0.5 / 12)
