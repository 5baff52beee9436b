"""A run, for people to look at: plots and a one-page ``report.md`` from a run folder, and side-by-side
comparison of several runs.

Reads what ``train.fit`` writes (see train/run_folder.py): metrics.csv, steps.csv, summary.json, recipe.yaml,
classes.json, best_confusion.npy (val) and train_confusion.npy (train, best weights).
"""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from . import plots as P
from .builder import model_info
from .fileio import atomic_text, markdown_table
from .runfiles import SUMMARY_COLUMNS, summary_table

__all__ = ["RunDataError", "load_run", "make_report", "compare_runs"]


class RunDataError(ValueError):
    """The folder is not a (readable) mindshuffle run folder."""


def _rows(path: str) -> list:
    if not os.path.isfile(path):
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def load_run(run_dir: str) -> dict:
    """Everything a report needs from ``run_dir``; raises RunDataError when there is no metrics.csv."""
    if not os.path.isdir(run_dir):
        raise RunDataError(f"run folder {run_dir!r} does not exist")
    metrics = _rows(os.path.join(run_dir, "metrics.csv"))
    if not metrics:
        raise RunDataError(f"{run_dir!r} has no metrics.csv rows: not a mindshuffle run folder, or no epoch "
                           f"finished yet")
    run = {"dir": run_dir, "metrics": metrics, "steps": _rows(os.path.join(run_dir, "steps.csv"))}
    summary = os.path.join(run_dir, "summary.json")
    run["summary"] = json.load(open(summary, encoding="utf-8")) if os.path.isfile(summary) else {}
    recipe = os.path.join(run_dir, "recipe.yaml")
    if os.path.isfile(recipe):
        import yaml
        with open(recipe, encoding="utf-8") as f:
            run["recipe"] = yaml.safe_load(f) or {}
    else:
        run["recipe"] = {}
    classes = os.path.join(run_dir, "classes.json")
    run["names"] = None
    if os.path.isfile(classes):
        c = json.load(open(classes, encoding="utf-8"))
        run["names"] = [str(n) for n in (c.get("names") or c.get("classes") or [])] or None
    for split, fname in (("val", "best_confusion.npy"), ("train", "train_confusion.npy")):
        path = os.path.join(run_dir, fname)
        run[f"{split}_confusion"] = np.load(path) if os.path.isfile(path) else None
    return run


def _num(v, spec=".2f"):
    try:
        return format(float(v), spec)
    except (TypeError, ValueError):
        return "-"


def _label(run: dict) -> str:
    return run["recipe"].get("model") or run["summary"].get("model") or os.path.basename(os.path.normpath(run["dir"]))


def make_report(run_dir: str, out_dir: str | None = None) -> dict:
    """Write the run's plots (PNG + SVG) into ``out_dir`` (default ``run_dir/report``) and ``report.md`` into
    ``run_dir``. Returns {"report": path, "plots": [paths], "confused": [(true, pred, count, share)]}."""
    run = load_run(run_dir)
    out_dir = out_dir or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    names = run["names"]
    model = _label(run)
    written, figures = [], []

    def add(title, paths):
        written.extend(paths)
        figures.append((title, paths[0]))

    add("Accuracy", P.plot_accuracy(run["metrics"], os.path.join(out_dir, "accuracy"), f"{model}: accuracy"))
    add("Loss", P.plot_loss(run["metrics"], os.path.join(out_dir, "loss"), run["steps"], f"{model}: train loss"))
    if run["steps"]:
        add("Learning rate", P.plot_lr(run["steps"], os.path.join(out_dir, "lr"), f"{model}: learning rate"))
    confused = []
    for split in ("train", "val"):
        cm = run[f"{split}_confusion"]
        if cm is not None:
            add(f"Confusion matrix ({split})",
                P.plot_confusion(cm, os.path.join(out_dir, f"confusion_{split}"), names,
                                 f"{model}: {split} confusion (row-normalised)"))
    if run["val_confusion"] is not None:
        confused = P.most_confused(run["val_confusion"], names, 10)

    atomic_text(os.path.join(run_dir, "report.md"), _report_md(run, figures, confused, run_dir))
    return {"report": os.path.join(run_dir, "report.md"), "plots": written, "confused": confused}


def _report_md(run: dict, figures: list, confused: list, run_dir: str) -> str:
    s, r, last = run["summary"], run["recipe"], run["metrics"][-1]
    model = _label(run)
    lines = [f"# Run report: {model}", ""]
    if not s:
        lines += ["*The run has not finished (no summary.json): figures are up to the last finished epoch.*", ""]
    lines += ["## Summary", "", summary_table(s) if s else "-", ""]
    lines += [f"Last epoch {last.get('epoch')}: train loss {_num(last.get('train_loss'), '.4f')}, "
              f"train top-1 {_num(last.get('train_top1'))}%, val top-1 {_num(last.get('val_top1'))}%, "
              f"val top-5 {_num(last.get('val_top5'))}%.", ""]
    info_line = _model_line(model, s)
    lines += ["## Model", "", info_line, ""]
    hw = s.get("hardware") or {}
    lines += ["## Hardware", "",
              f"- device target: {s.get('device_target', r.get('device_target', '-'))}, cards: {s.get('cards', '-')}",
              f"- host: {hw.get('platform', '-')}, {hw.get('cpus', '-')} CPU cores, MindSpore {hw.get('mindspore', '-')}",
              ""]
    lines += ["## Recipe", "", _recipe_table(r, s), "", "(all keys: `recipe.yaml`)", ""]
    lines += ["## Plots", ""]
    for title, path in figures:
        lines += [f"### {title}", "", f"![{title}]({os.path.relpath(path, run_dir)})", ""]
    lines += ["## Most confused class pairs (validation)", ""]
    if confused:
        lines.append(markdown_table(("true", "predicted", "count", "share of true class"),
                                    [(a, b, c, f"{sh:.1%}") for a, b, c, sh in confused]))
    else:
        lines += ["None: every validation image was classified correctly." if run["val_confusion"] is not None
                  else "No validation confusion matrix in this run folder."]
    lines.append("")
    return "\n".join(lines)


_RECIPE_KEYS = ("model", "num_classes", "dataset", "data_dir", "image_resize", "batch_size", "global_batch_size",
                "epoch_size", "opt", "lr", "scheduler", "warmup_epochs", "min_lr", "momentum", "weight_decay",
                "label_smoothing", "amp_level", "seed", "distribute")


def _recipe_table(r: dict, s: dict) -> str:
    """The main recipe keys; ``lr`` and ``min_lr`` as the run used them (summary.json: after linear scaling to
    the run's cards x batch_size), with the recipe's value beside them where scaling changed it."""
    rows = []
    for k in (k for k in _RECIPE_KEYS if k in r):
        value, used = r[k], s.get(k) if k in ("lr", "min_lr") else None
        if used is not None and _num(used, ".6g") != _num(value, ".6g"):
            value = (f"{_num(used, '.6g')} (recipe {value} for global batch {r.get('global_batch_size')}, scaled "
                     f"linearly to {s.get('cards', '-')} card(s) x {s.get('batch size', '-')})")
        rows.append((k, value))
    return markdown_table(("key", "value"), rows)


def _model_line(model: str, s: dict) -> str:
    parts = [f"`{model}`"]
    if s.get("params (M)") is not None:
        parts.append(f"{s['params (M)']} M trainable parameters (this run's classifier)")
    try:
        i = model_info(model)
        if i.flops:
            parts.append(f"{i.flops:.1f} MFLOPs at 224 px with 1000 classes")
        if i.top1:
            parts.append(f"reported ImageNet top-1 {i.top1}% ({i.source})")
    except KeyError:
        pass
    return ", ".join(parts) + "."


def compare_runs(run_dirs: list, out_dir: str, labels: list | None = None) -> dict:
    """Curves of several runs on common axes and their summary rows in one table (``compare.md``)."""
    runs = [load_run(d) for d in run_dirs]
    labels = labels or _unique_labels(runs)
    os.makedirs(out_dir, exist_ok=True)
    by = dict(zip(labels, (r["metrics"] for r in runs)))
    written = []
    for key, ylabel in (("val_top1", "val top-1 (%)"), ("train_top1", "train top-1 (%)"),
                        ("train_loss", "train loss")):
        written += P.plot_compare(by, key, os.path.join(out_dir, f"compare_{key}"), ylabel, ylabel)
    lines = ["# Run comparison", "", markdown_table(("run", *SUMMARY_COLUMNS),
                                                    [(label, *(r["summary"].get(c) for c in SUMMARY_COLUMNS))
                                                     for label, r in zip(labels, runs)])]
    lines += [""] + [f"![{k}]({os.path.basename(p)})" for p, k in
                     ((p, os.path.basename(p)) for p in written if p.endswith(".png"))] + [""]
    md = os.path.join(out_dir, "compare.md")
    atomic_text(md, "\n".join(lines))
    return {"report": md, "plots": written, "labels": labels}


def _unique_labels(runs: list) -> list:
    labels = [_label(r) for r in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab} ({os.path.basename(os.path.normpath(r['dir']))})" for lab, r in zip(labels, runs)]
    return labels
