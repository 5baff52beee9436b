"""Throughput of mindshuffle's ShuffleNet V2 against MindCV's and torchvision's, measured in one run.

For each width (x0.5, x1.0) it times, at batch 32 and 224 px on the CPU:
  inference   - a forward pass in eval mode (mindshuffle: the default of validate, infer and the Predictor on
                CPU, ``accel.accelerate(net, "infer")``: BatchNorm folded, the CPU kernels; MindCV as it ships;
                torchvision under ``torch.inference_mode``),
  train step  - forward, softmax cross-entropy, backward and an SGD-momentum update (lr 0.01, momentum 0.9);
                mindshuffle as the training engine runs it on CPU (``accel.accelerate(net, "train")``).
MindSpore runs in graph mode. torchvision runs in another Python (``--torch-python``) through
``bench/torch_worker.py``, so its numbers come from the same run and the same machine state.

The machine may be shared, so the timings are interleaved: every round times every entry once
(``--iters`` iterations, their median), and the result is the median over ``--rounds`` rounds.

    python bench/bench_throughput.py --torch-python /work/tv-venv/bin/python --out bench/RESULTS.md
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

os.environ.setdefault("GLOG_v", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

WIDTHS = ("0_5", "1_0")
MODES = ("infer", "train")
SOURCES = ("mindshuffle", "mindcv", "torchvision")
TARGETS = {("mindcv", "infer"): 3.0, ("mindcv", "train"): 1.5,
           ("torchvision", "infer"): 1.5, ("torchvision", "train"): 1.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", default=",".join(WIDTHS), help="comma list of 0_5, 1_0, 1_5, 2_0")
    p.add_argument("--modes", default=",".join(MODES), help="comma list of infer, train")
    p.add_argument("--sources", default=",".join(SOURCES), help="comma list of mindshuffle, mindcv, torchvision")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--iters", type=int, default=3, help="timed iterations per entry and round")
    p.add_argument("--warmup", type=int, default=2, help="untimed iterations after compiling")
    p.add_argument("--threads", type=int, default=0, help="MindSpore runtime_num_threads (0: its default)")
    p.add_argument("--torch-threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--settle", type=float, default=0.2,
                   help="seconds of idle before each timed entry, so the previous entry's threads go quiet")
    p.add_argument("--no-fuse", action="store_true", help="time mindshuffle inference without BN folding")
    p.add_argument("--torch-python", default="/work/tv-venv/bin/python",
                   help="a Python with torch and torchvision; skipped when it cannot import them")
    p.add_argument("--out", default="", help="write the Markdown report here (e.g. bench/RESULTS.md)")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------------------
# MindSpore entries

def _mindspore_entries(args, widths, modes, sources):
    import numpy as np
    import mindspore as ms
    from mindspore import Tensor, nn

    ctx = dict(mode=ms.GRAPH_MODE, device_target="CPU")
    if args.threads:
        ctx["runtime_num_threads"] = args.threads
    ms.set_context(**ctx)
    import mindcv
    import mindshuffle
    from mindshuffle.accel import accelerate

    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((args.batch, 3, args.size, args.size), dtype=np.float32))
    y = Tensor(rng.integers(0, 1000, args.batch).astype(np.int32))

    def build(source, width):
        if source == "mindshuffle":
            return mindshuffle.create_model(f"shufflenet_v2_x{width}", num_classes=1000)
        return mindcv.models.create_model(f"shufflenet_v2_x{width[0]}_{width[2]}", num_classes=1000)

    def make(source, width, mode):
        net = build(source, width)
        if mode == "infer":
            net.set_train(False)
            if source == "mindshuffle":  # the default path (--no-fuse: accelerated, BatchNorm not folded)
                accelerate(net, "train" if args.no_fuse else "infer")
            return lambda: net(x).asnumpy()
        if source == "mindshuffle":
            accelerate(net, "train")
        loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
        opt = nn.Momentum(net.trainable_params(), learning_rate=0.01, momentum=0.9)
        step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
        step.set_train(True)
        return lambda: step(x, y).asnumpy()

    entries = {}
    for width in widths:
        for mode in modes:
            for source in sources:
                if source == "torchvision":
                    continue
                fn = make(source, width, mode)
                t = time.perf_counter()
                fn()  # compiles the graph
                compile_s = time.perf_counter() - t
                for _ in range(args.warmup):
                    fn()
                entries[(source, width, mode)] = fn
                print(f"built {source:11s} x{width} {mode:5s} (compile+first step {compile_s:.1f} s)", flush=True)
    return entries, {"mindspore": ms.__version__, "mindcv": getattr(mindcv, "__version__", "?")}


def _time_local(fn, iters):
    secs = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        secs.append(time.perf_counter() - t)
    return secs


# --------------------------------------------------------------------------------------------------------
# torchvision entries (subprocess)

class TorchWorker:
    """bench/torch_worker.py in another Python; ``None`` from ``start`` when torch cannot be imported there."""

    def __init__(self, proc):
        self.proc = proc

    @classmethod
    def start(cls, python, threads=0):
        if not python or not os.path.exists(python):
            return None
        proc = subprocess.Popen([python, os.path.join(HERE, "torch_worker.py"), str(threads)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        worker = cls(proc)
        try:
            worker.info = worker.ask(cmd="info")
        except RuntimeError as exc:
            print(f"torchvision skipped: {exc}", flush=True)
            worker.close()
            return None
        return worker

    def ask(self, **req):
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("torch worker exited (is torch importable in that Python?)")
        out = json.loads(line)
        if not out.pop("ok"):
            raise RuntimeError(out["error"])
        return out

    def close(self):
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass
        self.proc.wait(timeout=60)


def _torch_entries(worker, args, widths, modes):
    entries = {}
    for width in widths:
        for mode in modes:
            key = f"{width}-{mode}"
            worker.ask(cmd="build", key=key, width=width, mode=mode, batch=args.batch, size=args.size)
            worker.ask(cmd="time", key=key, iters=1 + args.warmup)
            entries[("torchvision", width, mode)] = (
                lambda iters, key=key: worker.ask(cmd="time", key=key, iters=iters)["seconds"])
            print(f"built torchvision x{width} {mode}", flush=True)
    return entries


# --------------------------------------------------------------------------------------------------------
# report

def _table(results, args, widths, modes):
    """Markdown table: img/s per source and the ratios against the targets."""
    head = ("| model | task | mindshuffle img/s | MindCV img/s | torchvision img/s | mindshuffle / MindCV "
            "| mindshuffle / torchvision |")
    lines = [head, "|" + "---|" * 7]
    verdicts = []
    for width in widths:
        for mode in modes:
            ips = {s: results.get((s, width, mode)) for s in SOURCES}
            cells = [f"{ips[s]:.1f}" if ips[s] else "-" for s in SOURCES]
            ratios = []
            for ref in ("mindcv", "torchvision"):
                if ips["mindshuffle"] and ips[ref]:
                    r = ips["mindshuffle"] / ips[ref]
                    target = TARGETS[(ref, mode)]
                    ok = r >= target
                    ratios.append(f"{r:.2f} ({'meets' if ok else 'below'} {target:g})")
                    verdicts.append(ok)
                else:
                    ratios.append("-")
            task = "inference" if mode == "infer" else "train step"
            lines.append(f"| shufflenet_v2_x{width} | {task} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines), verdicts


def _machine():
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def _write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None):
    args = parse_args(argv)
    widths = [w.strip() for w in args.widths.split(",") if w.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    load_start = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)

    worker = TorchWorker.start(args.torch_python, args.torch_threads) if "torchvision" in sources else None
    entries, versions = _mindspore_entries(args, widths, modes, sources)
    timers = {k: (lambda iters, fn=fn: _time_local(fn, iters)) for k, fn in entries.items()}
    if worker is not None:
        timers.update(_torch_entries(worker, args, widths, modes))
        versions.update(torch=worker.info["torch"], torchvision=worker.info["torchvision"],
                        torch_threads=worker.info["threads"])

    order = sorted(timers, key=lambda k: (WIDTHS.index(k[1]) if k[1] in WIDTHS else 9, k[2], SOURCES.index(k[0])))
    per_round = {k: [] for k in order}
    for r in range(args.rounds):
        # rotate the order each round so that no entry always follows the same neighbour
        rot = order[r % len(order):] + order[:r % len(order)]
        for k in rot:
            time.sleep(args.settle)  # let the previous entry's worker threads go idle
            per_round[k].append(statistics.median(timers[k](args.iters)))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k[0][:5]} x{k[1]} {k[2]} {args.batch / per_round[k][-1]:.0f}" for k in order), flush=True)
    if worker is not None:
        worker.close()

    results = {k: args.batch / statistics.median(v) for k, v in per_round.items()}
    table, verdicts = _table(results, args, widths, modes)
    load_end = os.getloadavg()
    cmd = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    report = "\n".join([
        "# ShuffleNet V2 throughput: mindshuffle vs MindCV vs torchvision",
        "",
        f"- command (from the repository root): `{cmd}`",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, took {time.time() - started.timestamp():.0f} s",
        f"- machine: {_machine()}; load average {load_start[0]:.1f} at start, {load_end[0]:.1f} at end "
        "(the machine is shared: compare ratios, which come from interleaved rounds)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- batch {args.batch}, {args.size} px, float32, MindSpore GRAPH_MODE on CPU; "
        f"median of {args.rounds} interleaved rounds x {args.iters} iterations after {args.warmup} warm-up steps",
        "- inference: eval mode; mindshuffle as validate.py, infer.py and the Predictor run it on CPU: BatchNorm folded, "
        "CPU accelerator on (`mindshuffle.accel.accelerate(net, \"infer\")`)"
        + (" - DISABLED (--no-fuse)" if args.no_fuse else ""),
        "- train step: forward + softmax cross-entropy + backward + SGD momentum 0.9, mindshuffle accelerated as the "
        "engine trains (`accelerate(net, \"train\")`) (MindSpore "
        "`nn.TrainOneStepCell` + `nn.Momentum`; PyTorch `torch.optim.SGD`)",
        "",
        table,
        "",
    ])
    print()
    print(table, flush=True)
    if args.out:
        _write_atomic(args.out, report)
        print(f"wrote {args.out}")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
