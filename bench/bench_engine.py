"""Engine overhead: steps/s of the full training loop against a bare loop of the same compiled step.

The network is tiny and the batch small (``--net tiny``: one 3x3 conv, BatchNorm, ReLU, global pooling and a
classifier; ``--net shufflenet``: ShuffleNet V2 x0.5 with one unit per stage; 32 px, batch 8, CPU, graph mode),
so the compiled step is as short as MindSpore makes it and the engine's host work around it (the per-call
metrics read, the loss checks, the steps.csv rows, the tqdm bar, the log lines) is as large a share of a step
as it will ever be.

  engine  ``mindshuffle.train.loop.train_one_epoch(run, epoch)``: the real ``TrainStep``/``HostFeed``/
          ``StepMetrics`` and the real callbacks (``ProgressBar`` on stderr, ``StepLog`` every
          ``--log-interval`` steps to stdout and train.log in a scratch run folder). Timed: the whole call.
          Not timed: validation and the checkpoint (per-epoch work, not per-step).
  bare    the same compiled function (``run.feed.train``, the same jitted graph) in
          ``for x, y in loader.create_tuple_iterator(num_epochs=1): train(x, y)``, then one sync (a weight's
          ``asnumpy``).

Both read the same batches from the same loader object (``--data``): ``tensors`` (default) is a list of
pre-made ``Tensor`` batches behind a ``create_tuple_iterator`` method, so no input pipeline runs at all and the
comparison is loop against loop; ``dataset`` is a ``mindspore.dataset.NumpySlicesDataset(...).batch(b)`` of the
same random images, the loader type the engine gets in a real run (its pipeline threads then share the cores).

Each variant (data kind x ``--sink-sizes``, steps per host call) is compiled and warmed up first; then
``--rounds`` interleaved rounds each time one epoch of ``--steps`` steps of each loop, in an order that rotates
from round to round. A third loop, ``bare + read`` (the bare loop plus the engine's one metrics ``asnumpy`` per
call, nothing else), splits the difference into the cost of that device sync and the rest (``--no-synced``
skips it). Reported: the median steps/s of each loop, overhead = 1 - engine / bare from the medians, the
paired per-round overheads (median, quartiles, range), the best round of each, the engine loop's own Python
time outside the compiled call and the read (from ``train_one_epoch``'s call times) and its per-epoch setup.
Sink size N > 1 runs N steps per host call through ``HostFeed`` (what a dataset-sink call does on Ascend), so
the per-call metrics read is shared by N steps. The machine may be shared: compare the paired figures, and
prefer more, shorter rounds (``--rounds 40 --steps 40``) when it is loaded. Exit code 0.

    python bench/bench_engine.py                      # ~2-4 minutes on 2 cores
    python bench/bench_engine.py --profile 1 2>/dev/null   # + cProfile of one engine epoch (sink size 1)
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("GLOG_v", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

TARGET = 0.05  # the target: overhead <= 5%


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--net", default="tiny", choices=("tiny", "shufflenet"),
                   help="tiny: conv-BN-ReLU-pool-dense; shufflenet: --model with --repeats")
    p.add_argument("--model", default="shufflenet_v2_x0_5", help="with --net shufflenet")
    p.add_argument("--repeats", default="1,1,1", help="units per stage (model_kwargs repeats); '' = the model's")
    p.add_argument("--size", type=int, default=32, help="image size (px)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--steps", type=int, default=192, help="steps per epoch (one timed epoch per entry and round)")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs of each entry after compiling")
    p.add_argument("--sink-sizes", default="32,8,1", help="comma list: steps per host call (32: the CPU plan)")
    p.add_argument("--data", default="tensors", help="comma list of tensors, dataset (see the module text)")
    p.add_argument("--no-synced", action="store_true",
                   help="skip the third loop (bare + the metrics read per call) that splits the overhead")
    p.add_argument("--log-interval", type=int, default=10, help="StepLog's log_interval")
    p.add_argument("--threads", type=int, default=0, help="MindSpore runtime_num_threads (0: its default)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="after the rounds, cProfile one engine epoch at sink size 1 and print the top N functions")
    return p.parse_args(argv)


def tiny_net(num_classes: int):
    """The smallest network with the parts a step has (conv, BatchNorm statistics, classifier)."""
    from mindspore import nn

    class Tiny(nn.Cell):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, pad_mode="pad", padding=1, has_bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.relu = nn.ReLU()
            self.fc = nn.Dense(8, num_classes)

        def construct(self, x):
            return self.fc(self.relu(self.bn(self.conv(x))).mean((2, 3)))

    return Tiny()


class TensorBatches:
    """Pre-made batches behind the one loader method the host feed calls."""

    def __init__(self, batches):
        self.batches = batches

    def create_tuple_iterator(self, num_epochs=1):
        return iter(self.batches)


class BenchData:
    """The part of ``TrainInputs`` that ``train_one_epoch`` uses: ``epoch_loader`` -> (loader, source)."""

    def __init__(self, num_classes: int, loaders: dict):
        self.num_classes = num_classes
        self.loaders = loaders
        self.kind = next(iter(loaders))

    def epoch_loader(self, epoch, run):
        return self.loaders[self.kind], None


def make_loaders(kinds, steps, batch, size, classes):
    import numpy as np
    import mindspore as ms
    import mindspore.dataset as ds
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * batch, 3, size, size), dtype=np.float32)
    y = rng.integers(0, classes, steps * batch).astype(np.int32)
    out = {}
    for kind in kinds:
        if kind == "tensors":
            out[kind] = TensorBatches([(ms.Tensor(x[i:i + batch]), ms.Tensor(y[i:i + batch]))
                                       for i in range(0, steps * batch, batch)])
        elif kind == "dataset":
            out[kind] = ds.NumpySlicesDataset((x, y), column_names=["image", "label"],
                                              shuffle=False).batch(batch, drop_remainder=True)
        else:
            raise SystemExit(f"--data: unknown kind {kind!r}; use tensors and/or dataset")
    return out


def make_run(cfg, folder, data, steps, sink_size, epochs, net_kind):
    """A ``Run`` wired from the library's own parts, as ``engine._build`` / ``engine._callbacks`` wire them."""
    from mindshuffle.schedules import lr_table
    from mindshuffle.train.build import build_model, make_loss, make_optimizer
    from mindshuffle.train.callbacks import CallbackList, ProgressBar, StepLog
    from mindshuffle.train.engine import Run
    from mindshuffle.train.plan import resolve
    from mindshuffle.train.step import HostFeed, TrainStep
    plan = resolve(cfg, 0, 1, steps)
    # resolve() keeps CPU at 1 step per call (no dataset sink there); N steps per HostFeed call is what a test
    # (and this bench) uses to stand for a sink call of N steps
    plan = dataclasses.replace(plan, sink_size=sink_size)
    lrs = lr_table(cfg.scheduler, plan.lr, plan.steps_per_epoch, epochs, min_lr=plan.min_lr)
    run = Run(cfg, folder, plan, data, lrs)
    run.net = build_model(cfg, data.num_classes) if net_kind == "shufflenet" else tiny_net(data.num_classes)
    run.optimizer = make_optimizer(run.net, cfg, lrs, plan.optimizer_loss_scale)
    run.step = TrainStep(run.net, make_loss(cfg), run.optimizer, plan)
    run.feed = HostFeed(run.step, plan)
    run.callbacks = CallbackList([ProgressBar(), StepLog(cfg.log_interval)])
    return run


class Entry:
    """One variant: a run (its own compiled step), timed both ways."""

    def __init__(self, run, kind: str, sink_size: int):
        self.run, self.kind, self.sink_size = run, kind, sink_size
        self.epoch = 0
        self.engine, self.bare, self.synced, self.outside, self.setup = [], [], [], [], []
        self.weight = run.net.trainable_params()[0]

    def time_engine(self, keep=True) -> None:
        from mindshuffle.train.loop import train_one_epoch
        run = self.run
        run.data.kind = self.kind
        self.epoch += 1
        t0 = time.perf_counter()
        stats = train_one_epoch(run, self.epoch)
        dt = time.perf_counter() - t0
        run.callbacks.on_epoch_end(run, self.epoch, {})  # closes the bar, as after the save in fit()
        if keep:
            self.engine.append(run.plan.steps_per_epoch / dt)
            self.outside.append(stats["seconds"] - stats["call_seconds"])  # the loop's own Python work
            self.setup.append(dt - stats["seconds"])  # on_epoch_begin, metrics reset, loader, iterator

    def time_bare(self, keep=True, synced=False) -> None:
        """The bare loop; ``synced``: read the metrics (``asnumpy``) after every ``sink_size`` steps, as the
        engine's loop does, but nothing else."""
        run = self.run
        every = self.sink_size if synced else 0
        acc = run.step.metrics.acc
        run.data.kind = self.kind
        loader, _ = run.data.epoch_loader(0, run)
        train = run.feed.train  # the same jitted step the engine's feed calls
        run.net.set_train(True)
        n = 0
        t0 = time.perf_counter()
        for x, y in loader.create_tuple_iterator(num_epochs=1):
            train(x, y)
            n += 1
            if every and n % every == 0:
                acc.asnumpy()
        self.weight.asnumpy()  # the one sync
        dt = time.perf_counter() - t0
        if keep:
            (self.synced if synced else self.bare).append(n / dt)

    def row(self) -> dict:
        med = statistics.median
        eng, bare = med(self.engine), med(self.bare)
        per_round = sorted(1 - e / b for e, b in zip(self.engine, self.bare))
        q = statistics.quantiles(per_round, n=4) if len(per_round) > 1 else per_round * 3
        synced = med(self.synced) if self.synced else float("nan")
        steps = self.run.plan.steps_per_epoch
        return {"kind": self.kind, "sink": self.sink_size, "engine": eng, "bare": bare, "overhead": 1 - eng / bare,
                "paired": med(per_round), "q1": q[0], "q3": q[2], "lo": per_round[0], "hi": per_round[-1],
                "best": 1 - max(self.engine) / max(self.bare), "synced": synced,
                "read": 1 - synced / bare, "rest": 1 - eng / synced,
                "outside_ms": med(self.outside) / steps * 1e3, "setup_ms": med(self.setup) * 1e3,
                "bare_ms": 1e3 / bare, "engine_ms": 1e3 / eng}


def profile_epoch(entry: Entry, top: int) -> str:
    import cProfile
    import io
    import pstats
    from mindshuffle.train.loop import train_one_epoch
    run = entry.run
    run.data.kind = entry.kind
    entry.epoch += 1
    prof = cProfile.Profile()
    prof.enable()
    train_one_epoch(run, entry.epoch)
    prof.disable()
    run.callbacks.on_epoch_end(run, entry.epoch, {})
    out = io.StringIO()
    st = pstats.Stats(prof, stream=out).strip_dirs()
    st.sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main(argv=None) -> int:
    args = parse_args(argv)
    command = "python bench/bench_engine.py" + ("" if argv is None and len(sys.argv) < 2 else
                                                 " " + shlex.join(sys.argv[1:] if argv is None else argv))
    kinds = [k for k in args.data.split(",") if k]
    sinks = [int(s) for s in args.sink_sizes.split(",") if s]
    bad = [s for s in sinks if s < 1 or args.steps % s]
    if bad:
        raise SystemExit(f"--sink-sizes {bad}: each must divide --steps {args.steps}")

    import mindspore as ms
    from mindshuffle import recipe
    from mindshuffle.train.context import init_context, seed_everything
    from mindshuffle.train.logs import attach_file_log, start_logging
    from mindshuffle.train.run_folder import RunFolder

    scratch = tempfile.mkdtemp(prefix="bench_engine_")
    repeats = [int(r) for r in args.repeats.split(",") if r]
    # every optimizer step needs an lr in the table (past its end the step fails): the epochs of every loop and
    # data kind on one run, warm-up and profile included
    epochs = 3 * len(kinds) * (max(args.warmup, 1) + args.rounds) + 2
    cfg = recipe.load(overrides=dict(
        dataset="digits", model=args.model, model_kwargs={"repeats": repeats} if repeats else {},
        num_classes=args.classes, batch_size=args.batch, image_resize=args.size, epoch_size=epochs,
        scheduler="constant", lr=0.001, warmup_epochs=0, log_interval=args.log_interval, device_target="CPU",
        mode=0, ckpt_save_dir=scratch))
    init_context(cfg, scratch)
    if args.threads:
        ms.set_context(runtime_num_threads=args.threads)
    seed_everything(cfg.seed)
    folder = RunFolder(scratch)
    start_logging(0)
    attach_file_log(folder)  # StepLog lines: stdout and train.log, as in a run

    data = BenchData(args.classes, make_loaders(kinds, args.steps, args.batch, args.size, args.classes))
    started = time.time()
    entries = []
    for s in sinks:
        run = make_run(cfg, folder, data, args.steps, s, epochs, args.net)
        entries += [Entry(run, kind, s) for kind in kinds]
    t_compile = time.time()
    for e in entries:  # compile and warm up
        for _ in range(max(args.warmup, 1)):
            e.time_engine(keep=False)
            e.time_bare(keep=False)
    t_compile = time.time() - t_compile
    for r in range(args.rounds):
        for e in entries:
            timers = [e.time_engine, e.time_bare] + ([] if args.no_synced else [lambda: e.time_bare(synced=True)])
            for k in range(len(timers)):  # the order rotates from round to round
                timers[(k + r) % len(timers)]()
        print(f"round {r + 1}/{args.rounds}: " + "; ".join(
            f"{e.kind} sink {e.sink_size}: engine {e.engine[-1]:.1f}, bare {e.bare[-1]:.1f}"
            + ("" if args.no_synced else f", bare + read {e.synced[-1]:.1f}") + " steps/s"
            for e in entries), flush=True)
    took = time.time() - started

    rows = [e.row() for e in entries]
    net_text = (f"{args.model} repeats {args.repeats or 'default'}" if args.net == "shufflenet" else
                "tiny net (3x3 conv 3->8 stride 2, BatchNorm, ReLU, mean pool, dense)")
    lines = [
        f"- command (from the repository root): `{command}`",
        f"- {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"{platform.platform(terse=True)}; mindspore {ms.__version__}; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end",
        f"- {net_text}, {args.classes} classes, batch {args.batch}, "
        f"{args.size} px, CPU, GRAPH_MODE; {args.steps} steps per epoch; median of {args.rounds} interleaved "
        f"rounds after {args.warmup} warm-up epoch(s) per entry; log_interval {args.log_interval}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, took {took:.0f} s "
        f"(compile + warm-up {t_compile:.0f} s)",
        "",
        "| data | steps per call | engine steps/s | bare steps/s | overhead, 1 - engine/bare (medians) | "
        "paired per-round overhead: median [quartiles] (min, max) | best round of each: overhead |",
        "|---|---|---|---|---|---|---|",
    ]
    pct = lambda v: f"{v * 100:.1f}%"  # noqa: E731
    for w in rows:
        lines.append(f"| {w['kind']} | {w['sink']} | {w['engine']:.1f} ({w['engine_ms']:.2f} ms) | {w['bare']:.1f} "
                     f"({w['bare_ms']:.2f} ms) | **{pct(w['overhead'])}** "
                     f"({'meets' if w['overhead'] <= TARGET else 'misses'} <= {TARGET * 100:.0f}%) | "
                     f"{pct(w['paired'])} [{pct(w['q1'])}, {pct(w['q3'])}] ({pct(w['lo'])}, {pct(w['hi'])}) | "
                     f"{pct(w['best'])} |")
    lines += ["", "Where the difference goes (medians): \"bare + read\" is the bare loop plus the engine's one "
              "metrics read (`asnumpy`) per call and nothing else.", "",
              "| data | steps per call | bare + read steps/s | the read: 1 - (bare + read)/bare | the rest: "
              "1 - engine/(bare + read) | engine loop's Python work outside feed.call + read, ms/step | "
              "per-epoch setup (bar, metrics reset, loader), ms |",
              "|---|---|---|---|---|---|---|"]
    for w in rows:
        lines.append(f"| {w['kind']} | {w['sink']} | " + ("- | - | - | " if args.no_synced else
                     f"{w['synced']:.1f} | {pct(w['read'])} | {pct(w['rest'])} | ")
                     + f"{w['outside_ms']:.3f} ({w['outside_ms'] / w['engine_ms'] * 100:.1f}% of a step) | "
                     f"{w['setup_ms']:.1f} |")
    print("\n" + "\n".join(lines), flush=True)
    if args.profile:
        first = next(e for e in entries if e.sink_size == sinks[0])
        print(f"\ncProfile of one engine epoch ({first.kind}, {first.sink_size} step(s) per call):\n")
        print(profile_epoch(first, args.profile), flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
