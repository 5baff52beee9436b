"""The files of a run folder that the training engine writes and reports read: their columns, readers and
writers (metrics.csv, steps.csv, summary.json's row), and the names of the per-epoch checkpoints. A leaf: the engine and the reports both import it, and
neither imports the other."""
from __future__ import annotations

import csv
import io
import os
import re

from .fileio import atomic_text, markdown_table

__all__ = ["METRICS_COLUMNS", "SUMMARY_COLUMNS", "STEPS_COLUMNS", "read_metrics", "write_metrics", "write_steps",
           "append_steps", "read_steps", "summary_table", "KEPT_FILE",
           "epoch_checkpoint_name", "epoch_checkpoints"]

METRICS_COLUMNS = ("epoch", "lr", "train_loss", "train_top1", "val_top1", "val_top5", "epoch_time", "img_s")
SUMMARY_COLUMNS = ("model", "params (M)", "cards", "batch size", "resolution", "jit level", "graph compile (s)",
                   "ms/step", "img/s", "top-1", "top-5", "recipe", "weight")
STEPS_COLUMNS = ("step", "epoch", "lr", "loss")
KEPT_FILE = "checkpoints.json"   # the per-epoch checkpoints the policy keeps (train/saver.py)
_EPOCH_CKPT = re.compile(r"epoch_(\d+)\.ckpt")


def read_metrics(path: str) -> list:
    """Rows of metrics.csv as dicts of floats (None for empty cells)."""
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]


def write_metrics(path: str, rows: list) -> None:
    """metrics.csv, rewritten whole (atomically) after every epoch."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(METRICS_COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None else (int(r[c]) if c == "epoch" else f"{r[c]:.6g}")
                    for c in METRICS_COLUMNS])
    atomic_text(path, buf.getvalue())


def _steps_csv(rows: list, header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(STEPS_COLUMNS)
    w.writerows([r[0], r[1], f"{r[2]:.6g}", f"{r[3]:.6g}"] for r in rows)
    return buf.getvalue()


def write_steps(path: str, rows: list) -> None:
    """steps.csv: the loss and learning rate of every training step (rank 0's loss), for the plots. Written
    whole (atomically) at the start of a run or resume, then ``append_steps`` adds each epoch's rows."""
    atomic_text(path, _steps_csv(rows, header=True))


def append_steps(path: str, rows: list) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(_steps_csv(rows, header=False))
        f.flush()
        os.fsync(f.fileno())


def read_steps(path: str, last_step: int) -> list:
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


def summary_table(summary: dict) -> str:
    """The MindCV-style Markdown row (with its header)."""
    return markdown_table(SUMMARY_COLUMNS, [[summary.get(c) for c in SUMMARY_COLUMNS]])


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of epoch ``epoch``'s checkpoint (``keep_checkpoint_max`` > 1)."""
    return f"epoch_{int(epoch)}.ckpt"


def epoch_checkpoints(folder: str) -> dict:
    """{epoch: path} of the ``epoch_<N>.ckpt`` files in ``folder``."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    found = {int(m.group(1)): os.path.join(folder, n) for n in names if (m := _EPOCH_CKPT.fullmatch(n))}
    return dict(sorted(found.items()))
