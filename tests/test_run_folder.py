"""The run folder: one writer (an OS lock a killed run never leaves stuck), checks before any work (a file,
a folder under a file, a read-only folder), temporary files swept, a dry run that writes nothing."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import fault_helpers as F
from test_train import SHALLOW
from mindshuffle.checkpoints import read_checkpoint
from mindshuffle.errors import RunFolderError
from mindshuffle.train.run_folder import RunFolder

HOLD = ("import sys, time; sys.path.insert(0, {root!r}); from mindshuffle.train.run_folder import RunFolder; "
        "f = RunFolder({path!r}); f.lock(); f.record_owner(); print('locked', flush=True); time.sleep(600)")


def _holder(path):
    p = subprocess.Popen([sys.executable, "-c", HOLD.format(root=F.ROOT, path=path)], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _listing(path):
    return sorted((n, os.path.getmtime(os.path.join(path, n))) for n in os.listdir(path))


@pytest.fixture(scope="module")
def good_data(tmp_path_factory):
    return F.make_dataset(str(tmp_path_factory.mktemp("rf_data")))


def _args(data, run, *extra):
    return ["--data_dir", data, "--ckpt_save_dir", run, "--model", "shufflenet_v2_x0_5", "--device_target", "CPU",
            "--image_resize", "16", "--batch_size", "4", "--epoch_size", "1", "--num_parallel_workers", "1",
            *SHALLOW, *extra]


def test_second_writer_is_refused_and_a_killed_holder_frees_the_folder(good_data, tmp_path):
    run = str(tmp_path / "run")
    holder = _holder(run)
    try:
        before = _listing(run)
        p = F.run_tool("train", _args(good_data, run))
        line = F.one_error_line(p.stderr)
        assert p.returncode == 2 and "being written by another live run" in line and str(holder.pid) in line
        assert _listing(run) == before                                   # the refused command changed nothing
        r = RunFolder(run)
        with pytest.raises(RunFolderError):
            r.lock()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    r = RunFolder(run)
    r.lock()                                                             # the OS released the dead run's lock
    r.unlock()


@pytest.mark.parametrize("kind", ["file", "under_file", "read_only"])
def test_unusable_folder_fails_before_any_work(good_data, tmp_path, kind):
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("not a folder")
        run = str(target)
    elif kind == "under_file":
        target.write_text("not a folder")
        run = str(target / "run")
    else:
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only folder")
        target.mkdir()
        os.chmod(target, 0o555)
        run = str(target / "run")
    p = F.run_tool("train", _args(good_data, run))
    line = F.one_error_line(p.stderr)
    assert p.returncode == 2 and {"file": "is a file", "under_file": "lies under the file",
                                  "read_only": "read-only"}[kind] in line


def test_read_only_folder_is_refused_in_process(tmp_path, monkeypatch):
    folder = RunFolder(str(tmp_path / "ro" / "run"))
    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)      # as for a user without write permission
    with pytest.raises(RunFolderError, match="read-only"):
        folder.check_usable()


def test_sweep_removes_ours_and_mindsporess_temporary_files(tmp_path):
    folder = RunFolder(str(tmp_path))
    for name in (".tmp-abc.ckpt", ".tmp-def.tmp", ".tmp-x.yaml", "last.ckpt", "keep.tmp"):
        (tmp_path / name).write_text("x")
    assert folder.sweep() == [".tmp-abc.ckpt", ".tmp-def.tmp", ".tmp-x.yaml"]
    assert sorted(os.listdir(tmp_path)) == ["keep.tmp", "last.ckpt"]


@pytest.mark.parametrize("stage", ["mindspore_tmp", "renamed"])
def test_a_checkpoint_save_cut_short_leaves_no_temporary_file(tmp_path, stage):
    """Ctrl-C inside MindSpore's checkpoint writer: it writes <stem>.tmp and renames it to <stem>.ckpt; at either
    point the interrupted save leaves nothing behind (the CI run on record found a .tmp-*.tmp after Ctrl-C)."""
    import mindspore as ms
    from mindshuffle.fileio import atomic_path
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(tmp_path / "last.ckpt"), suffix=".ckpt") as tmp:
            ms.save_checkpoint([{"name": "w", "data": ms.Tensor([1.0])}], tmp)
            if stage == "mindspore_tmp":  # as if interrupted before MindSpore's own rename
                os.rename(tmp, os.path.splitext(tmp)[0] + ".tmp")
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == []


def test_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    run = str(tmp_path / "never")
    p = F.run_tool("train", ["-c", os.path.join(F.ROOT, "configs", "shufflenet_v2_0.5_ascend.yaml"),
                             "--ckpt_save_dir", run, "--dry_run", "True"])
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout
    assert "ImageNet-1k's 1281167 images assumed" in out and "8 card(s) x 64 = 512" in out
    assert "jit_level O0, backend ms_backend" in out and "amp_level O3" in out and "dataset sink" in out
    assert not os.path.exists(run)


def test_ctrl_c_ends_with_one_line_and_exit_130(good_data, tmp_path):
    run = str(tmp_path / "run")
    proc, out, err = F.start_tool("train", _args(good_data, run, "--epoch_size", "50", "--log_interval", "1"),
                                  str(tmp_path), "sigint")
    try:
        F.wait_for(proc, out, "epoch 2 step ", timeout=240)      # inside the graph runtime's second epoch
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        F.kill_group(proc)
    text = F.read(err)
    assert proc.returncode == 130, text[-2000:]
    lines = [ln for ln in text.splitlines() if ln.strip() and "%|" not in ln]
    saved = json.loads(read_checkpoint(os.path.join(run, "last.ckpt"))["mindshuffle_state"])["epoch"]
    assert saved >= 1                                                   # the line names what last.ckpt holds
    assert lines[-1] == f"interrupted after epoch {saved}; continue with --resume {run}", text[-2000:]
    assert "Traceback" not in text
    assert not [n for n in os.listdir(run) if n.startswith(".tmp-")]
