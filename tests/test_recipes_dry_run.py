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
