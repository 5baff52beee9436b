"""Every shipped recipe loads and builds: a dry run of each (model built, run plan resolved and printed,
nothing compiled) writes nothing, on this CPU machine, for the device the recipe names."""
import glob
import os

import pytest

from cli_helpers import tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml")))


def _tree(path):
    return sorted(os.path.relpath(os.path.join(d, f), path) for d, _, files in os.walk(path) for f in files)


@pytest.mark.parametrize("path", RECIPES, ids=[os.path.basename(p) for p in RECIPES])
def test_every_recipe_builds_a_dry_run(path, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data, run = tmp_path / "data", tmp_path / "run"
    # the user's own inputs (data, start weights) are not here; the fine-tuning recipe names a placeholder ckpt
    rc = tool("train").main(["-c", path, "--data_dir", str(data), "--ckpt_save_dir", str(run), "--ckpt_path", "",
                             "--dry_run", "True"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    assert "run plan:" in out and "model" in out
    assert _tree(tmp_path) == [], f"a dry run wrote {_tree(tmp_path)[:5]}"


@pytest.mark.parametrize("name", ["shufflenet_v2_2.0_ascend_tinyimagenet.yaml",
                                  "shufflenet_v2_2.0_ascend_tinyimagenet_reg.yaml"])
def test_tiny_imagenet_recipes_run_on_cpu_at_small_size(name, tmp_path, capsys):
    """Both Tiny ImageNet recipes (plain and regularised) train one epoch on CPU on a small folder in Tiny
    ImageNet's own layout, as the recipes' headers say to smoke-test them."""
    from test_data import _tiny
    data, run = tmp_path / "tiny", str(tmp_path / "run")
    data.mkdir()
    _tiny(data)
    rc = tool("train").main(["-c", os.path.join(ROOT, "configs", name), "--data_dir", str(data),
                             "--ckpt_save_dir", run, "--device_target", "CPU", "--distribute", "False",
                             "--batch_size", "2", "--epoch_size", "1", "--image_resize", "32",
                             "--num_parallel_workers", "1"])
    assert rc == 0, capsys.readouterr().err[-2000:]
    assert os.path.isfile(os.path.join(run, "last.ckpt")) and os.path.isfile(os.path.join(run, "metrics.csv"))
