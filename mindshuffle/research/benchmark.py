"""Speed measured on the current device: latency, throughput, training-step speed, graph compile time, memory.

Every function takes plain arguments and returns a plain dict, so scripts (``tools/benchmark.py``, ``bench/``)
can combine and store the results as they like. Times are wall-clock; each measurement makes one first call
(graph compile + first run, reported as ``first_s``), ``warmup`` more calls, then ``repeats`` timed calls whose
median (or, with ``statistic="min"``, fastest) is reported. The device is synchronised after every call.

    measure(fn, warmup=2, repeats=10)
        -> {"first_s", "median_ms", "min_ms", "max_ms", "mean_ms", "repeats"}           any zero-arg callable
    measure_interleaved({key: fn, ...}, warmup=2, repeats=10) -> {key: measure-dict}
        round-robin timing of several callables (fair comparisons on a shared, noisy machine)
    inference(net, batch_size=1, image_size=224, in_channels=3, warmup=2, repeats=10, statistic="median")
        -> {"batch_size", "ms_per_batch", "img_per_s", "compile_s", ...}                 net in eval mode
    train_step(net, batch_size=8, image_size=224, num_classes=1000, lr=0.01, warmup=2, repeats=5,
               statistic="median")
        -> {"batch_size", "ms_per_step", "img_per_s", "compile_s", ...}
           one TrainOneStepCell step (SGD momentum 0.9, softmax cross-entropy) on random data
    peak_rss_mb() -> float                     the process's resident-memory high-water mark so far (MiB)
    mindcv_name(name) -> str | None            MindCV's model of the same name (or alias), if MindCV has one
    benchmark_model(name, batch_sizes=(1, 8), train_batch_size=8, image_size=224, warmup=2, repeats=5,
                    reference=True, isolate=False, statistic="median", fuse="fast")
        -> {"model", "params_M", "flops_M", "latency_ms", "throughput": {bs: img/s}, "train_img_per_s",
            "compile_s", "peak_rss_mb", "reference": {same keys for MindCV's model} | None}
    run_isolated(fn, *args, **kwargs)          call fn in a fresh spawned process (own compile cache and
                                               memory high-water mark) and return its result

``compile_s`` is the first call's time minus one steady call: the graph compile (plus one-time set-up).
``peak_rss_mb`` is a high-water mark of the whole process: it only means "this model's peak" when the model
ran in its own process (``isolate=True``, what ``tools/benchmark.py`` does by default).
All functions expect graph mode (``ms.set_context(mode=ms.GRAPH_MODE)``) for representative numbers; they run
in whatever mode is set.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

__all__ = ["measure", "inference", "train_step", "peak_rss_mb", "mindcv_name", "benchmark_model", "run_isolated",
           "synchronize", "measure_interleaved"]


def synchronize(out=None) -> None:
    """Wait until the device has finished the work that produced ``out`` (so that wall-clock times mean
    something). On CPU (where ``ms.runtime.synchronize`` is not supported) reading the output back does it;
    that costs ~0.1 ms since CPU tensors are not copied."""
    if ms.get_context("device_target") != "CPU":
        ms.runtime.synchronize()
        return
    while isinstance(out, (tuple, list)) and out:
        out = out[0]
    if isinstance(out, Tensor):
        out.asnumpy()


def measure(fn, warmup: int = 2, repeats: int = 10) -> dict:
    """Time ``fn()``: one first call (compile), ``warmup`` untimed calls, then the median of ``repeats``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    t0 = time.perf_counter()
    synchronize(fn())
    first = time.perf_counter() - t0
    for _ in range(max(0, warmup)):
        synchronize(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        synchronize(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return dict(first_s=first, median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times),
                mean_ms=statistics.fmean(times), repeats=repeats)


def measure_interleaved(fns: dict, warmup: int = 2, repeats: int = 10) -> dict:
    """Time several zero-arg callables round-robin: each one's first call, ``warmup`` rounds, then ``repeats``
    rounds in which every callable runs once (the order rotating each round). On a shared machine a burst of
    foreign load then hits all of them alike, so their ratios stay meaningful. Returns ``{key: measure-dict}``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    keys = list(fns)
    first = {}
    for k in keys:
        t0 = time.perf_counter()
        synchronize(fns[k]())
        first[k] = time.perf_counter() - t0
    for _ in range(max(0, warmup)):
        for k in keys:
            synchronize(fns[k]())
    times = {k: [] for k in keys}
    for r in range(repeats):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            t0 = time.perf_counter()
            synchronize(fns[k]())
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: dict(first_s=first[k], median_ms=statistics.median(t), min_ms=min(t), max_ms=max(t),
                    mean_ms=statistics.fmean(t), repeats=repeats) for k, t in times.items()}


def _images(batch_size: int, image_size, in_channels: int, seed: int = 0) -> Tensor:
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    rng = np.random.default_rng(seed)
    return Tensor(rng.standard_normal((batch_size, in_channels, h, w)).astype(np.float32))


def inference(net: nn.Cell, batch_size: int = 1, image_size=224, in_channels: int = 3, warmup: int = 2,
              repeats: int = 10, inputs: Tensor | None = None, statistic: str = "median") -> dict:
    """Forward-pass speed of ``net`` (put in eval mode) on random images, or on ``inputs`` if given.
    ``statistic``: "median" of the repeats, or "min" (the least disturbed run on a busy machine)."""
    net.set_train(False)
    x = inputs if inputs is not None else _images(batch_size, image_size, in_channels)
    bs = int(x.shape[0])
    m = measure(lambda: net(x), warmup, repeats)
    t = _stat(m, statistic)
    return dict(batch_size=bs, ms_per_batch=t, img_per_s=bs * 1e3 / t, latency_ms=t if bs == 1 else None,
                compile_s=max(0.0, m["first_s"] - m["median_ms"] / 1e3), statistic=statistic, **_prefixed(m))


def train_step(net: nn.Cell, batch_size: int = 8, image_size=224, in_channels: int = 3, num_classes: int = 1000,
               lr: float = 0.01, warmup: int = 2, repeats: int = 5, statistic: str = "median") -> dict:
    """Speed of one training step: forward, softmax cross-entropy, backward, SGD (momentum 0.9) update.

    Changes the weights of ``net`` (random data); build a fresh network if that matters.
    """
    net.set_train(True)
    loss = nn.SoftmaxCrossEntropyWithLogits(sparse=True, reduction="mean")
    opt = nn.SGD(net.trainable_params(), learning_rate=lr, momentum=0.9)
    step = nn.TrainOneStepCell(nn.WithLossCell(net, loss), opt)
    step.set_train(True)
    x = _images(batch_size, image_size, in_channels, seed=1)
    y = Tensor(np.random.default_rng(2).integers(0, num_classes, batch_size).astype(np.int32))
    m = measure(lambda: step(x, y), warmup, repeats)
    t = _stat(m, statistic)
    return dict(batch_size=batch_size, ms_per_step=t, img_per_s=batch_size * 1e3 / t,
                compile_s=max(0.0, m["first_s"] - m["median_ms"] / 1e3), statistic=statistic, **_prefixed(m))


def _stat(m: dict, statistic: str) -> float:
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    return m[f"{statistic}_ms"]


def _prefixed(m: dict) -> dict:
    return {f"t_{k}": v for k, v in m.items()}


def peak_rss_mb() -> float:
    """Resident-memory high-water mark of this process in MiB (``ru_maxrss``; KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def mindcv_name(name: str) -> str | None:
    """The MindCV model name for mindshuffle's ``name`` (the name itself or one of its aliases), or None."""
    try:
        import mindcv
    except ImportError:
        return None
    known = set(mindcv.list_models())
    candidates = [name]
    try:
        from ..builder import model_info
        info = model_info(name)
        candidates += [info.name, *info.aliases]
    except KeyError:
        pass
    return next((c for c in candidates if c in known), None)


FUSE_CHOICES = ("fast", "plain", "none")


def _measure_net(build, batch_sizes, train_batch_size, image_size, num_classes, warmup, repeats,
                 statistic, fuse="none") -> dict:
    out: dict = dict(throughput={}, ms_per_batch={})
    net = build()
    out["params_M"] = sum(int(np.prod(p.shape)) for p in net.trainable_params()) / 1e6
    from .. import accel
    from ..layers import fuse_model
    if fuse == "fast":  # what validate, infer and the Predictor run on CPU: BatchNorm folded, the CPU kernels
        accel.accelerate(net, "infer")
    elif fuse == "plain":  # folded, plain MindSpore ops (as exported)
        fuse_model(net)
    compile_s = None
    for bs in batch_sizes:
        r = inference(net, bs, image_size, warmup=warmup, repeats=repeats, statistic=statistic)
        out["throughput"][bs] = r["img_per_s"]
        out["ms_per_batch"][bs] = r["ms_per_batch"]
        if bs == 1:
            out["latency_ms"] = r["ms_per_batch"]
        if compile_s is None:
            compile_s = r["compile_s"]
    out.setdefault("latency_ms", None)
    out["compile_s"] = compile_s
    if train_batch_size:
        train_net = accel.accelerate(build(), "train") if fuse == "fast" else build()  # as the engine trains
        r = train_step(train_net, train_batch_size, image_size, num_classes=num_classes, warmup=warmup,
                       repeats=repeats, statistic=statistic)
        out["train_img_per_s"] = r["img_per_s"]
        out["train_ms_per_step"] = r["ms_per_step"]
        out["train_compile_s"] = r["compile_s"]
    else:
        out["train_img_per_s"] = out["train_ms_per_step"] = out["train_compile_s"] = None
    return out


def benchmark_model(name: str, batch_sizes=(1, 8), train_batch_size: int = 8, image_size: int = 224,
                    num_classes: int = 1000, warmup: int = 2, repeats: int = 5, reference: bool = True,
                    isolate: bool = False, statistic: str = "median", fuse: str = "fast") -> dict:
    """Latency (batch 1), throughput per batch size, training-step throughput, compile time and peak memory of
    the registered model ``name``, and the same for MindCV's model of that name when ``reference`` and MindCV
    has it. ``isolate`` runs each network in its own process (fair compile times and memory peaks).
    ``fuse``: how mindshuffle's model runs - "fast" (the default of validate, infer, the Predictor and the
    engine on CPU: ``accel.accelerate(net, "infer")``, BatchNorm folded on the CPU kernels, and the training step
    on ``accelerate(net, "train")``), "plain" (inference folded with plain MindSpore ops, as exported) or "none"
    (as built; training plain in both); MindCV's model always runs as it ships. Unknown names raise ``registry.UnknownModelError`` before anything
    runs. ``statistic`` as in ``inference``."""
    from ..builder import model_info

    info = model_info(name)  # fails fast on unknown names
    _stat({"median_ms": 1.0, "min_ms": 1.0}, statistic)  # validate before spending minutes
    if fuse not in FUSE_CHOICES:
        raise ValueError(f"fuse {fuse!r}: choose one of {FUSE_CHOICES}")
    args = (batch_sizes, train_batch_size, image_size, num_classes, warmup, repeats, statistic)
    call = (lambda *a: run_isolated(_measure_one, *a)) if isolate else _measure_one
    res = call("mindshuffle", info.name, *args, fuse)
    res.update(model=info.name, flops_M=info.flops, image_size=image_size, train_batch_size=train_batch_size,
               fuse=fuse)
    ref_name = mindcv_name(name) if reference else None
    res["reference"] = None
    if ref_name:
        ref = call("mindcv", ref_name, *args)
        ref["model"] = ref_name
        res["reference"] = ref
    return res


def _measure_one(source: str, name: str, batch_sizes, train_batch_size, image_size, num_classes, warmup,
                 repeats, statistic="median", fuse="none") -> dict:
    if source == "mindcv":
        import mindcv

        def build():
            return mindcv.create_model(name, num_classes=num_classes, pretrained=False)
    else:
        from ..builder import create_model

        def build():
            return create_model(name, num_classes=num_classes)
    out = _measure_net(build, tuple(batch_sizes), train_batch_size, image_size, num_classes, warmup, repeats,
                       statistic, fuse)
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def _child_main(task_path: str, result_path: str) -> None:
    """Entry point of an isolated process: unpickle (mode, device, fn, args, kwargs), run, pickle the outcome."""
    import pickle

    with open(task_path, "rb") as f:
        mode, device, fn, args, kwargs = pickle.load(f)
    try:
        ms.set_context(mode=mode, device_target=device)
        outcome = ("ok", fn(*args, **kwargs))
    except BaseException as e:  # report to the parent instead of dying silently
        outcome = ("error", f"{type(e).__name__}: {e}")
    with open(result_path, "wb") as f:
        pickle.dump(outcome, f)


def run_isolated(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` (a module-level function, picklable arguments) in a fresh Python process
    in the current execution mode and device and return its result; an exception there is raised here as
    ``RuntimeError``. The child's output goes to this process's stderr."""
    import os
    import pickle
    import subprocess
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory(prefix="mindshuffle-bench-") as tmp:
        task, result = os.path.join(tmp, "task.pkl"), os.path.join(tmp, "result.pkl")
        with open(task, "wb") as f:
            pickle.dump((ms.get_context("mode"), ms.get_context("device_target"), fn, args, kwargs), f)
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        code = f"from mindshuffle.research.benchmark import _child_main; _child_main({task!r}, {result!r})"
        proc = subprocess.run([sys.executable, "-c", code], env=env, stdout=sys.stderr.fileno()
                              if hasattr(sys.stderr, "fileno") and _has_fileno(sys.stderr) else None)
        if not os.path.exists(result):
            raise RuntimeError(f"benchmark process died (exit code {proc.returncode})")
        with open(result, "rb") as f:
            status, payload = pickle.load(f)
    if status != "ok":
        raise RuntimeError(payload)
    return payload


def _has_fileno(stream) -> bool:
    try:
        stream.fileno()
        return True
    except Exception:  # pytest's captured streams have none
        return False
