"""The end of a run: the training split's confusion matrix, summary.json (MindCV's summary row plus the plan
and the hardware), the report, and (``log_sample_ids``) every rank's final weights."""
from __future__ import annotations

import logging

import numpy as np

from ..fileio import atomic_npy
from ..plots import have_matplotlib
from ..report import make_report
from ..runfiles import summary_table
from .context import hardware
from .loop import validate
from .state import save_checkpoint_file

__all__ = ["finish", "summary_row"]

log = logging.getLogger("mindshuffle")


def summary_row(run) -> dict:
    cfg, plan = run.cfg, run.plan
    per_step = run.call_times[1:]  # seconds per step of each call; the first call compiles the graph
    ms_step = float(np.median(per_step)) * 1000.0 if per_step else None
    first = run.call_times[0] * plan.calls()[0] if run.call_times else 0.0
    compile_s = max(0.0, first - (ms_step or 0.0) * plan.calls()[0] / 1000.0) if per_step else None
    final = run.history[-1] if run.history else {}
    n_params = sum(int(np.prod(p.shape)) for p in run.net.get_parameters() if "moving_" not in p.name)
    best = run.progress
    row = {"model": cfg.model, "params (M)": round(n_params / 1e6, 3), "cards": plan.world, "batch size": cfg.batch_size,
           "resolution": cfg.image_resize, "graph compile (s)": None if compile_s is None else round(compile_s, 2),
           "ms/step": None if ms_step is None else round(ms_step, 2),
           "img/s": None if ms_step is None else round(plan.global_batch / ms_step * 1000.0, 1),
           "top-1": None if final.get("val_top1") is None else round(final["val_top1"], 2),
           "top-5": None if final.get("val_top5") is None else round(final["val_top5"], 2),
           "recipe": cfg.config.rsplit("/", 1)[-1] if cfg.config else "", "weight": run.folder.last,
           "best_top1": round(best.best_top1, 2) if best.best_top1 >= 0 else None, "best_epoch": best.best_epoch,
           "epochs": len(run.history), "train_time_s": round(sum(r["epoch_time"] for r in run.history), 1),
           "device_target": cfg.device_target, "lr": plan.lr, "min_lr": plan.min_lr, "hardware": hardware()}
    row.update(plan.summary())
    return row


def finish(run) -> dict:
    """Called by every rank after the last epoch (the confusion pass is distributed)."""
    if run.cfg.log_sample_ids and run.plan.world > 1 and run.plan.rank > 0:  # this rank's trained weights
        save_checkpoint_file(run.folder.file(f"ranks/rank{run.plan.rank}_last.ckpt"), list(run.net.get_parameters()),
                             {"epoch": run.progress.epoch, "step": run.progress.epoch * run.plan.steps_per_epoch})
    if run.ema is not None:  # from here on the model is the averaged one (as in last.ckpt)
        run.ema.swap()
    train_acc = validate(run, run.data.train)  # the training split with eval transforms, for the report
    summary = summary_row(run)
    if run.plan.rank == 0:
        atomic_npy(run.folder.file("train_confusion.npy"), train_acc.confusion.astype(np.int64))
        run.folder.write_json("summary.json", summary)
        log.info("summary:\n%s", summary_table(summary))
        _write_report(run.folder.path)
    return summary


def _write_report(run_dir: str) -> None:
    """Plots and report.md at the end of a run, when matplotlib is there; a failure here never fails the run."""
    if not have_matplotlib():
        log.info("matplotlib not installed: no plots (pip install 'mindshuffle[plots]'; then tools/report.py)")
        return
    try:
        res = make_report(run_dir)
        log.info("report: %s (%d plots)", res["report"], len(res["plots"]))
    except Exception as e:  # noqa: BLE001 - the run itself succeeded
        log.warning("could not write the report (%s); run tools/report.py %s", e, run_dir)
