"""Training: ``fit(cfg)`` runs a recipe from start (or from its last checkpoint) to the summary row.

Run folder (``ckpt_save_dir``), written by rank 0 unless noted::

    recipe.yaml        the resolved recipe (every key, after CLI overrides and linear LR scaling inputs)
    train.log          the log (rank r > 0 writes train_rank<r>.log)
    classes.json       class folders / wnids and readable names, in label order
    metrics.csv        one row per finished epoch, rewritten atomically each epoch:
                       epoch (1-based), lr (at the epoch's last step), train_loss, train_top1 (%),
                       val_top1 (%), val_top5 (%; empty with < 5 classes), epoch_time (s), img_s (global)
                       val_* are empty on epochs without validation
    last.ckpt          weights + optimizer state (moments, global_step, lr table) after the last epoch;
                       string entry "mindshuffle_state" (JSON: epoch, step, best_top1, best_epoch, seed, ...),
                       int entries epoch_num / step_num
                       with ``ema: True`` the weights under the model's names are the averaged ones (what
                       validation measured); the trained ones are kept as train.<name>, with ema_updates
    best.ckpt          weights of the epoch with the best val top-1 (same "mindshuffle_state"; averaged with EMA)
    best_confusion.npy / best_confusion.csv / best_per_class.csv   evaluation of best.ckpt (evaluate.save_report)
    steps.csv          step, epoch, lr, loss of every training step (rank 0), appended each epoch
    train_confusion.npy  confusion matrix of the training split (final weights, eval transforms), at the end
    report.md, report/   plots (PNG + SVG) and the one-page report, at the end (when matplotlib is installed)
    summary.json       the MindCV-style summary (written last: its presence marks a finished run)
    samples/rank<r>_epoch<e>.txt   sample indices rank r trained on in epoch e (``log_sample_ids: True``)
    ranks/rank<r>_last.ckpt        final weights of rank r > 0 (``log_sample_ids: True``, distributed runs)
    .rank<r>.pid       process id of rank r (distributed runs): lets msrun's scheduler name a rank that died
    .tmp-*.ckpt        a checkpoint being written (renamed when complete); one left by a killed process is
                       removed at the next start. A failed save (full disk) ends the run with RunFolderError
                       and leaves the previous checkpoint as it was.

Resume (``fit(cfg, resume=True)``) reloads last.ckpt: weights, optimizer moments, global step (= position in
the per-step LR table), epoch and best metric; data order and augmentation seeds depend only on (seed, epoch),
so an interrupted run continues on the same path.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import re
import shutil
import sys
import tempfile
import time

import numpy as np

from . import data as D
from .evaluate import Accumulator, save_report, summarize
from .recipe import Recipe, RecipeError, save as save_recipe
from .schedules import lr_table

__all__ = ["fit", "RunFolderError", "WorkerFailedError", "METRICS_COLUMNS", "read_metrics", "setup_logging"]

log = logging.getLogger("mindshuffle")

METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5", "epoch_time", "img_s")
SUMMARY_COLUMNS = ("model", "params (M)", "cards", "batch size", "resolution", "jit level", "graph compile (s)",
                   "ms/step", "img/s", "top-1", "top-5", "recipe", "weight")


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (finished run without overwrite, resume without last.ckpt,
    a save that failed, e.g. on a full disk)."""


class WorkerFailedError(RuntimeError):
    """A rank of a distributed job died (killed, crashed, out of memory); the message names it."""


# -- small helpers ---------------------------------------------------------------------------------------------

def setup_logging(run_dir: str | None, rank: int = 0) -> None:
    """Log to stdout (rank 0; warnings only on other ranks) and to a file in the run folder."""
    log.setLevel(logging.INFO)
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    sh = logging.StreamHandler(sys.stdout)
    sh.setFormatter(fmt)
    sh.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    log.addHandler(sh)
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        fh = logging.FileHandler(os.path.join(run_dir, "train.log" if rank == 0 else f"train_rank{rank}.log"))
        fh.setFormatter(fmt)
        log.addHandler(fh)
    log.propagate = False


def _atomic_text(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_metrics(path: str) -> list:
    """Rows of metrics.csv as dicts of floats (None for empty cells)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]


def _write_metrics(path: str, rows: list) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS_COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (int(r[c]) if c == "epoch" else f"{r[c]:.6g}")
                    for c in METRICS_COLUMNS])
    _atomic_text(path, buf.getvalue())


STEPS_COLUMNS = ("step", "epoch", "lr", "loss")


def _steps_csv(rows: list, header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(STEPS_COLUMNS)
    w.writerows([r[0], r[1], f"{r[2]:.6g}", f"{r[3]:.6g}"] for r in rows)
    return buf.getvalue()


def _write_steps(path: str, rows: list) -> None:
    """steps.csv: the loss and learning rate of every training step (rank 0's loss), for the plots. Written
    whole (atomically) at the start of a run or resume, then ``_append_steps`` adds each epoch's rows."""
    _atomic_text(path, _steps_csv(rows, header=True))


def _append_steps(path: str, rows: list) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(_steps_csv(rows, header=False))
        f.flush()
        os.fsync(f.fileno())


def _read_steps(path: str, last_step: int) -> list:
    """Rows up to ``last_step``; a line cut short by a killed process is ignored."""
    if not os.path.isfile(path):
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            try:
                rows.append((int(r["step"]), int(r["epoch"]), float(r["lr"]), float(r["loss"])))
            except (TypeError, ValueError):
                continue
    return [r for r in rows if r[0] <= last_step]


def _hardware() -> dict:
    import platform
    import mindspore as ms
    return {"platform": platform.platform(terse=True), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "mindspore": ms.__version__}


def _count(value) -> float:
    return float(value.asnumpy()) if hasattr(value, "asnumpy") else float(value)


# -- set-up ----------------------------------------------------------------------------------------------------

def _init_context(cfg: Recipe) -> tuple:
    """Execution mode, device, distributed init; returns (rank, world)."""
    import mindspore as ms
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == 0 else ms.PYNATIVE_MODE, device_target=cfg.device_target)
    if cfg.enable_compile_cache:
        os.environ.setdefault("MS_COMPILER_CACHE_ENABLE", "1")
        os.environ.setdefault("MS_COMPILER_CACHE_PATH", os.path.join(cfg.ckpt_save_dir, "compile_cache"))
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
        raise WorkerFailedError(_worker_failure(str(e), os.path.abspath(cfg.ckpt_save_dir), started)) from None
    rank, world = get_rank(), get_group_size()
    run_dir = os.path.abspath(cfg.ckpt_save_dir)
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


def _seed_everything(seed: int) -> None:
    import mindspore as ms
    import mindspore.dataset as ds
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    ms.set_seed(seed)
    ds.config.set_seed(seed)


def _prepare_run_dir(cfg: Recipe, resume: bool, rank: int) -> str:
    run_dir = os.path.abspath(cfg.ckpt_save_dir)
    last = os.path.join(run_dir, "last.ckpt")
    if resume:
        if not os.path.isfile(last):
            raise RunFolderError(f"cannot resume: {last!r} does not exist (no finished epoch in {run_dir!r})")
        return run_dir
    finished = os.path.isfile(os.path.join(run_dir, "summary.json"))
    started = os.path.isfile(last)
    if (finished or started) and not cfg.overwrite:
        what = "a finished run" if finished else "an unfinished run"
        raise RunFolderError(f"run folder {run_dir!r} holds {what}; use --resume {run_dir} to continue it, "
                             f"--ckpt_save_dir NEW_FOLDER, or --overwrite True to replace it")
    if rank == 0 and (finished or started):
        for name in ("metrics.csv", "summary.json", "last.ckpt", "best.ckpt", "train.log"):
            if os.path.isfile(os.path.join(run_dir, name)):
                os.remove(os.path.join(run_dir, name))
        for sub in ("samples", "ranks"):
            shutil.rmtree(os.path.join(run_dir, sub), ignore_errors=True)
    os.makedirs(run_dir, exist_ok=True)
    return run_dir


def _build_model(cfg: Recipe, num_classes: int):
    from .registry import ModelArgumentError, create_model, model_info
    kw = dict(cfg.model_kwargs)
    if cfg.drop_rate is not None:
        kw["drop_rate"] = cfg.drop_rate
    try:
        net = create_model(cfg.model, num_classes=num_classes, pretrained=cfg.pretrained,
                           checkpoint_path=cfg.ckpt_path, **kw)
    except ModelArgumentError as e:  # an argument the model does not take, or a value it refuses
        if not cfg.model_kwargs:
            raise
        raise RecipeError(f"recipe key 'model_kwargs': bad value {cfg.model_kwargs!r} ({e})") from None
    if cfg.freeze_backbone:
        head = model_info(cfg.model).classifier + "."
        frozen = 0
        for p in net.get_parameters():
            if not p.name.startswith(head):
                p.requires_grad = False
                frozen += 1
        log.info("freeze_backbone: training only %s* (%d parameters frozen)", head, frozen)
    return net


def _param_groups(net, cfg: Recipe) -> list:
    """Weight decay on conv and fc weights only (tensors of rank > 1), never on BN gamma/beta or biases."""
    params = net.trainable_params()
    if not params:
        raise RecipeError("the model has no trainable parameters; check freeze_backbone and the model's classifier")
    if cfg.weight_decay_filter == "all":
        decay, rest = params, []
    else:
        decay = [p for p in params if len(p.shape) > 1]
        rest = [p for p in params if len(p.shape) <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    groups.append({"order_params": params})
    return groups


def _make_optimizer(net, cfg: Recipe, lrs: np.ndarray, loss_scale: float):
    import mindspore as ms
    from mindcv.optim import create_optimizer
    mlog = logging.getLogger("mindcv")
    level = mlog.level
    mlog.setLevel(logging.ERROR)  # "auto" filter warning: our groups already say which parameters decay
    try:
        return create_optimizer(_param_groups(net, cfg), opt=cfg.opt, lr=ms.Tensor(lrs, ms.float32),
                                weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.use_nesterov,
                                weight_decay_filter="auto", loss_scale=loss_scale)
    finally:
        mlog.setLevel(level)


def _state(ckpt: dict) -> dict:
    raw = ckpt.get("mindshuffle_state")
    if raw is None:
        raise RunFolderError("last.ckpt has no mindshuffle_state entry; it was not written by mindshuffle's "
                             "engine and cannot be resumed (use ckpt_path to start from its weights instead)")
    return json.loads(raw)


# Test-only fault injection (tests/test_faults.py), like checkpoints.FAULT_ENV: "E:S" pauses the process after
# step S of epoch E so that a test can kill it mid-epoch at a known point, whatever the machine's speed.
STEP_FAULT_ENV = "MINDSHUFFLE_TEST_STEP_FAULT"


def _step_fault() -> tuple | None:
    spec = os.environ.get(STEP_FAULT_ENV, "")
    return tuple(int(v) for v in spec.split(":")) if spec else None


def _save_ckpt(path: str, params, state: dict, net=None) -> None:
    """Weights (+ optimizer state; a list of Parameters or a dict name -> tensor) with the run state and, given
    ``net``, the model's metadata (name, classes, pooling and shuffle variant, preprocessing, class names) that
    validate/infer/export read back."""
    from .checkpoints import save_checkpoint
    from .convert_names import META_KEY
    from .checkpoints import model_metadata
    extra = {"mindshuffle_state": json.dumps(state), "epoch_num": int(state["epoch"]), "step_num": int(state["step"])}
    if net is not None:
        extra[META_KEY] = json.dumps(model_metadata(net))
    items = params.items() if isinstance(params, dict) else ((p.name, p) for p in params)
    save_checkpoint([{"name": k, "data": v} for k, v in items], path, append_dict=extra)


# -- the run ---------------------------------------------------------------------------------------------------

def fit(cfg: Recipe, resume: bool = False) -> dict:
    """Train ``cfg``; returns the summary dict (also written to summary.json).

    With ``resume`` the run continues from ``<ckpt_save_dir>/last.ckpt``. Raises ``RunFolderError``,
    ``data.DataError``, ``checkpoints.CheckpointError``, ``registry.UnknownModelError`` for user errors.
    """
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore import nn, ops
    from mindcv.loss import create_loss
    from .ema import TRAIN_PREFIX as EMA_TRAIN_PREFIX, WeightEMA

    rank, world = _init_context(cfg)
    run_dir = _prepare_run_dir(cfg, resume, rank)
    setup_logging(run_dir, rank)
    if rank == 0:  # temporary files of a process killed while writing (never read: only renames publish)
        stale = sorted(f for f in os.listdir(run_dir) if f.startswith(".tmp-") and f.endswith(".ckpt"))
        for f in stale:
            os.remove(os.path.join(run_dir, f))
        if stale:
            log.info("removed %d unfinished temporary file(s) of an interrupted run: %s", len(stale),
                     ", ".join(stale))
    cfg = Recipe(cfg)
    cfg.ckpt_save_dir = run_dir
    if rank == 0:  # stop_after_epoch controls this process only; a resume runs to the end
        save_recipe(Recipe(cfg, stop_after_epoch=0), os.path.join(run_dir, "recipe.yaml"))
    on_cpu = cfg.device_target == "CPU"
    from .registry import model_info
    model_info(cfg.model)  # an unknown model name fails here, before any data is read
    if cfg.ema and not 0.0 < cfg.ema_decay < 1.0:
        raise RecipeError(f"ema_decay: {cfg.ema_decay} is not between 0 and 1; use e.g. 0.9999 (ImageNet) or "
                          f"0.99 (a few hundred steps)")
    log.info("mindshuffle fit: model %s, %s, rank %d of %d, run folder %s", cfg.model, cfg.device_target,
             rank, world, run_dir)
    _seed_everything(cfg.seed)

    # data
    train_files = D.scan(cfg.dataset, cfg.data_dir, cfg.train_split)
    if cfg.num_samples and cfg.num_samples < len(train_files):
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_files))[:cfg.num_samples])
        train_files = D.FileList([train_files.paths[i] for i in keep], train_files.labels[keep],
                                 train_files.classes, train_files.names, train_files.root)
    val_files = D.scan(cfg.dataset, cfg.data_dir, cfg.val_split, classes=train_files.classes) \
        if cfg.val_while_train else None
    num_classes = cfg.num_classes or len(train_files.classes)
    if num_classes < len(train_files.classes):
        raise D.DataError(f"num_classes {num_classes} is less than the {len(train_files.classes)} class folders "
                          f"in {train_files.root!r}; set num_classes: 0 to use the folder count")
    if rank == 0:
        _atomic_text(os.path.join(run_dir, "classes.json"),
                     json.dumps({"classes": train_files.classes, "names": train_files.names}, indent=1))
    mean, std = D.resolve_stats(cfg, train_files, cache_dir=run_dir)
    train_tf = D.build_transforms(cfg, mean, std, is_training=True)
    val_tf = D.build_transforms(cfg, mean, std, is_training=False)
    per_rank = math.ceil(len(train_files) / world)
    steps = per_rank // cfg.batch_size if cfg.drop_remainder else math.ceil(per_rank / cfg.batch_size)
    if steps < 1:
        raise D.DataError(f"batch_size {cfg.batch_size} is larger than the {per_rank} training images each of "
                          f"{world} card(s) sees; lower batch_size or set drop_remainder: False")
    log.info("data: %d train images (%d per card), %s val images, %d classes, %d steps/epoch; mean %s std %s",
             len(train_files), per_rank, len(val_files) if val_files else "no", num_classes, steps,
             [round(x, 2) for x in mean], [round(x, 2) for x in std])

    # learning rate: linear scaling to this run's global batch
    lr, min_lr = cfg.lr, cfg.min_lr
    global_batch = world * cfg.batch_size
    if cfg.global_batch_size and cfg.global_batch_size != global_batch:
        factor = global_batch / cfg.global_batch_size
        lr, min_lr = lr * factor, min_lr * factor
        log.info("linear LR scaling: %d card(s) x batch %d = %d, recipe tuned for %d: lr %.4g -> %.4g",
                 world, cfg.batch_size, global_batch, cfg.global_batch_size, cfg.lr, lr)
    lrs = lr_table(cfg.scheduler, lr, steps, cfg.epoch_size, min_lr=min_lr, warmup_epochs=cfg.warmup_epochs,
                   warmup_factor=cfg.warmup_factor, decay_epochs=cfg.decay_epochs)

    # model, precision, loss, optimizer
    net = _build_model(cfg, num_classes)
    # recorded in every checkpoint, so validate/infer/export preprocess and name classes as training did
    net.class_names = [str(n) for n in train_files.names]
    net.preprocess = {"channel_order": "RGB", "mean": [float(v) for v in mean], "std": [float(v) for v in std],
                      "input_size": int(cfg.image_resize),
                      "resize": int(round(cfg.image_resize / (cfg.crop_pct or 1.0)))}
    n_params = sum(int(np.prod(p.shape)) for p in net.get_parameters() if "moving_" not in p.name)
    amp_level, loss_scale, scale_type = cfg.amp_level, cfg.loss_scale, cfg.loss_scale_type
    cpu_notes = []
    if on_cpu:
        if amp_level != "O0":
            cpu_notes.append(f"amp_level {amp_level} -> O0 (fp16 is slower than fp32 on CPU)")
            amp_level = "O0"
        if cfg.dataset_sink_mode:
            cpu_notes.append("dataset_sink_mode off (no device queue on CPU)")
        if cfg.jit_level == "O2":
            cpu_notes.append("jit_level O2 -> O0 (whole-graph sinking is Ascend-only)")
        if loss_scale != 1.0 or scale_type == "dynamic":
            cpu_notes.append(f"loss_scale {loss_scale:g} ({scale_type}) -> 1 (fp32 needs no scaling)")
            loss_scale, scale_type = 1.0, "fixed"
    if cpu_notes:
        log.info("on CPU: %s", "; ".join(cpu_notes))
    if amp_level != "O0":
        ms.amp.auto_mixed_precision(net, amp_level)
    loss_fn = create_loss(name=cfg.loss, label_smoothing=cfg.label_smoothing)
    fixed_scale = loss_scale if scale_type == "fixed" else 1.0
    optimizer = _make_optimizer(net, cfg, lrs, fixed_scale)
    dyn_scaler = ms.amp.DynamicLossScaler(loss_scale, 2, 1000) if scale_type == "dynamic" else None
    ema = WeightEMA(net, cfg.ema_decay) if cfg.ema else None

    def forward(x, y):
        logits = net(x)
        loss = loss_fn(logits, y)
        scaled = dyn_scaler.scale(loss) if dyn_scaler is not None else loss * fixed_scale
        return scaled, (loss, logits)

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters, has_aux=True)
    reducer = nn.DistributedGradReducer(optimizer.parameters, mean=True, degree=world) if world > 1 else None

    def train_step(x, y):
        (_, (loss, logits)), grads = grad_fn(x, y)
        if reducer is not None:
            grads = reducer(grads)
        if dyn_scaler is not None:
            grads = dyn_scaler.unscale(grads)
            finite = ms.amp.all_finite(grads)
            dyn_scaler.adjust(finite)
            if finite:
                loss = ops.depend(loss, optimizer(grads))
        else:
            loss = ops.depend(loss, optimizer(grads))
        correct = (logits.argmax(-1) == y).astype(ms.float32).sum()
        return loss, correct

    def eval_step(x):
        return net(x)

    def ema_step():
        # its own small graph, run after each train step: inside the train step, reading every weight after the
        # optimizer's in-place update cost ~200 ms per step on CPU (2 ms alone). After an overflow step of
        # dynamic loss scaling (no update) the average just moves towards the unchanged weights.
        return ema()

    jit_level = "O0" if (on_cpu and cfg.jit_level == "O2") else cfg.jit_level
    if cfg.mode == 0:
        train_step = ms.jit(train_step, jit_level=jit_level)
        eval_step = ms.jit(eval_step, jit_level=jit_level)
        ema_step = ms.jit(ema_step, jit_level=jit_level)
    if cfg.dataset_sink_mode and not on_cpu:
        log.info("dataset_sink_mode: recorded; this engine feeds one batch per compiled train step (its "
                 "metrics need per-step results), so the device queue is not used")

    # resume
    start_epoch, best_top1, best_epoch = 0, -1.0, 0
    history: list = []
    saved_epoch = 0
    metrics_path = os.path.join(run_dir, "metrics.csv")
    steps_path = os.path.join(run_dir, "steps.csv")
    if resume:
        from .checkpoints import read_checkpoint
        last = os.path.join(run_dir, "last.ckpt")
        ckpt = read_checkpoint(last)
        state = _state(ckpt)
        params = {k: v for k, v in ckpt.items() if isinstance(v, ms.Parameter)}
        not_net = ms.load_param_into_net(net, params, strict_load=False)[0]
        not_opt = ms.load_param_into_net(optimizer, params, strict_load=False)[0]
        missing = sorted(set(not_net) | set(not_opt))
        if missing:
            raise RunFolderError(f"{last!r} does not fit this recipe's model/optimizer: missing "
                                 f"{', '.join(missing[:5])}")
        has_ema = any(k.startswith(EMA_TRAIN_PREFIX) for k in params)
        if ema is not None:
            try:
                ema.load_state(params, last)
            except ValueError as e:
                raise RunFolderError(str(e)) from None
        elif has_ema:
            raise RunFolderError(f"{last!r} was written with ema: True; resume with the recipe's ema setting "
                                 f"unchanged (--ema True)")
        start_epoch, best_top1, best_epoch = state["epoch"], state["best_top1"], state["best_epoch"]
        saved_epoch = start_epoch
        history = [r for r in read_metrics(metrics_path) if r["epoch"] <= start_epoch]
        if rank == 0:  # drop the steps of an epoch that never reached its checkpoint
            _write_steps(steps_path, _read_steps(steps_path, start_epoch * steps))
        gs = int(optimizer.global_step.asnumpy().reshape(-1)[0])
        log.info("resumed from %s: epoch %d done, global step %d (lr %.6g next), best val top-1 %.2f",
                 last, start_epoch, gs, lrs[min(gs, len(lrs) - 1)], best_top1)
        if gs != start_epoch * steps:
            raise RunFolderError(f"{last!r}: global step {gs} does not match {start_epoch} epochs x {steps} "
                                 f"steps; was the batch size or card count changed? Resume with the same ones")

    if rank == 0:
        from tqdm import tqdm
    step_times: list = []
    first_step_s, step_fault = None, _step_fault()
    val_res: dict = {}
    end_epoch = cfg.epoch_size
    if cfg.stop_after_epoch:
        end_epoch = min(end_epoch, cfg.stop_after_epoch)
    if rank == 0 and not resume:
        _write_steps(steps_path, [])
    for epoch in range(start_epoch, end_epoch):
        step_rows = []  # this epoch's, appended to steps.csv when the epoch is saved
        ds.config.set_seed(cfg.seed * 1000 + epoch)  # augmentation of this epoch, same after a resume
        idx = D.epoch_indices(len(train_files), epoch, cfg.seed, rank, world, shuffle=cfg.shuffle)
        if cfg.drop_remainder:
            idx = idx[:steps * cfg.batch_size]
        if cfg.log_sample_ids:
            os.makedirs(os.path.join(run_dir, "samples"), exist_ok=True)
            _atomic_text(os.path.join(run_dir, "samples", f"rank{rank}_epoch{epoch + 1}.txt"),
                         "\n".join(map(str, idx.tolist())) + "\n")
        loader, source = D.build_loader(cfg, train_files, idx, train_tf, is_training=True)
        net.set_train(True)
        t0 = time.time()
        loss_sum, correct_sum, seen = 0.0, 0.0, 0
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{cfg.epoch_size}", leave=False, dynamic_ncols=True,
                   file=sys.stderr) if rank == 0 else None
        try:
            for i, (x, y) in enumerate(loader.create_tuple_iterator(num_epochs=1)):
                ts = time.time()
                loss, correct = train_step(x, y)
                if ema is not None:
                    ema_step()
                loss_v = _count(loss)
                te = time.time() - ts
                if first_step_s is None:
                    first_step_s = te
                else:
                    step_times.append(te)
                if not math.isfinite(loss_v):
                    raise FloatingPointError(f"loss became {loss_v} at epoch {epoch + 1} step {i + 1}; lower "
                                             f"lr (now {lrs[epoch * steps + i]:.4g}) or check the data")
                step_rows.append((epoch * steps + i + 1, epoch + 1, float(lrs[epoch * steps + i]), loss_v))
                loss_sum += loss_v * x.shape[0]
                correct_sum += _count(correct)
                seen += x.shape[0]
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss_v:.3f}")
                if cfg.log_interval and (i + 1) % cfg.log_interval == 0:
                    log.info("epoch %d step %d/%d loss %.4f lr %.5g", epoch + 1, i + 1, steps, loss_v,
                             lrs[epoch * steps + i])
                if step_fault == (epoch + 1, i + 1):
                    from .checkpoints import fault_pause
                    fault_pause(f"after epoch {epoch + 1} step {i + 1}")
        except RuntimeError:
            if source.first_error:
                raise D.DataError(source.first_error + "; remove or replace it, or set strict_data: False") \
                    from None
            raise
        finally:
            if bar is not None:
                bar.close()
        epoch_time = time.time() - t0
        if world > 1:
            _sync_bn_stats(net.get_parameters(), world)
            if ema is not None:
                ema.sync(world)
        row = {"epoch": epoch + 1, "lr": float(lrs[(epoch + 1) * steps - 1]), "train_loss": loss_sum / max(seen, 1),
               "train_top1": correct_sum / max(seen, 1) * 100.0, "val_top1": None, "val_top5": None,
               "epoch_time": epoch_time, "img_s": seen * world / max(epoch_time, 1e-9)}
        last_epoch = epoch + 1 == cfg.epoch_size
        if val_files is not None and ((epoch + 1) % cfg.val_interval == 0 or last_epoch):
            if ema is not None:  # validate the averaged weights
                ema.swap()
            try:
                acc = _validate(cfg, eval_step, net, val_files, val_tf, num_classes, rank, world)
            finally:
                if ema is not None:
                    ema.swap()
            val_res = summarize(acc)
            row["val_top1"], row["val_top5"] = val_res["top1"], val_res["top5"]
        history.append(row)
        improved = row["val_top1"] is not None and row["val_top1"] > best_top1
        if improved:
            best_top1, best_epoch = row["val_top1"], epoch + 1
        state = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "best_top1": best_top1, "best_epoch": best_epoch,
                 "seed": cfg.seed, "model": cfg.model, "model_kwargs": cfg.model_kwargs, "num_classes": num_classes,
                 "world": world, "batch_size": cfg.batch_size, "image_resize": cfg.image_resize, "mean": mean,
                 "std": std}
        if rank == 0:
            try:
                _write_metrics(metrics_path, history)
                _append_steps(steps_path, step_rows)
                everything = {p.name: p for p in net.get_parameters()} if ema is None else ema.state()
                weights = {p.name: everything[p.name] for p in net.get_parameters()}
                everything.update({p.name: p for p in optimizer.get_parameters() if p.name not in weights})
                _save_ckpt(os.path.join(run_dir, "last.ckpt"), everything, state, net)
                saved_epoch = epoch + 1
                if improved:
                    best_path = os.path.join(run_dir, "best.ckpt")
                    _save_ckpt(best_path, weights, state, net)
                    save_report(acc, best_path, train_files.names)
            except OSError as e:  # a full disk, a lost mount, no permission: the renames never happened
                kept = f"last.ckpt (epoch {saved_epoch}) is intact" if saved_epoch else "no epoch was saved yet"
                raise RunFolderError(f"cannot save epoch {epoch + 1} in {run_dir!r}: "
                                     f"{e.strerror or e} ({e.filename or 'write failed'}); {kept}; free space "
                                     f"(or fix the folder) and continue with --resume {run_dir}") from None
        log.info("epoch %d/%d: lr %.5g loss %.4f train top-1 %.2f%%%s, %.1f s, %.0f img/s", epoch + 1,
                 cfg.epoch_size, row["lr"], row["train_loss"], row["train_top1"],
                 "" if row["val_top1"] is None else f", val top-1 {row['val_top1']:.2f}%"
                 + ("" if row["val_top5"] is None else f" top-5 {row['val_top5']:.2f}%"),
                 epoch_time, row["img_s"])
    if cfg.log_sample_ids and world > 1 and rank > 0:
        os.makedirs(os.path.join(run_dir, "ranks"), exist_ok=True)
        _save_ckpt(os.path.join(run_dir, "ranks", f"rank{rank}_last.ckpt"), list(net.get_parameters()),
                   {"epoch": end_epoch, "step": end_epoch * steps})
    if end_epoch < cfg.epoch_size:
        log.info("stopped after epoch %d of %d (stop_after_epoch); continue with --resume %s", end_epoch,
                 cfg.epoch_size, run_dir)
        return {"stopped_after_epoch": end_epoch}

    if ema is not None:  # from here on the model is the averaged one (as in last.ckpt)
        ema.swap()
    # the training split's confusion matrix (final weights, eval transforms), for the report's plots
    train_acc = _validate(cfg, eval_step, net, train_files, val_tf, num_classes, rank, world)
    if rank == 0:
        _atomic_npy(os.path.join(run_dir, "train_confusion.npy"), train_acc.confusion.astype(np.int64))
    ms_step = float(np.median(step_times)) * 1000.0 if step_times else float("nan")
    final = history[-1] if history else {}
    summary = {
        "model": cfg.model, "params (M)": round(n_params / 1e6, 3), "cards": world, "batch size": cfg.batch_size,
        "resolution": cfg.image_resize, "jit level": jit_level,
        "graph compile (s)": round(max(0.0, (first_step_s or 0.0) - ms_step / 1000.0), 2) if step_times else None,
        "ms/step": round(ms_step, 2), "img/s": round(world * cfg.batch_size / ms_step * 1000.0, 1)
        if step_times else None,
        "top-1": None if final.get("val_top1") is None else round(final["val_top1"], 2),
        "top-5": None if final.get("val_top5") is None else round(final["val_top5"], 2),
        "recipe": os.path.basename(cfg.config) if cfg.config else "", "weight": os.path.join(run_dir, "last.ckpt"),
        "best_top1": round(best_top1, 2) if best_top1 >= 0 else None, "best_epoch": best_epoch,
        "epochs": len(history), "train_time_s": round(sum(r["epoch_time"] for r in history), 1),
        "amp_level": amp_level, "device_target": cfg.device_target, "hardware": _hardware(),
    }
    if rank == 0:
        _atomic_text(os.path.join(run_dir, "summary.json"), json.dumps(summary, indent=1))
        log.info("summary:\n%s", summary_table(summary))
        _write_report(run_dir)
    return summary


def _write_report(run_dir: str) -> None:
    """Plots and report.md at the end of a run, when matplotlib is there; a failure here never fails the run."""
    from .plots import have_matplotlib
    if not have_matplotlib():
        log.info("matplotlib not installed: no plots (pip install 'mindshuffle[plots]'; then tools/report.py)")
        return
    try:
        from .report import make_report
        res = make_report(run_dir)
        log.info("report: %s (%d plots)", res["report"], len(res["plots"]))
    except Exception as e:  # noqa: BLE001 - the run itself succeeded
        log.warning("could not write the report (%s); run tools/report.py %s", e, run_dir)


def _atomic_npy(path: str, array) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npy", dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def summary_table(summary: dict) -> str:
    """The MindCV-style Markdown row (with its header)."""
    def fmt(v):
        return "-" if v is None else str(v)
    head = "| " + " | ".join(SUMMARY_COLUMNS) + " |"
    sep = "|" + "---|" * len(SUMMARY_COLUMNS)
    row = "| " + " | ".join(fmt(summary.get(c)) for c in SUMMARY_COLUMNS) + " |"
    return "\n".join([head, sep, row])


def _validate(cfg, eval_step, net, files, transforms, num_classes, rank, world) -> Accumulator:
    """Each rank evaluates its shard; the confusion matrices are summed across ranks (float32 all-reduce)."""
    idx = D.epoch_indices(len(files), 0, cfg.seed, rank, world, shuffle=False, pad=False)
    net.set_train(False)
    acc = Accumulator(num_classes)
    if len(idx):
        loader, source = D.build_loader(cfg, files, idx, transforms, is_training=False)
        try:
            for x, y in loader.create_tuple_iterator(num_epochs=1):
                acc.update(eval_step(x).asnumpy(), y.asnumpy())
        except RuntimeError:
            if source.first_error:
                raise D.DataError(source.first_error) from None
            raise
    net.set_train(True)
    if world > 1:
        import mindspore as ms
        from mindspore import ops
        total = ops.AllReduce()(ms.Tensor(acc.as_vector()))
        acc.from_vector(total.asnumpy())
    return acc


def _sync_bn_stats(params, world: int) -> None:
    """Average BatchNorm running statistics over ranks, so every rank (and the checkpoint) holds the same."""
    from mindspore import ops
    from .paramwrite import ParameterWriter
    stats = [p for p in params if "moving_mean" in p.name or "moving_variance" in p.name]
    if stats:
        reduce = ops.AllReduce()
        ParameterWriter(stats).write([reduce(p.value()).asnumpy() / world for p in stats])
