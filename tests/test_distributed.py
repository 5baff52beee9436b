"""Two-rank data-parallel training under msrun on CPU: disjoint shards, identical weights."""
import os
import shutil
import socket
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from test_train import SHALLOW, make_dataset, shallow_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NO_MSRUN = shutil.which("msrun", path=BIN) is None


def _msrun(tmp_path, logs, script, *args, **env):
    env = dict(os.environ, GLOG_v="3", PATH=BIN + os.pathsep + os.environ.get("PATH", ""), PYTHONPATH=ROOT, **env)
    cmd = ["msrun", "--worker_num", "2", "--local_worker_num", "2", "--master_port", str(_free_port()),
           "--join", "True", "--log_dir", str(tmp_path / logs), "python", script, *args]
    p = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=400)
    text = p.stdout[-2000:] + p.stderr[-2000:]
    for name in sorted(os.listdir(tmp_path / logs)):
        text += open(tmp_path / logs / name, errors="replace").read()[-3000:]
    return p.returncode, text


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("msrun")
    data = make_dataset(str(tmp_path / "data"), train_per_class=4, val_per_class=2)  # 20 train images
    run = str(tmp_path / "run")
    rc, logs = _msrun(tmp_path, "msrun_logs", os.path.join(ROOT, "tools", "train.py"),
           "--data_dir", data, "--ckpt_save_dir", run, "--distribute", "True", "--device_target", "CPU",
           "--model", "shufflenet_v2_x0_5", "--image_resize", "16", "--batch_size", "5", "--epoch_size", "2",
           "--num_parallel_workers", "1", "--lr", "0.05", "--warmup_epochs", "0", "--crop_pct", "1.0",
           "--hflip", "0", "--seed", "5", "--log_sample_ids", "True", "--val_interval", "2",
           "--global_batch_size", "5", "--ema", "True", "--ema_decay", "0.9", *SHALLOW)
    assert rc == 0, logs
    return tmp_path, run


@pytest.mark.skipif(NO_MSRUN, reason="msrun not installed beside python")
def test_msrun_two_ranks_disjoint_data_identical_weights(two_ranks):
    tmp_path, run = two_ranks

    # each epoch: the two ranks saw disjoint halves that together are the whole training set
    for epoch in (1, 2):
        seen = [np.loadtxt(os.path.join(run, "samples", f"rank{r}_epoch{epoch}.txt"), dtype=int) for r in (0, 1)]
        assert len(seen[0]) == len(seen[1]) == 10
        assert not set(seen[0]) & set(seen[1])
        assert set(seen[0]) | set(seen[1]) == set(range(20))
    first = [np.loadtxt(os.path.join(run, "samples", f"rank{r}_epoch1.txt"), dtype=int) for r in (0, 1)]
    second = [np.loadtxt(os.path.join(run, "samples", f"rank{r}_epoch2.txt"), dtype=int) for r in (0, 1)]
    assert not np.array_equal(first[0], second[0])                       # reshuffled between epochs

    # averaged gradients (and averaged BN statistics) leave both ranks with the same weights; with EMA on,
    # rank 0's last.ckpt holds the trained weights as train.<name> (rank 1 saves its trained weights)
    r0 = ms.load_checkpoint(os.path.join(run, "last.ckpt"))
    r1 = ms.load_checkpoint(os.path.join(run, "ranks", "rank1_last.ckpt"))
    names = [k for k, v in r1.items() if isinstance(v, ms.Parameter) and k not in ("epoch_num", "step_num")]
    assert set(shallow_net(num_classes=5).parameters_dict()) <= set(names) and any("moving_mean" in k for k in names)
    assert sorted(names) == sorted(k[len("train."):] for k in r0 if k.startswith("train."))
    for k in names:
        np.testing.assert_allclose(r1[k].asnumpy(), r0["train." + k].asnumpy(), rtol=1e-5, atol=1e-6, err_msg=k)
    assert float(r0["ema_updates"].asnumpy()) == 4.0                    # 2 epochs x 2 steps of 5 per rank
    moved = ms.load_checkpoint(os.path.join(run, "last.ckpt"))["conv1.conv.weight"].asnumpy()
    assert np.abs(moved).sum() > 0

    log = open(os.path.join(run, "train.log")).read()
    assert "rank 0 of 2" in log and "20 train images (10 per card)" in log
    summary = open(os.path.join(run, "summary.json")).read()
    assert '"cards": 2' in summary


@pytest.mark.skipif(NO_MSRUN, reason="msrun not installed beside python")
def test_resume_stops_when_a_rank_sees_no_last_checkpoint(two_ranks):
    """As on a second node whose run folder is not the shared one: every rank stops with the same line and the
    folder is untouched (tests/fault_train.py hides last.ckpt from rank 1)."""
    tmp_path, run = two_ranks
    before = sorted((n, os.path.getmtime(os.path.join(run, n))) for n in os.listdir(run) if not n.startswith(".rank"))
    rc, logs = _msrun(tmp_path, "resume_logs", os.path.join(ROOT, "tests", "fault_train.py"), "--resume", run,
                      MINDSHUFFLE_TEST_HIDE_LAST_RANK="1")
    assert rc != 0
    line = f"error: cannot resume: rank(s) 1 see no last.ckpt in {run!r}; a multi-node run needs one run folder"
    assert logs.count(line) >= 2, logs[-4000:]                            # both ranks, the same line
    for name in os.listdir(tmp_path / "resume_logs"):                    # msrun itself prints a traceback
        if name.startswith("worker"):
            assert "Traceback" not in open(tmp_path / "resume_logs" / name, errors="replace").read(), name
    after = sorted((n, os.path.getmtime(os.path.join(run, n))) for n in os.listdir(run) if not n.startswith(".rank"))
    assert after == before
