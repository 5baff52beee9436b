"""The command lines as users type them: installed console commands, MindCV's spellings (-c, --key=value)."""
import os
import subprocess
import sys

import pytest
import yaml

from mindshuffle import recipe as R
from mindshuffle.cli import VERBS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
ASCEND = os.path.join(ROOT, "configs", "shufflenet_v2_0.5_ascend.yaml")


def _run(cmd, cwd=None):
    env = dict(os.environ, GLOG_v="3")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def _lines(text):
    return [ln for ln in text.splitlines() if ln.strip()]


def test_console_commands_are_installed_and_match_the_tools(tmp_path):
    for verb in VERBS:
        assert os.access(os.path.join(BIN, f"mindshuffle-{verb}"), os.X_OK), f"mindshuffle-{verb} not installed"
    installed = _run([os.path.join(BIN, "mindshuffle-models"), "shufflenet_v2_x0_5*", "--markdown"], cwd=tmp_path)
    verb = _run([os.path.join(BIN, "mindshuffle"), "models", "shufflenet_v2_x0_5*", "--markdown"], cwd=tmp_path)
    script = _run([sys.executable, os.path.join(ROOT, "tools", "models.py"), "shufflenet_v2_x0_5*", "--markdown"])
    assert installed.returncode == verb.returncode == script.returncode == 0, installed.stderr + verb.stderr
    assert installed.stdout == verb.stdout == script.stdout and "| shufflenet_v2_x0_5_tv |" in script.stdout


def test_unknown_command_is_one_line_and_exit_2(tmp_path):
    p = _run([os.path.join(BIN, "mindshuffle"), "trian"], cwd=tmp_path)
    assert p.returncode == 2 and _lines(p.stderr) == [
        "error: unknown command 'trian'; one of: " + ", ".join(VERBS)]
    assert _run([os.path.join(BIN, "mindshuffle"), "--help"]).returncode == 0


def test_mindcv_train_command_line_runs_as_written(tmp_path):
    """MindCV's README: ``python train.py -c configs/...yaml --data_dir /path --distribute False``; here as a dry
    run (prints the plan for one card, writes nothing) with --key=value spellings mixed in."""
    run = str(tmp_path / "run")
    p = _run([os.path.join(BIN, "mindshuffle-train"), "-c", ASCEND, "--data_dir", str(tmp_path / "imagenet"),
              "--distribute", "False", "--dry_run=True", f"--ckpt_save_dir={run}", "--batch_size=32"], cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "1 card(s) x 32 = 32" in p.stdout and not os.path.exists(run)


def test_mindcv_validate_command_line(tmp_path):
    missing = str(tmp_path / "none.ckpt")
    for flag in ("-c", "--config"):
        p = _run([sys.executable, os.path.join(ROOT, "tools", "validate.py"), flag, ASCEND, f"--ckpt_path={missing}",
                  "--data_dir", str(tmp_path)])
        assert p.returncode == 2 and len(_lines(p.stderr)) == 1 and missing in p.stderr, p.stderr[-2000:]


@pytest.mark.parametrize("verb", ["train", "validate"])
@pytest.mark.parametrize("spelling", ["-c {}", "--config {}", "--config={}"])
def test_every_config_spelling_reads_the_file(verb, spelling, tmp_path):
    """All three spellings reach the recipe loader: a missing recipe is named (the joined spelling was once
    taken for an ignored key, and validate went on with the defaults)."""
    recipe = str(tmp_path / "nope.yaml")
    extra = ["--dry_run", "True"] if verb == "train" else []
    p = _run([sys.executable, os.path.join(ROOT, "tools", f"{verb}.py"), *spelling.format(recipe).split(),
              "--ckpt_path", str(tmp_path / "none.ckpt"), *extra])
    assert p.returncode == 2 and len(_lines(p.stderr)) == 1 and recipe in p.stderr, p.stderr[-2000:]


def test_a_config_flag_without_a_value_is_one_line():
    p = _run([sys.executable, os.path.join(ROOT, "tools", "validate.py"), "--ckpt_path", "x.ckpt", "-c"])
    assert p.returncode == 2 and _lines(p.stderr) == ["error: -c needs a value"]


def test_every_recipe_key_takes_both_spellings():
    """``--key value`` and ``--key=value`` give the same recipe, for every key of a shipped recipe and every
    other key at its default."""
    with open(ASCEND, encoding="utf-8") as f:
        values = {k.name: k.default for k in R.KEYS}
        values.update({k: v for k, v in yaml.safe_load(f).items() if k not in R.IGNORED_MINDCV_KEYS})
    spaced, joined = [], []
    for name, value in values.items():
        text = value if isinstance(value, str) else yaml.safe_dump(value, default_flow_style=True).strip()
        text = text[:-4].strip() if text.endswith("\n...") else text
        spaced += [f"--{name}", text]
        joined.append(f"--{name}={text}")
    a, b = R.load(None, spaced), R.load(None, joined)
    assert a == b and a.model == "shufflenet_v2_x0_5" and a.sink_size == values["sink_size"]


@pytest.mark.parametrize("argv", [["--lr=0.5", "--lr", "0.25"], ["--lr", "0.5", "--lr=0.25"]])
def test_the_last_spelling_of_a_key_wins(argv):
    assert R.load(None, argv + ["--dataset", "digits"]).lr == 0.25
