"""Pictures of a run: accuracy and loss curves, learning rate, confusion matrices (matplotlib, optional extra).

Each function takes plain data (lists, arrays), draws one figure and saves it as PNG and SVG next to each other;
it returns the list of written paths. Files are written atomically.
"""
from __future__ import annotations

import os

import numpy as np

from .fileio import atomic_path

__all__ = ["have_matplotlib", "plot_accuracy", "plot_loss", "plot_lr", "plot_confusion", "plot_compare",
           "most_confused"]


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
        return True
    except ImportError:
        return False


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, stem: str, formats=("png", "svg")) -> list:
    paths = []
    folder = os.path.dirname(os.path.abspath(stem))
    os.makedirs(folder, exist_ok=True)
    for ext in formats:
        with atomic_path(f"{stem}.{ext}", suffix="." + ext) as tmp:
            fig.savefig(tmp, format=ext, dpi=120, bbox_inches="tight")
        paths.append(f"{stem}.{ext}")
    _plt().close(fig)
    return paths


def _finish(fig, ax, stem: str, xlabel: str, ylabel: str, title: str, legend: bool = False,
            legend_size=None) -> list:
    """Axis labels, title, a light grid (and the legend), then save the figure (``_save``)."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        ax.legend(**({"fontsize": legend_size} if legend_size else {}))
    return _save(fig, stem)


def _col(rows: list, key: str) -> np.ndarray:
    out = []
    for r in rows:
        v = r.get(key, "")
        out.append(float(v) if v not in ("", None) else np.nan)
    return np.asarray(out, dtype=float)


def plot_accuracy(rows: list, stem: str, title: str = "") -> list:
    """Train/val top-1 and top-5 (%) per epoch from metrics.csv rows (dicts)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    ep = _col(rows, "epoch")
    for key, style in (("train_top1", "-o"), ("val_top1", "-s"), ("train_top5", "--o"), ("val_top5", "--s")):
        y = _col(rows, key)
        if np.isfinite(y).any():
            m = np.isfinite(y)
            ax.plot(ep[m], y[m], style, ms=3, label=key.replace("_", " "))
    return _finish(fig, ax, stem, "epoch", "accuracy (%)", title or "accuracy", legend=True)


def plot_loss(rows: list, stem: str, steps: list | None = None, title: str = "") -> list:
    """Train loss per step (thin line, when ``steps`` rows are given) and per epoch (markers)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    if steps:
        st = _col(steps, "step")
        ax.plot(st, _col(steps, "loss"), lw=0.7, alpha=0.6, label="train loss per step")
        spe = max(len(steps) / max(len(rows), 1), 1)
        ax.plot(_col(rows, "epoch") * spe, _col(rows, "train_loss"), "o-", ms=4, label="train loss per epoch")
    else:
        ax.plot(_col(rows, "epoch"), _col(rows, "train_loss"), "o-", ms=4, label="train loss per epoch")
    return _finish(fig, ax, stem, "step" if steps else "epoch", "loss", title or "training loss", legend=True)


def plot_lr(steps: list, stem: str, title: str = "") -> list:
    """Learning rate per step."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot(_col(steps, "step"), _col(steps, "lr"))
    return _finish(fig, ax, stem, "step", "learning rate", title or "learning rate schedule")


def most_confused(cm: np.ndarray, names: list | None = None, k: int = 10) -> list:
    """The ``k`` largest off-diagonal cells: (true name, predicted name, count, share of the true class)."""
    cm = np.asarray(cm)
    names = names or [str(i) for i in range(cm.shape[0])]
    off = cm.astype(float).copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(off, axis=None)[::-1]
    out = []
    for flat in order[:k]:
        i, j = np.unravel_index(flat, cm.shape)
        if off[i, j] <= 0:
            break
        total = cm[i].sum()
        out.append((names[i], names[j], int(cm[i, j]), float(cm[i, j] / total) if total else 0.0))
    return out


def plot_confusion(cm: np.ndarray, stem: str, names: list | None = None, title: str = "",
                   max_labels: int = 30) -> list:
    """Confusion matrix normalised per row (true class). Class names on the axes when there are at most
    ``max_labels`` classes; with more, the most confused pairs are listed beside the matrix."""
    plt = _plt()
    cm = np.asarray(cm, dtype=float)
    n = cm.shape[0]
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    many = n > max_labels
    fig, ax = plt.subplots(figsize=(9, 6) if many else (6, 5))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    labels = names or [str(i) for i in range(n)]
    if not many:
        ax.set_xticks(range(n), labels, rotation=90 if max(map(len, labels)) > 3 else 0)
        ax.set_yticks(range(n), labels)
        if n <= 12:
            for i in range(n):
                for j in range(n):
                    if cm[i, j]:
                        ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                                color="white" if norm[i, j] > 0.5 else "black")
    else:
        pairs = most_confused(cm.astype(int), labels, 10)
        text = "most confused (true -> predicted):\n" + "\n".join(
            f"{a} -> {b}: {c} ({s:.0%})" for a, b, c, s in pairs)
        fig.text(0.72, 0.5, text, va="center", fontsize=8, family="monospace")
        fig.subplots_adjust(right=0.7)
    return _save(fig, stem)


def plot_compare(runs: dict, key: str, stem: str, ylabel: str = "", title: str = "") -> list:
    """One curve per run: ``runs`` maps a run label to its metrics.csv rows; ``key`` is the column plotted."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in runs.items():
        y = _col(rows, key)
        m = np.isfinite(y)
        if m.any():
            ax.plot(_col(rows, "epoch")[m], y[m], "-o", ms=3, label=label)
    return _finish(fig, ax, stem, "epoch", ylabel or key, title or key, legend=True, legend_size=8)
