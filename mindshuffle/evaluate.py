"""Evaluation: top-1 / top-5, per-class accuracy and the confusion matrix."""
from __future__ import annotations

import csv
import json
import os

import mindspore as ms
import numpy as np

from . import accel
from .builder import create_model, model_info
from .checkpoints import checkpoint_metadata, read_checkpoint
from .convert_names import to_mindshuffle_names
from .data.digits import prepare_digits
from .data.files import default_data_dir, scan
from .data.loader import build_loader
from .data.stats import resolve_stats
from .data.transforms import build_transforms
from .errors import CheckpointError, DataError
from .fileio import atomic_npy, atomic_text
from .meta import run_state_of

__all__ = ["Accumulator", "evaluate", "summarize", "save_report"]


class Accumulator:
    """Confusion matrix (rows: true class, columns: predicted) and the top-5 hit count, filled batch by batch.

    ``as_vector``/``from_vector`` flatten it to one float32 array so that ranks can all-reduce it.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.confusion = np.zeros((num_classes, num_classes), np.float64)
        self.top5_hits = 0.0

    def update(self, logits: np.ndarray, labels: np.ndarray) -> None:
        logits = np.asarray(logits, np.float32)
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        pred = logits.argmax(-1)
        np.add.at(self.confusion, (labels, pred), 1)
        k = min(5, logits.shape[-1])
        topk = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
        self.top5_hits += float((topk == labels[:, None]).any(-1).sum())

    def as_vector(self) -> np.ndarray:
        return np.concatenate([self.confusion.ravel(), [self.top5_hits]]).astype(np.float32)

    def from_vector(self, v: np.ndarray) -> "Accumulator":
        v = np.asarray(v, np.float64)
        self.confusion = np.rint(v[:-1]).reshape(self.num_classes, self.num_classes)
        self.top5_hits = float(np.rint(v[-1]))
        return self


def summarize(acc: Accumulator) -> dict:
    """top1 / top5 (%; top5 is None with fewer than 5 classes), per-class accuracy (%; NaN for a class with
    no samples), sample count."""
    conf = acc.confusion
    n = conf.sum()
    per_class_n = conf.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(per_class_n > 0, np.diag(conf) / per_class_n * 100.0, np.nan)
    return {
        "top1": float(np.trace(conf) / n * 100.0) if n else 0.0,
        "top5": (float(acc.top5_hits / n * 100.0) if n else 0.0) if acc.num_classes >= 5 else None,
        "per_class": per_class,
        "samples": int(n),
    }


def evaluate(predict, batches, num_classes: int) -> Accumulator:
    """Run ``predict(images) -> logits`` over ``batches`` of (images, labels); returns the filled Accumulator."""
    acc = Accumulator(num_classes)
    for images, labels in batches:
        logits = predict(images)
        acc.update(logits.asnumpy() if hasattr(logits, "asnumpy") else logits,
                   labels.asnumpy() if hasattr(labels, "asnumpy") else labels)
    return acc


def save_report(acc: Accumulator, ckpt_path: str, class_names: list) -> dict:
    """Save beside the checkpoint ``<stem>_confusion.npy`` / ``.csv`` (rows true, columns predicted) and
    ``<stem>_per_class.csv`` (class, name, samples, correct, accuracy %). Returns the paths."""
    stem = os.path.splitext(os.path.abspath(ckpt_path))[0]
    conf = acc.confusion.astype(np.int64)
    # a classifier wider than the data's classes (num_classes set in the recipe): the extra outputs by index
    class_names = list(class_names) + [str(i) for i in range(len(class_names), len(conf))]
    res = summarize(acc)
    paths = {"confusion_npy": stem + "_confusion.npy", "confusion_csv": stem + "_confusion.csv",
             "per_class_csv": stem + "_per_class.csv"}
    atomic_npy(paths["confusion_npy"], conf)
    atomic_text(paths["confusion_csv"], io_csv([["true\\pred", *class_names]]
                                               + [[class_names[i], *conf[i].tolist()] for i in range(len(conf))]))
    rows = [["class", "name", "samples", "correct", "accuracy"]]
    for i in range(len(conf)):
        a = res["per_class"][i]
        rows.append([i, class_names[i], int(conf[i].sum()), int(conf[i, i]), "" if np.isnan(a) else f"{a:.2f}"])
    atomic_text(paths["per_class_csv"], io_csv(rows))
    return paths


def io_csv(rows: list) -> str:
    import io
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _class_list(cfg) -> tuple:
    """Label order: classes.json beside the checkpoint (written by the engine), else the training split."""
    saved = os.path.join(os.path.dirname(os.path.abspath(cfg.ckpt_path)), "classes.json")
    if os.path.isfile(saved):
        with open(saved) as f:
            d = json.load(f)
        return d["classes"], d.get("names") or d["classes"]
    if cfg.dataset == "tiny_imagenet":
        files = scan(cfg.dataset, cfg.data_dir, "val")
        return files.classes, files.names
    root = os.path.join(cfg.data_dir or default_data_dir(cfg.dataset), cfg.train_split)
    if cfg.dataset == "digits":
        prepare_digits(cfg.data_dir or default_data_dir(cfg.dataset))
    if not os.path.isdir(root):
        raise DataError(f"cannot tell the class order: neither classes.json beside the checkpoint nor "
                        f"{root!r} exists")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    return classes, classes


def _class_count(cfg, ckpt: dict, weight, data_classes: int) -> int:
    """The classifier size to validate with: ``num_classes``, else the run's (the engine's run state in ``ckpt``:
    it may exceed the data's classes), else the data's. A checkpoint whose classifier ``weight`` has another size
    is refused: its outputs would not mean these classes (loading would silently keep a newly initialised
    classifier). ``weight`` None: another model's checkpoint, which loading names."""
    count = cfg.num_classes or run_state_of(ckpt).get("num_classes") or data_classes
    if weight is not None and int(weight.shape[0]) != count:
        rows = int(weight.shape[0])
        raise CheckpointError(f"checkpoint {cfg.ckpt_path!r} has a classifier for {rows} classes, but the data "
                              f"to validate has {count}; validate it on the dataset it was trained on (or "
                              f"set --num_classes {rows} if these classes are a subset of its classes)")
    return count


def run_validation(cfg) -> dict:
    """Evaluate ``cfg.ckpt_path`` on ``cfg.val_split`` (single process). Returns summarize()'s dict plus
    ``paths`` (the saved report files) and ``worst`` (the five lowest per-class accuracies)."""
    ckpt = to_mindshuffle_names(read_checkpoint(cfg.ckpt_path))  # a bad checkpoint or model fails first
    weight = ckpt.get(model_info(cfg.model).classifier + ".weight")
    classes, names = _class_list(cfg)
    num_classes = _class_count(cfg, ckpt, weight, len(classes))
    ms.set_context(mode=ms.GRAPH_MODE if cfg.mode == 0 else ms.PYNATIVE_MODE, device_target=cfg.device_target)
    files = scan(cfg.dataset, cfg.data_dir, cfg.val_split, classes=classes)
    meta = checkpoint_metadata(ckpt)
    pre = meta.preprocess   # training's mean/std, or a converter's (e.g. Megvii's BGR 0-255 input)
    if pre:
        mean, std, bgr = pre["mean"], pre["std"], pre["channel_order"] == "BGR"
    else:
        mean, std, bgr = *resolve_stats(cfg, scan(cfg.dataset, cfg.data_dir, cfg.train_split, classes=classes)
                                        if cfg.mean == "auto" or cfg.std == "auto" else files), False
    net = create_model(cfg.model, num_classes=num_classes, checkpoint_path=cfg.ckpt_path,
                       **meta.rebuild_kwargs(cfg.model, cfg.model_kwargs))
    net.set_train(False)
    accel.default(net, "infer", cfg.accelerate)  # on CPU: BatchNorm folded, the CPU kernels
    tf = build_transforms(cfg, mean, std, is_training=False, bgr=bgr)
    loader, source = build_loader(cfg, files, np.arange(len(files)), tf, is_training=False)
    def forward(x):
        return net(x)

    predict = ms.jit(forward) if cfg.mode == 0 else net
    try:
        acc = evaluate(predict, loader.create_tuple_iterator(num_epochs=1), num_classes)
    except RuntimeError:
        if source.first_error:
            raise DataError(source.first_error) from None
        raise
    res = summarize(acc)
    labels = list(names) + [f"class_{i}" for i in range(len(names), num_classes)]
    res["paths"] = save_report(acc, cfg.ckpt_path, labels)
    pc = res["per_class"]
    order = [i for i in np.argsort(pc) if not np.isnan(pc[i])][:5]
    res["worst"] = [(labels[i], float(pc[i])) for i in order]
    return res
