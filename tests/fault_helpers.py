"""Helpers for tests/test_faults.py: datasets with bad files, tools run as subprocesses, kill -9 at known points."""
import io
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
SAVE_FAULT = "MINDSHUFFLE_TEST_SAVE_FAULT"   # read by tests/fault_train.py (test-only hooks)
STEP_FAULT = "MINDSHUFFLE_TEST_STEP_FAULT"
BAD_FILES = ("corrupt.jpg", "empty.jpg")                 # unreadable: skipped and named once
ODD_FILES = ("gray.png", "cmyk.jpg", "rgba.png")          # readable in another colour mode: used


def _band(rng, k, size, classes):
    a = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
    band = size // classes
    a[k * band:(k + 1) * band] = 230
    return a


def make_dataset(root, train_per_class=4, val_per_class=2, size=16, classes=4, odd=False, seed=0):
    """``root/{train,val}/class_<k>/<i>.png``; with ``odd`` the training split also holds a truncated JPEG,
    a zero-byte file, and grayscale, CMYK and RGBA images."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = os.path.join(root, split, f"class_{k}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                Image.fromarray(_band(rng, k, size, classes)).save(os.path.join(folder, f"{i}.png"))
    if odd:
        c0, c1 = os.path.join(root, "train", "class_0"), os.path.join(root, "train", "class_1")
        rgb = Image.fromarray(_band(rng, 0, size, classes))
        rgb.convert("L").save(os.path.join(c0, "gray.png"))
        rgb.convert("CMYK").save(os.path.join(c0, "cmyk.jpg"), format="JPEG")
        Image.fromarray(_band(rng, 1, size, classes)).convert("RGBA").save(os.path.join(c1, "rgba.png"))
        buf = io.BytesIO()
        Image.fromarray(_band(rng, 1, size, classes)).save(buf, format="JPEG")
        with open(os.path.join(c1, "corrupt.jpg"), "wb") as f:
            f.write(buf.getvalue()[:len(buf.getvalue()) // 2])
        open(os.path.join(c1, "empty.jpg"), "wb").close()
    return root


def tool_env(**extra):
    env = dict(os.environ, GLOG_v="3", TQDM_DISABLE="1", PYTHONPATH=ROOT,
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    env.pop(SAVE_FAULT, None)
    env.pop(STEP_FAULT, None)
    env.update({k: str(v) for k, v in extra.items()})
    return env


def script(name):
    """``tools/<name>.py``, or ``tests/fault_train.py`` (train.py with the test-only fault hooks)."""
    return os.path.join(ROOT, "tests" if name == "fault_train" else "tools", f"{name}.py")


def run_tool(name, args, timeout=300, **env):
    """Run ``script(name)`` with the venv's python; returns the CompletedProcess (text)."""
    return subprocess.run([sys.executable, script(name), *args], cwd=ROOT,
                          env=tool_env(**env), capture_output=True, text=True, timeout=timeout)


def start(cmd, out_dir, tag, **env):
    """Start ``cmd`` in its own process group, stdout/stderr to files; returns (Popen, out path, err path)."""
    out, err = os.path.join(out_dir, f"{tag}.out"), os.path.join(out_dir, f"{tag}.err")
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen(cmd, cwd=ROOT, env=tool_env(**env), stdout=fo, stderr=fe, start_new_session=True)
    return p, out, err


def start_tool(name, args, out_dir, tag, **env):
    return start([sys.executable, script(name), *args], out_dir, tag, **env)


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


def wait_for(proc, path, text, timeout):
    """Wait until ``text`` appears in file ``path``; fails if the process ends first or time runs out."""
    end = time.time() + timeout
    while time.time() < end:
        if os.path.isfile(path) and text in read(path):
            return
        if proc.poll() is not None:
            raise AssertionError(f"process ended (rc {proc.returncode}) before {text!r} appeared in {path}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} did not appear in {path} within {timeout} s")


def kill_group(proc):
    """SIGKILL the process group started by ``start`` (cleanup; never raises)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def kill9(proc):
    """``kill -9`` the main process (as a user or the OOM killer would), then clean up its group."""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    kill_group(proc)


def one_error_line(stderr):
    """The single non-empty stderr line of a tool that stopped on a user error (and no traceback)."""
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
