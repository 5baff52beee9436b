"""Faults: bad input, killed runs, a full disk and a failed worker lose nothing and say what went wrong.

One training run (``chain``) goes through the failures in turn on a dataset with unreadable and odd images:
a full disk at its second checkpoint, ``kill -9`` during an epoch, ``kill -9`` inside a checkpoint write, and
a last ``--resume`` that finishes. The user errors (recipe, data, checkpoint, run folder) stop the tools before
any graph is compiled; they run in-process (``main()``), a few also as subprocesses to see the real stderr.
"""
import csv
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

import fault_helpers as F
from test_train import SHALLOW
from mindshuffle import runfiles
from mindshuffle.train import logs as train_logs
from mindshuffle.train.run_folder import RunFolder
from mindshuffle.checkpoints import CheckpointError, read_checkpoint, save_checkpoint
from mindshuffle.recipe import load
from mindshuffle.builder import create_model
from cli_helpers import tool as _tool


def train_args(data, run, *extra):
    return ["--data_dir", data, "--ckpt_save_dir", run, "--model", "shufflenet_v2_x0_5", "--device_target", "CPU",
            "--image_resize", "16", "--batch_size", "4", "--epoch_size", "3", "--num_parallel_workers", "1",
            "--lr", "0.01", "--crop_pct", "1.0", "--hflip", "0", "--val_interval", "3", "--log_interval", "1",
            "--seed", "1", *SHALLOW, *extra]


def _state(path):
    return json.loads(read_checkpoint(path)["mindshuffle_state"])


def _metrics_rows(run):
    """metrics.csv as raw rows: every row complete (no torn line), every cell a number or empty."""
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(runfiles.METRICS_COLUMNS)
    for r in rows[1:]:
        assert len(r) == len(runfiles.METRICS_COLUMNS), r
        for cell in r:
            if cell:
                float(cell)
    return [int(r[0]) for r in rows[1:]]


def _temp_files(run):
    return sorted(f for f in os.listdir(run) if f.startswith(".tmp-"))


def _check_error(rc, capsys, *words):
    """In-process tool call: exit 2, one line on stderr naming the problem (each of ``words``)."""
    line = F.one_error_line(capsys.readouterr().err)
    assert rc == 2, line
    for w in words:
        assert w in line, line
    return line


# -- the interrupted run ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def odd_data(tmp_path_factory):
    return F.make_dataset(str(tmp_path_factory.mktemp("odd_data")), odd=True)


@pytest.fixture(scope="module")
def chain(odd_data, tmp_path_factory):
    """Full disk at the 2nd save, kill -9 mid-epoch, kill -9 inside a save, then a resume that finishes."""
    logs = str(tmp_path_factory.mktemp("chain_logs"))
    run = os.path.join(str(tmp_path_factory.mktemp("chain")), "run")
    seen = {}

    # 1) the disk fills up while epoch 2 is saved (after epoch 1's last.ckpt was written)
    p = F.run_tool("fault_train", train_args(odd_data, run), **{F.SAVE_FAULT: "enospc:2"})
    seen["enospc"] = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr, "temps": _temp_files(run),
                      "state": _state(os.path.join(run, "last.ckpt")), "epochs": _metrics_rows(run)}

    # 2) kill -9 in the middle of epoch 2
    proc, out, err = F.start_tool("fault_train", ["--resume", run], logs, "mid_epoch", **{F.STEP_FAULT: "2:2"})
    try:
        F.wait_for(proc, err, "fault hook: paused after epoch 2 step 2", timeout=240)
        F.kill9(proc)
    finally:
        F.kill_group(proc)
    seen["mid_epoch"] = {"rc": proc.returncode, "state": _state(os.path.join(run, "last.ckpt")),
                         "epochs": _metrics_rows(run), "temps": _temp_files(run)}

    # 3) kill -9 after the new last.ckpt was written to its temporary file, before the rename
    proc, out, err = F.start_tool("fault_train", ["--resume", run], logs, "in_save", **{F.SAVE_FAULT: "pause:1"})
    try:
        F.wait_for(proc, err, "fault hook: paused", timeout=240)
        temps = _temp_files(run)
        F.kill9(proc)
    finally:
        F.kill_group(proc)
    seen["in_save"] = {"rc": proc.returncode, "temps_while_paused": temps, "temps": _temp_files(run),
                       "state": _state(os.path.join(run, "last.ckpt")), "epochs": _metrics_rows(run)}

    # 4) resume to the end
    p = F.run_tool("train", ["--resume", run])
    seen["final"] = {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr}
    return run, seen


def test_no_space_keeps_previous_checkpoint_and_says_so(chain):
    run, seen = chain
    s = seen["enospc"]
    line = F.one_error_line(s["stderr"])
    assert s["rc"] == 2, s["stdout"][-2000:] + s["stderr"][-2000:]
    assert "No space left on device" in line and "cannot save epoch 2" in line
    assert "last.ckpt (epoch 1) is intact" in line and f"--resume {run}" in line
    assert s["state"]["epoch"] == 1 and s["state"]["step"] == 5     # the previous checkpoint, whole
    assert s["temps"] == []                                            # the half-written file was removed


def test_unreadable_images_named_once_odd_modes_used(chain):
    run, seen = chain
    out = seen["enospc"]["stdout"]                                     # one process, two epochs
    assert "21 train images" in out
    for name in F.BAD_FILES:
        named = [ln for ln in out.splitlines() if name in ln]
        assert len(named) == 1 and "skipped" in named[0], named
    assert "empty file, 0 bytes" in out
    for name in F.ODD_FILES:                                           # grayscale, CMYK, RGBA: decoded, used
        assert name not in out


def test_kill9_during_epoch_keeps_last_epoch(chain):
    run, seen = chain
    s = seen["mid_epoch"]
    assert s["rc"] == -9
    assert s["state"]["epoch"] == 1                                    # still the checkpoint of epoch 1
    assert s["temps"] == []


def test_kill9_during_checkpoint_write_never_half_written(chain):
    run, seen = chain
    s = seen["in_save"]
    assert s["rc"] == -9
    assert len(s["temps_while_paused"]) == 1 and s["temps_while_paused"][0].endswith(".ckpt")
    assert s["state"]["epoch"] == 1                                    # last.ckpt untouched by the killed save
    assert s["temps"] == s["temps_while_paused"]                       # only a hidden temporary is left ...


def test_resume_after_faults_finishes_clean(chain):
    run, seen = chain
    s = seen["final"]
    assert s["rc"] == 0, s["stdout"][-3000:] + s["stderr"][-3000:]
    assert "Traceback" not in s["stderr"]
    assert "removed 1 unfinished temporary file" in s["stdout"]        # ... and the next start removes it
    assert _temp_files(run) == []
    assert _metrics_rows(run) == [1, 2, 3]                             # no duplicated or torn rows
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["epochs"] == 3 and summary["top-1"] is not None
    ckpts = [f for f in os.listdir(run) if f.endswith(".ckpt")]
    assert sorted(ckpts) == ["best.ckpt", "last.ckpt"]
    for f in ckpts:                                                    # every checkpoint loads whole
        assert len(read_checkpoint(os.path.join(run, f))) > 100
    state = _state(os.path.join(run, "last.ckpt"))
    assert state["epoch"] == 3 and state["step"] == 15
    assert int(read_checkpoint(os.path.join(run, "last.ckpt"))["global_step"].asnumpy().reshape(-1)[0]) == 15


# -- the run folder --------------------------------------------------------------------------------------

def test_finished_run_is_not_overwritten(chain, odd_data):
    run, _ = chain
    before = os.path.getmtime(os.path.join(run, "last.ckpt"))
    p = F.run_tool("train", train_args(odd_data, run))
    line = F.one_error_line(p.stderr)
    assert p.returncode == 2
    assert "holds a finished run" in line and "--overwrite True" in line and "--resume" in line
    assert os.path.getmtime(os.path.join(run, "last.ckpt")) == before


def test_overwrite_true_clears_the_finished_run(chain, odd_data, tmp_path):
    run, _ = chain
    copy = str(tmp_path / "copy")
    shutil.copytree(run, copy)
    cfg = load(None, train_args(odd_data, copy, "--overwrite", "True"))
    folder = RunFolder(cfg.ckpt_save_dir)
    folder.check_start(resume=False, overwrite=cfg.overwrite)   # allowed: overwrite
    folder.lock()
    folder.clear()
    folder.unlock()
    for name in ("summary.json", "last.ckpt", "best.ckpt", "metrics.csv"):
        assert not os.path.exists(os.path.join(copy, name))


def test_resume_of_folder_without_run(tmp_path):
    p = F.run_tool("train", ["--resume", str(tmp_path / "nothing")])
    line = F.one_error_line(p.stderr)
    assert p.returncode == 2 and "cannot resume" in line and "recipe.yaml" in line


# -- recipes ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good_data(tmp_path_factory):
    return F.make_dataset(str(tmp_path_factory.mktemp("good_data")))


def test_recipe_unknown_key_subprocess(good_data, tmp_path):
    p = F.run_tool("train", train_args(good_data, str(tmp_path / "r"), "--lrr", "0.1"))
    line = F.one_error_line(p.stderr)
    assert p.returncode == 2 and "unknown recipe key 'lrr'" in line and "did you mean 'lr'" in line


def test_recipe_file_unknown_key_and_wrong_type(good_data, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data_dir: {good_data}\nbach_size: 4\n")
    rc = _tool("train").main(["--config", str(recipe)])
    _check_error(rc, capsys, "r.yaml", "unknown recipe key 'bach_size'", "did you mean 'batch_size'")
    recipe.write_text(f"data_dir: {good_data}\nbatch_size: four\n")
    rc = _tool("train").main(["--config", str(recipe)])
    _check_error(rc, capsys, "'batch_size'", "'four'", "expected an integer")


@pytest.mark.parametrize("args, words", [
    (["--batch_size", "4.5"], ["'batch_size'", "expected an integer"]),
    (["--lr", "-0.1"], ["'lr'", "-0.1", "must be >= 0"]),
    (["--scheduler", "cosine"], ["'scheduler'", "choose one of", "closest: 'cosine_decay'"]),
    (["--distribute", "maybe"], ["'distribute'", "expected True or False"]),
    (["--lr", "nan"], ["'lr'", "nan", "expected a finite number"]),
    (["--lr=inf"], ["'lr'", "inf", "expected a finite number"]),
])
def test_recipe_bad_values(good_data, tmp_path, capsys, args, words):
    rc = _tool("train").main(train_args(good_data, str(tmp_path / "r"), *args))
    _check_error(rc, capsys, *words)


def test_unknown_model(good_data, tmp_path, capsys):
    rc = _tool("train").main(train_args(good_data, str(tmp_path / "r"), "--model", "shufflenet_v2_x0_6"))
    line = _check_error(rc, capsys, "unknown model 'shufflenet_v2_x0_6'")
    assert "shufflenet_v2_x0_5" in line                                # the closest registered names
    assert not os.path.exists(tmp_path / "r" / "last.ckpt")


# -- data ------------------------------------------------------------------------------------------------

def test_missing_data_dir(tmp_path, capsys):
    rc = _tool("train").main(train_args(str(tmp_path / "nowhere"), str(tmp_path / "r")))
    _check_error(rc, capsys, "nowhere", "does not exist", "data_dir")


def test_empty_class_folder(tmp_path, capsys):
    data = F.make_dataset(str(tmp_path / "d"), train_per_class=2, classes=2)
    os.makedirs(os.path.join(data, "train", "class_9"))
    rc = _tool("train").main(train_args(data, str(tmp_path / "r")))
    _check_error(rc, capsys, "class_9", "has no images", "remove the folder")


def test_val_classes_missing_from_train(tmp_path, capsys):
    data = F.make_dataset(str(tmp_path / "d"), train_per_class=2, classes=2)
    shutil.copytree(os.path.join(data, "val", "class_1"), os.path.join(data, "val", "class_7"))
    rc = _tool("train").main(train_args(data, str(tmp_path / "r")))
    _check_error(rc, capsys, "class_7", "not in the training set", "add them to the training split")


@pytest.mark.parametrize("link, target", [("train/a", "."), ("train/class_0/loop", "..")])
def test_symlink_loop_in_data_folder(tmp_path, capsys, link, target):
    data = F.make_dataset(str(tmp_path / "d"), train_per_class=2, classes=2)
    os.symlink(target, os.path.join(data, link))
    rc = _tool("train").main(train_args(data, str(tmp_path / "r")))
    _check_error(rc, capsys, os.path.join(data, link), "symlink loop", "remove the link")
    assert not os.path.exists(tmp_path / "r" / "last.ckpt")


def test_digits_into_a_foreign_folder_refused(tmp_path, capsys):
    data = F.make_dataset(str(tmp_path / "d"), train_per_class=2, classes=2)
    before = sorted(os.path.relpath(os.path.join(d, f), data) for d, _, fs in os.walk(data) for f in fs)
    rc = _tool("train").main(train_args(data, str(tmp_path / "r"), "--dataset", "digits"))
    _check_error(rc, capsys, "dataset digits", data, "not prepared by mindshuffle", "new or empty folder")
    assert sorted(os.path.relpath(os.path.join(d, f), data) for d, _, fs in os.walk(data) for f in fs) == before


def test_strict_data_stops_with_the_name(tmp_path):
    data = F.make_dataset(str(tmp_path / "d"), train_per_class=2, classes=2)
    open(os.path.join(data, "train", "class_0", "empty.jpg"), "wb").close()    # 5 files, one batch of 4
    p = F.run_tool("train", train_args(data, str(tmp_path / "r"), "--strict_data", "True", "--shuffle", "False",
                                       "--epoch_size", "1"))
    line = F.one_error_line(p.stderr)
    assert p.returncode == 2
    assert "empty.jpg" in line and "empty file, 0 bytes" in line and "strict_data: False" in line


# -- checkpoints -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """A good x0.5 checkpoint (4 classes), one of another model, one of another class count, a truncated one."""
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    for tag, name, classes in (("good", "shufflenet_v2_x0_5", 4), ("other_model", "shufflenet_v2_x1_0", 4),
                               ("other_classes", "shufflenet_v2_x0_5", 10)):
        out[tag] = save_checkpoint(create_model(name, num_classes=classes), str(d / f"{tag}.ckpt"))
    raw = open(out["good"], "rb").read()
    out["truncated"] = str(d / "truncated.ckpt")
    with open(out["truncated"], "wb") as f:
        f.write(raw[:len(raw) * 2 // 3])
    out["missing"] = str(d / "missing.ckpt")
    return out


def _validate_args(data, ckpt):
    return ["--data_dir", data, "--model", "shufflenet_v2_x0_5", "--image_resize", "16", "--crop_pct", "1.0",
            "--batch_size", "4", "--num_parallel_workers", "1", "--ckpt_path", ckpt]


@pytest.mark.parametrize("tag, words", [
    ("missing", ["missing.ckpt", "does not exist"]),
    ("truncated", ["truncated.ckpt", "cannot be read", "truncated"]),
    ("other_model", ["does not fit model 'shufflenet_v2_x0_5'", "saved from 'shufflenet_v2_x1_0'"]),
    ("other_classes", ["classifier for 10 classes", "has 4", "--num_classes 10"]),
])
def test_validate_bad_checkpoint(good_data, ckpts, capsys, tag, words):
    rc = _tool("validate").main(_validate_args(good_data, ckpts[tag]))
    _check_error(rc, capsys, *words)


def test_validate_truncated_checkpoint_subprocess(good_data, ckpts):
    p = F.run_tool("validate", _validate_args(good_data, ckpts["truncated"]))
    line = F.one_error_line(p.stderr)
    assert p.returncode == 2 and "truncated.ckpt" in line and "cannot be read" in line


@pytest.mark.parametrize("tag, words", [
    ("missing", ["missing.ckpt", "does not exist"]),
    ("truncated", ["truncated.ckpt", "cannot be read"]),
    ("other_model", ["does not fit model 'shufflenet_v2_x0_5'", "shufflenet_v2_x1_0"]),
])
def test_train_bad_start_checkpoint(good_data, ckpts, tmp_path, capsys, tag, words):
    rc = _tool("train").main(train_args(good_data, str(tmp_path / "r"), "--ckpt_path", ckpts[tag]))
    _check_error(rc, capsys, *words)


def test_read_checkpoint_rejects_damage(ckpts, tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read"):
        read_checkpoint(ckpts["truncated"])
    empty = tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(str(empty))


# -- a failed worker -------------------------------------------------------------------------------------

def _worker_pids(tag, msrun_pid=None):
    """{rank: pid} of the training processes (MS_ROLE=MS_WORKER) msrun started for job ``tag`` (with
    ``msrun_pid``: only its direct children, not the helper processes a worker forks)."""
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        env = dict(e.split(b"=", 1) for e in env if b"=" in e)
        if env.get(b"MS_ROLE") == b"MS_WORKER" and env.get(b"FAULT_TEST_JOB") == tag.encode() \
                and b"train.py" in cmdline and (msrun_pid is None or ppid == msrun_pid):  # not msrun's `tail -f`
            out[int(env[b"RANK_ID"])] = int(pid)
    return out


@pytest.mark.skipif(shutil.which("msrun", path=F.BIN) is None, reason="msrun not installed beside python")
def test_msrun_worker_killed_job_ends_naming_the_rank(good_data, tmp_path):
    run, logs = str(tmp_path / "run"), str(tmp_path / "msrun_logs")
    cmd = ["msrun", "--worker_num", "2", "--local_worker_num", "2", "--master_port", str(F.free_port()),
           "--join", "True", "--log_dir", logs, "python", os.path.join(F.ROOT, "tools", "train.py"),
           *train_args(good_data, run, "--distribute", "True", "--batch_size", "2", "--epoch_size", "200",
                       "--val_while_train", "False")]
    tag = f"{os.getpid()}-{time.time_ns()}"
    proc, out, err = F.start(cmd, str(tmp_path), "msrun", FAULT_TEST_JOB=tag)
    try:
        F.wait_for(proc, os.path.join(run, "train.log"), "epoch 1 step ", timeout=300)  # both ranks train
        pids = {}
        for _ in range(50):
            pids = _worker_pids(tag, proc.pid)
            if len(pids) == 2:
                break
            time.sleep(0.1)
        assert sorted(pids) == [0, 1], pids
        os.kill(pids[1], 9)
        killed = time.time()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            raise AssertionError("the job did not end within 120 s of a worker's death")
        took = time.time() - killed
    finally:
        F.kill_group(proc)
    text = F.read(out) + F.read(err)
    assert proc.returncode != 0
    assert took < 120
    assert "ERROR: distributed job failed: rank 1 stopped" in text, text[-3000:]
    assert f"--resume {run}" in text
    assert not _worker_pids(tag)                                       # nothing left running


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """fit() logs to the stdout of the test that called it; later tests must not write to that closed stream."""
    yield
    train_logs.start_logging(0)
