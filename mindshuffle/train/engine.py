"""``fit(cfg)``: a recipe from start (or from its last checkpoint) to the summary row, as a short orchestration
of the train package's parts: run folder -> context and ranks -> data -> run plan -> model, optimizer and
compiled step -> epochs (train, validate, save) -> summary and report. See run_folder.py for the files."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from .. import accel
from ..builder import model_info
from ..ema import WeightEMA
from ..errors import RecipeError
from ..evaluate import Accumulator, save_report, summarize
from ..recipe import Recipe, save as save_recipe
from ..runfiles import append_steps, read_metrics, read_steps, write_metrics, write_steps
from . import state as S
from .build import build_model, make_loss, make_optimizer
from .callbacks import Callback, CallbackList, EMASwap, ProgressBar, StepLog
from .context import init_context, interruptible, seed_everything
from .dry_run import dry_run
from .inputs import TrainInputs
from .logs import attach_file_log, start_logging
from .loop import sync_bn_stats, train_one_epoch, validate
from .plan import RunPlan, resolve
from .run_folder import RunFolder
from .saver import CheckpointSaver
from .step import HostFeed, SinkFeed, TrainStep, compile_fn
from .summary import finish

__all__ = ["fit", "Run", "Interrupted"]

log = logging.getLogger("mindshuffle")


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM: see context.interruptible) ended the run; ``saved_epoch`` is the last epoch in last.ckpt."""

    def __init__(self, folder: str, saved_epoch: int):
        super().__init__(f"interrupted after epoch {saved_epoch}; continue with --resume {folder}"
                         if saved_epoch else f"interrupted before the first epoch was saved; start again "
                         f"(nothing to resume in {folder})")
        self.saved_epoch = saved_epoch


@dataclass
class Run:
    """Everything the loop, the callbacks and the savers share."""

    cfg: Recipe
    folder: RunFolder
    plan: RunPlan
    data: TrainInputs
    lrs: np.ndarray
    net: object = None
    optimizer: object = None
    ema: object = None
    step: object = None
    feed: object = None
    eval_step: object = None
    callbacks: Callback = None
    saver: CheckpointSaver = None
    resume: bool = False
    progress: S.Progress = field(default_factory=S.Progress)
    history: list = field(default_factory=list)
    call_times: list = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.data.num_classes


def fit(cfg: Recipe, resume: bool = False, callbacks=()) -> dict:
    """Train ``cfg``; returns the summary dict (also written to summary.json). With ``resume`` the run continues
    from ``<ckpt_save_dir>/last.ckpt``. User errors raise ``MindshuffleError`` subclasses; Ctrl-C raises
    ``Interrupted`` naming the last saved epoch."""
    cfg = Recipe(cfg)
    if cfg.dry_run:
        return dry_run(cfg)
    folder = RunFolder(cfg.ckpt_save_dir)
    folder.check_usable()
    rank, world = init_context(cfg, folder.path)
    folder.rank = rank
    start_logging(rank)
    last = S.read_last(folder.last) if resume and os.path.isfile(folder.last) else (None, None)
    S.agree_on_last(folder, last[1], rank, world)
    folder.check_start(resume, cfg.overwrite)
    if rank == 0:
        folder.lock_if_present()
    try:
        run = _set_up(cfg, folder, rank, world, last, callbacks)
        return _train(run)
    finally:
        folder.unlock()


def _set_up(cfg, folder, rank, world, last, callbacks) -> Run:
    """Everything before the first write: a refused start changes nothing in the folder."""
    model_info(cfg.model)  # an unknown model name fails here, before any data is read
    if cfg.ema and not 0.0 < cfg.ema_decay < 1.0:
        raise RecipeError(f"ema_decay: {cfg.ema_decay} is not between 0 and 1; use e.g. 0.9999 (ImageNet) or "
                          f"0.99 (a few hundred steps)")
    cfg.ckpt_save_dir = folder.path
    seed_everything(cfg.seed)
    data = TrainInputs(cfg, world)
    data.prepare(cache_dir=folder.path if os.path.isdir(folder.path) else None)
    plan = resolve(cfg, rank, world, data.steps)
    data.steps = plan.steps_per_epoch  # gradient accumulation may drop an epoch's trailing partial group
    log.info("mindshuffle fit: model %s, run folder %s\n%s", cfg.model, folder.path, plan.describe())
    lrs = plan.learning_rates()
    run = Run(cfg, folder, plan, data, lrs)
    run.saver = CheckpointSaver(folder, cfg.ckpt_save_policy, cfg.keep_checkpoint_max, cfg.ckpt_save_interval)
    _build(run)
    if last[0] is not None:
        run.progress = S.restore(run, *last)
        run.resume = True
    run.callbacks = CallbackList(_callbacks(run, callbacks))
    return run


def _build(run: Run) -> None:
    """Model (with the metadata its checkpoints record), optimizer, EMA, compiled steps and the feed."""
    cfg, plan, data = run.cfg, run.plan, run.data
    net = accel.default(build_model(cfg, data.num_classes), "train", cfg.accelerate)  # CPU kernels on CPU
    net.class_names = [str(n) for n in data.train.names]
    net.preprocess = {"channel_order": "RGB", "mean": [float(v) for v in data.mean],
                      "std": [float(v) for v in data.std], "input_size": int(cfg.image_resize),
                      "resize": int(round(cfg.image_resize / (cfg.crop_pct or 1.0)))}
    run.net = net
    run.optimizer = make_optimizer(net, cfg, run.lrs, plan.optimizer_loss_scale)
    run.ema = WeightEMA(net, cfg.ema_decay) if cfg.ema else None
    run.step = TrainStep(net, make_loss(cfg), run.optimizer, plan, prep=data.prep, ema=run.ema)
    run.eval_step = compile_fn(run.step.eval, plan)
    if plan.sink:
        run.feed = SinkFeed(run.step, plan, data.sink_dataset(plan.rank, plan.world, run.progress.epoch))
    else:
        run.feed = HostFeed(run.step, plan)


def _callbacks(run: Run, extra) -> list:
    out = [ProgressBar()] if run.plan.rank == 0 else []
    out.append(StepLog(run.cfg.log_interval))
    if run.ema is not None:
        out.append(EMASwap(run.ema, run.plan.world))
    return out + list(extra)


def _begin_writing(run: Run, resume: bool) -> None:
    """The first writes: clear a replaced run, sweep temporary files, the recipe, classes, the log file."""
    folder, cfg = run.folder, run.cfg
    if folder.rank != 0:
        os.makedirs(folder.path, exist_ok=True)
        attach_file_log(folder)
        return
    folder.lock()
    folder.record_owner()
    if not resume and cfg.overwrite:
        folder.clear()
    stale = folder.sweep()
    attach_file_log(folder)
    if stale:
        log.info("removed %d unfinished temporary file(s) of an interrupted run: %s", len(stale), ", ".join(stale))
    save_recipe(Recipe(cfg, stop_after_epoch=0), folder.file("recipe.yaml"))  # stop_after_epoch: this process only
    folder.write_json("classes.json", {"classes": run.data.train.classes, "names": run.data.train.names})
    if resume:
        run.history = [r for r in read_metrics(folder.file("metrics.csv")) if r["epoch"] <= run.progress.epoch]
        last_step = run.progress.epoch * run.plan.steps_per_epoch
        write_steps(folder.file("steps.csv"), read_steps(folder.file("steps.csv"), last_step))
        run.saver.resume(run.history, run.progress.epoch)
    else:
        write_steps(folder.file("steps.csv"), [])


def _train(run: Run) -> dict:
    _begin_writing(run, run.resume)
    end = min(run.cfg.epoch_size, run.cfg.stop_after_epoch or run.cfg.epoch_size)
    try:
        with interruptible():
            for epoch in range(run.progress.epoch + 1, end + 1):
                _one_epoch(run, epoch)
    except KeyboardInterrupt:
        raise Interrupted(run.folder.path, run.progress.saved_epoch) from None
    finally:
        for cb in run.callbacks.callbacks:
            if isinstance(cb, ProgressBar):
                cb.close()
    if end < run.cfg.epoch_size:
        log.info("stopped after epoch %d of %d (stop_after_epoch); continue with --resume %s", end,
                 run.cfg.epoch_size, run.folder.path)
        return {"stopped_after_epoch": end}
    return finish(run)


def _one_epoch(run: Run, epoch: int) -> None:
    stats = train_one_epoch(run, epoch)
    run.call_times += stats["call_times"]
    if run.plan.world > 1:
        sync_bn_stats(run.net, run.plan.world)
    run.callbacks.on_epoch_trained(run, epoch)
    row = {"epoch": epoch, "lr": float(run.lrs[epoch * run.plan.steps_per_epoch - 1]), "train_loss": stats["loss"],
           "train_top1": stats["top1"], "val_top1": None, "val_top5": None, "epoch_time": stats["seconds"],
           "img_s": stats["seen"] * run.plan.world / max(stats["seconds"], 1e-9)}
    acc = None
    if run.data.val is not None and (epoch % run.cfg.val_interval == 0 or epoch == run.cfg.epoch_size):
        run.callbacks.on_validate_begin(run, epoch)
        try:
            acc = validate(run, run.data.val)
        finally:
            run.callbacks.on_validate_end(run, epoch)
        res = summarize(acc)
        row["val_top1"], row["val_top5"] = res["top1"], res["top5"]
    run.history.append(row)
    _save_epoch(run, epoch, row, acc, stats["rows"])
    run.callbacks.on_epoch_end(run, epoch, row)
    log.info("epoch %d/%d: lr %.5g loss %.4f train top-1 %.2f%%%s%s, %.1f s, %.0f img/s", epoch, run.cfg.epoch_size,
             row["lr"], row["train_loss"], row["train_top1"],
             "" if row["val_top1"] is None else f", val top-1 {row['val_top1']:.2f}%"
             + ("" if row["val_top5"] is None else f" top-5 {row['val_top5']:.2f}%"),
             f", {stats['skipped']} overflowed step(s) skipped" if stats["skipped"] else "", stats["seconds"],
             row["img_s"])


def _save_epoch(run: Run, epoch: int, row: dict, acc: Accumulator | None, step_rows: list) -> None:
    """metrics.csv, steps.csv, last.ckpt, (when val top-1 improved) best.ckpt with its evaluation and the
    epoch checkpoint the policy keeps (saver.py); rank 0."""
    p = run.progress
    improved = row["val_top1"] is not None and row["val_top1"] > p.best_top1
    if improved:
        p.best_top1, p.best_epoch = row["val_top1"], epoch
    p.epoch = epoch
    if run.plan.rank != 0:
        return
    state = S.run_state(run, p)
    params = list(run.net.get_parameters())
    try:
        write_metrics(run.folder.file("metrics.csv"), run.history)
        append_steps(run.folder.file("steps.csv"), step_rows)
        everything = {q.name: q for q in params} if run.ema is None else run.ema.state()
        weights = {q.name: everything[q.name] for q in params}
        everything.update({q.name: q for q in run.optimizer.get_parameters() if q.name not in weights})
        S.save_checkpoint_file(run.folder.last, everything, state, run.net)
        p.saved_epoch = epoch
        if improved:
            S.save_checkpoint_file(run.folder.best, weights, state, run.net)
            save_report(acc, run.folder.best, run.data.train.names)
        run.saver.save(epoch, row["val_top1"], epoch == run.cfg.epoch_size,
                       lambda path: S.save_checkpoint_file(path, weights, state, run.net))
    except OSError as e:  # a full disk, a lost mount, no permission: the renames never happened
        raise run.folder.save_failed(epoch, p.saved_epoch, e) from None
