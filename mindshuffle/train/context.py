"""MindSpore's context for a run: execution mode, device, the ranks msrun started, seeds, and the scheduler's
one line when a rank of a distributed job died."""
from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import threading
import time

import numpy as np

from ..errors import WorkerFailedError

__all__ = ["init_context", "seed_everything", "hardware", "interruptible"]


def init_context(cfg, run_dir: str) -> tuple:
    """Execution mode, device, distributed init; returns (rank, world)."""
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == 0 else ms.PYNATIVE_MODE, device_target=cfg.device_target)
    if cfg.enable_compile_cache:
        os.environ.setdefault("MS_COMPILER_CACHE_ENABLE", "1")
        os.environ.setdefault("MS_COMPILER_CACHE_PATH", os.path.join(run_dir, "compile_cache"))
    if not cfg.distribute:
        return 0, 1
    if cfg.device_target == "CPU":  # ranks on one machine share its cores: one thread each in native kernels
        os.environ.setdefault("MINDSHUFFLE_THREADS", "1")
    from mindspore.communication import get_group_size, get_rank, init
    started = time.time()
    try:
        init()  # HCCL on Ascend, NCCL on GPU, MindSpore's own MCCL on CPU; msrun provides the cluster variables
    except RuntimeError as e:
        # msrun's scheduler process waits inside init() for the whole job and raises when a worker stops
        # sending heartbeats; turn MindSpore's long text into one line naming the rank
        if os.environ.get("MS_ROLE") != "MS_SCHED":
            raise
        raise WorkerFailedError(_worker_failure(str(e), run_dir, started)) from None
    rank, world = get_rank(), get_group_size()
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, f".rank{rank}.pid"), "w") as f:  # read by the scheduler if a rank dies
        f.write(str(os.getpid()))
    ms.reset_auto_parallel_context()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                 device_num=world)
    return rank, world


def _worker_failure(text: str, run_dir: str, since: float) -> str:
    """The scheduler's one line when a worker died. msrun reaps the rank that died first and SIGKILLs the
    others, which it does not reap: so (on this node) the failed rank's process is gone while the others
    are still zombies. Falls back to MindSpore's list of timed-out nodes."""
    pids = {}
    for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
        m = re.fullmatch(r"\.rank(\d+)\.pid", name)
        path = os.path.join(run_dir, name)
        if m and os.path.getmtime(path) >= since - 1:
            with open(path) as f:
                pids[int(m.group(1))] = int(f.read().strip() or 0)
    gone = sorted(r for r, pid in pids.items() if not os.path.exists(f"/proc/{pid}"))
    if len(gone) == 1:
        ranks = str(gone[0])
    else:
        found = re.search(r"node list is: [^{]*\{([\d, ]+)\}", text) or \
            re.search(r"worker (\d+) is the first one timed out", text)
        ranks = found.group(1).replace(" ", "") if found else "?"
    known = ", ".join(f"{r}={pid}" for r, pid in sorted(pids.items()))
    return (f"distributed job failed: rank {ranks} stopped (killed, crashed or out of memory) and msrun stopped "
            f"the other ranks; see worker_{ranks.split(',')[0]}.log in msrun's --log_dir"
            + (f" (rank=pid: {known})" if known else "") + f", then continue with --resume {run_dir}")


def seed_everything(seed: int) -> None:
    import mindspore as ms
    import mindspore.dataset as ds
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    ms.set_seed(seed)
    ds.config.set_seed(seed)


def hardware() -> dict:
    import platform
    import mindspore as ms
    return {"platform": platform.platform(terse=True), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "mindspore": ms.__version__}



@contextlib.contextmanager
def interruptible():
    """Ctrl-C ends a run through KeyboardInterrupt, so the engine can say which epoch is saved. Under MindSpore's
    graph runtime a C handler (installed again and again by its runtime threads) takes SIGINT over and turns it
    into SIGTERM for the whole process (exit 143, no message): SIGTERM, which is also what a job scheduler
    sends before it kills, is therefore turned into KeyboardInterrupt here, in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
