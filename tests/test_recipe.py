"""Recipes: typed keys, CLI overrides, clear errors; LR schedules."""
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mindshuffle import recipe as R
from mindshuffle.schedules import lr_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_yaml_and_overrides(tmp_path):
    path = _write(tmp_path, "model: shufflenet_v2_x0_5\ndata_dir: /d\nlr: 1e-3\ndistribute: True\n"
                            "batch_size: 32\nscale: [0.5, 1.0]\nfilter_bias_and_bn: False\n")
    cfg = R.load(path, ["--lr", "0.25", "--distribute", "False", "--hflip=0", "--shuffle"])
    assert cfg.lr == 0.25 and isinstance(cfg.lr, float)
    assert cfg.distribute is False          # "False" must not parse as True (MindCV's type=bool defect)
    assert cfg.hflip == 0.0 and cfg.shuffle is True
    assert cfg.batch_size == 32 and cfg.scale == [0.5, 1.0]
    assert cfg.weight_decay == 4e-5 and cfg.scheduler == "linear_decay"   # defaults
    assert cfg.config == os.path.abspath(path)
    assert "filter_bias_and_bn" not in cfg                                # MindCV-only key ignored


def test_yaml_scientific_notation_and_bools(tmp_path):
    cfg = R.load(_write(tmp_path, "data_dir: /d\nweight_decay: 4e-5\nval_while_train: 'no'\nmean: auto\n"))
    assert cfg.weight_decay == pytest.approx(4e-5) and cfg.val_while_train is False and cfg.mean == "auto"


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(R.RecipeError, match="'learning_rate'.*did you mean 'warmup_factor'|'learning_rate'"):
        R.load(_write(tmp_path, "data_dir: /d\nlearning_rate: 0.1\n"))
    with pytest.raises(R.RecipeError, match="unknown recipe key 'batchsize'; did you mean 'batch_size'"):
        R.load(None, ["--data_dir", "/d", "--batchsize", "8"])
    with pytest.raises(R.RecipeError, match="did you mean 'epoch_size'"):
        R.load(None, {"data_dir": "/d", "epoch_sise": 3})


@pytest.mark.parametrize("key,value,msg", [
    ("distribute", "maybe", "expected True or False"),
    ("batch_size", "8.5", "expected an integer"),
    ("batch_size", "0", "must be >= 1"),
    ("lr", "fast", "expected a number"),
    ("amp_level", "O4", "choose one of O0, O1, O2, O3"),
    ("scheduler", "cosine", "closest: 'cosine_decay'"),
    ("mean", "[1, 2]", "'auto', 'imagenet' or a list of 3"),
    ("color_jitter", "[0.1, 0.2]", "expected 3 or 4 numbers"),
    ("model_kwargs", "[2, 1, 1]", "expected a mapping"),
    ("model_kwargs", "{2: 1}", "expected a mapping"),
    ("lr", "nan", "expected a finite number"),
    ("lr", "inf", "expected a finite number"),
    ("min_lr", "-inf", "expected a finite number"),
    ("epoch_size", "inf", "expected a finite number"),             # was an OverflowError traceback
    ("drop_rate", "nan", "expected a finite number"),
    ("color_jitter", "inf", "expected a finite number"),
    ("scale", "[0.1, nan]", "expected a finite number"),
    ("mean", "[nan, 1, 1]", "list of 3 finite numbers"),
])
def test_bad_values_named(key, value, msg):
    with pytest.raises(R.RecipeError) as e:
        R.load(None, ["--data_dir", "/d", f"--{key}", value])
    text = str(e.value)
    assert f"'{key}'" in text and value in text and msg in text


def test_case_insensitive_choice_and_cross_checks():
    assert R.load(None, ["--data_dir", "/d", "--amp_level", "o2"]).amp_level == "O2"
    with pytest.raises(R.RecipeError, match="min_lr"):
        R.load(None, ["--data_dir", "/d", "--lr", "0.1", "--min_lr", "0.2"])
    with pytest.raises(R.RecipeError, match="data_dir"):
        R.load(None, [])


def test_saved_recipe_round_trips(tmp_path):
    cfg = R.load(None, ["--data_dir", "/d", "--lr", "0.3", "--color_jitter", "[0.2, 0.2, 0.2, 0.05]",
                        "--model_kwargs", "{repeats: [2, 1, 1], layout: torchvision}"])
    assert R.load(None, ["--data_dir", "/d"]).model_kwargs == {}
    out = R.save(cfg, str(tmp_path / "run" / "recipe.yaml"))
    again = R.load(out)
    assert again.lr == 0.3 and again.color_jitter == [0.2, 0.2, 0.2, 0.05]
    assert again.model_kwargs == {"repeats": [2, 1, 1], "layout": "torchvision"}
    assert {k: v for k, v in again.items() if k != "config"} == {k: v for k, v in cfg.items() if k != "config"}


def test_every_shipped_recipe_loads():
    configs = sorted(f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".yaml"))
    assert len(configs) >= 10
    for name in configs:
        cfg = R.load(os.path.join(ROOT, "configs", name))
        assert cfg.model, name
    v2 = R.load(os.path.join(ROOT, "configs", "shufflenet_v2_0.5_ascend.yaml"))
    assert (v2.distribute, v2.opt, v2.momentum, v2.label_smoothing, v2.weight_decay, v2.scheduler, v2.min_lr) == \
        (True, "momentum", 0.9, 0.1, 4e-5, "linear_decay", 0.0)
    assert v2.global_batch_size == 8 * v2.batch_size and v2.weight_decay_filter == "conv_fc_weights"
    tiny = R.load(os.path.join(ROOT, "configs", "shufflenet_v2_2.0_ascend_tinyimagenet.yaml"))
    assert (tiny.model, tiny.image_resize, tiny.lr, tiny.epoch_size, tiny.hflip, tiny.vflip, tiny.mean) == \
        ("shufflenet_v2_x2_0", 64, 0.5, 100, 0.5, 0.5, "auto")
    assert tiny.color_jitter == [0.2, 0.2, 0.2, 0.05] and tiny.batch_size * 8 == 1024 == tiny.global_batch_size


def _train_main():
    from mindshuffle.cli import train
    return train.main


def test_train_tool_bad_recipe_exit_2_one_line(tmp_path, capsys):
    path = _write(tmp_path, "data_dir: /d\nmodel: shufflenet_v2_x0_5\nbatch_sise: 4\n")
    main = _train_main()
    cases = ((["--config", path], "did you mean 'batch_size'"),
             (["--config", str(tmp_path / "missing.yaml")], "does not exist"),
             (["--config", _write(tmp_path, "data_dir: /nonexistent\n", "ok.yaml"), "--lr", "x"], "'lr'"),
             (["--config", str(tmp_path / "ok.yaml")], "/nonexistent"),
             (["--config", str(tmp_path / "ok.yaml"), "--model", "shufflenet_v3"], "unknown model"),
             (["--resume", str(tmp_path)], "cannot resume"))
    for args, msg in cases:
        assert main(args) == 2, args
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], (args, lines)
    # the real command line: exit code 2, one line, no traceback
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "train.py"), "--config", path],
                       capture_output=True, text=True, env=dict(os.environ, GLOG_v="3"), timeout=120)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.strip().count("\n") == 0 and "did you mean 'batch_size'" in p.stderr


# -- schedules ------------------------------------------------------------------------------------------------

def test_linear_decay_is_the_papers():
    t = lr_table("linear_decay", 0.5, steps_per_epoch=10, epochs=5)
    assert t.shape == (50,) and t[0] == pytest.approx(0.5)
    assert np.all(np.diff(t) < 0) and np.allclose(np.diff(t), -0.01)      # straight line to 0
    assert t[-1] == pytest.approx(0.01) and t.min() >= 0


def test_schedules_honour_min_lr_and_warmup():
    for name in ("linear_decay", "cosine_decay"):
        t = lr_table(name, 0.4, 7, 6, min_lr=0.05, warmup_epochs=1, warmup_factor=0.1)
        assert t[7:].min() >= 0.05 - 1e-7 and t.max() == pytest.approx(0.4)
        assert t[0] == pytest.approx(0.04) and np.all(np.diff(t[:7]) > 0)   # warm-up rises
        assert np.all(np.diff(t[7:]) <= 1e-7)                               # then decays
    c = lr_table("cosine_decay", 1.0, 1, 100, min_lr=0.0)
    assert c[50] == pytest.approx(0.5, abs=1e-6)
    d = lr_table("linear_decay", 1.0, 2, 10, min_lr=0.1, decay_epochs=5)
    assert np.allclose(d[10:], 0.1)                                         # holds min_lr after decay_epochs
    with pytest.raises(ValueError):
        lr_table("step", 0.1, 1, 1)


def test_table_is_resume_safe():
    """A resumed run indexes the same full-run table at its restored global step."""
    full = lr_table("cosine_decay", 0.3, 5, 8, warmup_epochs=2)
    again = lr_table("cosine_decay", 0.3, 5, 8, warmup_epochs=2)
    assert np.array_equal(full, again) and len(full) == 40


def test_every_key_is_documented():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        doc = f.read()
    missing = [k.name for k in R.KEYS if f"| `{k.name}` |" not in doc]
    assert not missing, f"keys missing from the README's Recipe keys table (recipe.keys_table()): {missing}"
