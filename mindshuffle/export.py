"""Models out: MindIR / ONNX export from a checkpoint, and a predictor for image files.

Both read the checkpoint's metadata (``checkpoints.checkpoint_metadata``): the model name and class count (so
the checkpoint alone is enough), the pooling it was trained with, the preprocessing its weights expect
(channel order, mean, std, resize, crop) and, where the training run stored them, the class names.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile

import numpy as np
import mindspore as ms
from mindspore import nn

from . import accel
from .builder import create_model
from .checkpoints import CheckpointError, CheckpointMeta, checkpoint_metadata, normalize_preprocess, read_checkpoint
from .convert_names import to_mindshuffle_names
from .errors import MindshuffleError
from .fileio import TMP_PREFIX, atomic_path
from .layers import fuse_model
from .meta import PREDICT_EXTENSIONS as IMAGE_EXTENSIONS

__all__ = ["ExportError", "PredictError", "load_checkpoint_model", "make_exportable", "export_model",
           "load_image", "preprocess_image", "collect_images", "load_labels", "Predictor", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)

FORMATS = {"MINDIR": ".mindir", "ONNX": ".onnx"}


class ExportError(MindshuffleError):
    """A model that cannot be exported as asked (unknown format, impossible input size, ...)."""


class PredictError(MindshuffleError):
    """Bad predictor input: no images found, labels that do not fit the model, ..."""


# ---------------------------------------------------------------------------------------------------------
# model from a checkpoint

def load_checkpoint_model(checkpoint: str = "", model: str | None = None, num_classes: int | None = None,
                          **kwargs) -> nn.Cell:
    """Build the model a checkpoint was saved from and load it (eval mode).

    ``model`` and ``num_classes`` default to the checkpoint's metadata; for a checkpoint without metadata
    (e.g. MindCV's) ``model`` must be given and the class count is read from the classifier's shape. Without a
    checkpoint, ``model`` is built with its initial weights (for trying an export).
    """
    meta = checkpoint_metadata(checkpoint) if checkpoint else CheckpointMeta()
    name = model or meta.model
    if not name:
        raise CheckpointError(f"checkpoint {checkpoint!r} does not record its model; pass the model name "
                              f"(e.g. --model shufflenet_v2_x1_0)")
    if num_classes is None:
        num_classes = meta.num_classes
    if num_classes is None and checkpoint:
        params = to_mindshuffle_names(read_checkpoint(checkpoint))
        w = params.get("classifier.weight")
        num_classes = int(w.shape[0]) if w is not None else 1000
    net = create_model(name, num_classes=int(num_classes or 1000), checkpoint_path=checkpoint,
                       **meta.rebuild_kwargs(name, kwargs))
    net.set_train(False)
    if getattr(net, "preprocess", None) is None:
        net.preprocess = meta.input_preprocess()
    return net


# ---------------------------------------------------------------------------------------------------------
# export

def make_exportable(net: nn.Cell, fuse: bool = True) -> nn.Cell:
    """Prepare ``net`` (in place) for export: the plain cells (an accelerated network's rewrite undone,
    ``accel.plain``), eval mode, BatchNorm folded into the convs (``fuse``), and the model's own export
    preparation (``ClassifierNet.prepare_export``: padded pools as zero pad + unpadded pool, which ONNX can
    express)."""
    accel.plain(net)
    net.set_train(False)
    if fuse:
        fuse_model(net)
    prepare = getattr(net, "prepare_export", None)
    if callable(prepare):
        prepare()
    return net


def _onnx_dynamic_batch(path: str) -> bool:
    """Mark the batch axis of an ONNX file's inputs and outputs as symbolic; False if ``onnx`` is missing."""
    try:
        import onnx
    except ImportError:
        return False
    m = onnx.load(path)
    for v in list(m.graph.input) + list(m.graph.output):
        dim = v.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "batch"
    del m.graph.value_info[:]  # intermediate shapes were inferred for the fixed batch
    onnx.save(m, path)
    return True


def export_model(net: nn.Cell, path: str, fmt: str = "MINDIR", input_size: int = 224, batch_size: int = 1,
                 dynamic_batch: bool = False, fuse: bool = True, in_channels: int = 3) -> str:
    """Export ``net`` to ``path`` (suffix added if missing) as MindIR or ONNX, written atomically.

    ``dynamic_batch``: MindIR gets a batch axis of any size (MindSpore's dynamic shape); ONNX is exported at
    ``batch_size`` and its batch axis then marked symbolic (needs the ``onnx`` package; MindSpore's ONNX
    exporter itself has no dynamic shapes). Returns the path written.
    """
    fmt = fmt.upper()
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose MINDIR or ONNX")
    if input_size < 32 or batch_size < 1:
        raise ExportError(f"input size {input_size} (>= 32) / batch size {batch_size} (>= 1) too small")
    suffix = FORMATS[fmt]
    if not path.lower().endswith(suffix):
        path += suffix
    make_exportable(net, fuse=fuse)
    shape = [batch_size, in_channels, input_size, input_size]
    if dynamic_batch and fmt == "MINDIR":
        sample = ms.Tensor(shape=[None] + shape[1:], dtype=ms.float32)
    else:
        sample = ms.Tensor(np.zeros(shape, np.float32))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # MindSpore's writers chmod the folder they write into to 0700 (ONNX: serialization._save_onnx) and leave
    # the file 0400: export into a private folder of our own, then publish the file atomically
    private = tempfile.mkdtemp(prefix=TMP_PREFIX + "export-", dir=folder)
    try:
        written = os.path.join(private, "model" + suffix)
        ms.export(net, sample, file_name=written, file_format=fmt)
        if not os.path.isfile(written):
            raise ExportError(f"MindSpore wrote no {fmt} file for {path}")
        if dynamic_batch and fmt == "ONNX" and not _onnx_dynamic_batch(written):
            log.warning("onnx is not installed: %s keeps the fixed batch size %d", path, batch_size)
        os.chmod(written, 0o644)
        with atomic_path(path, suffix) as tmp:
            os.replace(written, tmp)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------------------------------------
# images

def load_image(path: str):
    """An RGB PIL image from any file PIL reads: grayscale, palette, CMYK and 16-bit are converted, and
    transparency (RGBA, LA, transparent palettes) is composited onto white."""
    from PIL import Image, ImageOps
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        if im.mode == "P" and "transparency" in im.info:
            im = im.convert("RGBA")
        if im.mode in ("RGBA", "LA", "PA"):
            rgba = im.convert("RGBA")
            bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(bg, rgba).convert("RGB")
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, np.float64)
            arr = 255.0 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)
            return Image.fromarray(arr.astype(np.uint8)).convert("RGB")
        return im.convert("RGB")


def preprocess_image(image, pre: dict) -> np.ndarray:
    """PIL image -> (C, H, W) float32 as the weights expect: shorter side resized to ``resize``, centre crop of
    ``input_size``, channel order, then (x - mean) / std in 0-255 units."""
    from PIL import Image
    pre = normalize_preprocess(pre)
    size, crop = pre["resize"], pre["input_size"]
    w, h = image.size
    scale = size / min(w, h)
    nw, nh = max(crop, round(w * scale)), max(crop, round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR)
    left, top = (nw - crop) // 2, (nh - crop) // 2
    image = image.crop((left, top, left + crop, top + crop))
    x = np.asarray(image, np.float32)
    if pre["channel_order"] == "BGR":
        x = x[:, :, ::-1]
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def collect_images(inputs) -> list[str]:
    """Image paths from files, folders (searched recursively, sorted) and list files (``.txt``: one path a
    line, relative to the list's folder). Paths that do not exist are kept, so the predictor reports them."""
    if isinstance(inputs, str):
        inputs = [inputs]
    out = []
    for item in inputs:
        if os.path.isdir(item):
            found = []
            for root, _, files in os.walk(item):
                found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not found:
                raise PredictError(f"no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...) under folder {item!r}")
            out += sorted(found)
        elif item.lower().endswith(".txt") and os.path.isfile(item):
            base = os.path.dirname(os.path.abspath(item))
            with open(item, encoding="utf-8") as f:
                for line in f:
                    line = line.strip()
                    if line and not line.startswith("#"):
                        out.append(line if os.path.isabs(line) else os.path.join(base, line))
        else:
            out.append(item)
    if not out:
        raise PredictError("no images given")
    return out


def _tiny_imagenet_names(words: str, wnids: str) -> list[str]:
    with open(wnids, encoding="utf-8") as f:
        ids = sorted(line.strip() for line in f if line.strip())
    table = {}
    with open(words, encoding="utf-8") as f:
        for line in f:
            wnid, _, text = line.rstrip("\n").partition("\t")
            table[wnid] = text.split(",")[0].strip() or wnid
    return [table.get(i, i) for i in ids]


def load_labels(spec: str | None, num_classes: int | None = None, default: list | None = None) -> list[str] | None:
    """Class names, index-ordered, from:

    - a Tiny ImageNet folder (``words.txt`` + ``wnids.txt``; classes in sorted-wnid order, like its train/
      folders), or its ``words.txt`` with ``wnids.txt`` beside it;
    - a folder of class folders (or one whose ``train/`` holds them): the sorted folder names;
    - a text file with one name a line, or a JSON list / {index: name} object;
    - nothing: ``default`` (the names the checkpoint recorded) or None.
    The count must equal ``num_classes``.
    """
    if not spec:
        return list(default) if default else None
    if not os.path.exists(spec):
        raise PredictError(f"labels {spec!r} do not exist")
    names = None
    if os.path.isdir(spec):
        words, wnids = os.path.join(spec, "words.txt"), os.path.join(spec, "wnids.txt")
        if os.path.isfile(words) and os.path.isfile(wnids):
            names = _tiny_imagenet_names(words, wnids)
        else:
            root = os.path.join(spec, "train") if os.path.isdir(os.path.join(spec, "train")) else spec
            names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))
                           and not d.startswith("."))
            if not names:
                raise PredictError(f"labels folder {spec!r} has no class folders")
    elif os.path.basename(spec) == "words.txt":
        wnids = os.path.join(os.path.dirname(spec), "wnids.txt")
        if not os.path.isfile(wnids):
            raise PredictError(f"{spec!r} names all of WordNet; put Tiny ImageNet's wnids.txt beside it "
                               f"(or pass the dataset folder)")
        names = _tiny_imagenet_names(spec, wnids)
    else:
        with open(spec, encoding="utf-8") as f:
            text = f.read()
        if text.lstrip().startswith(("[", "{")):
            try:
                obj = json.loads(text)
            except ValueError as e:
                raise PredictError(f"labels {spec!r}: invalid JSON ({e})") from None
            names = ([str(v) for v in obj] if isinstance(obj, list)
                     else [str(obj[k]) for k in sorted(obj, key=lambda k: int(k))])
        else:
            names = [line.strip() for line in text.splitlines() if line.strip()]
    if num_classes is not None and len(names) != num_classes:
        raise PredictError(f"labels {spec!r} name {len(names)} classes but the model has {num_classes}")
    return names


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class Predictor:
    """Top-k classes of image files with the checkpoint's own preprocessing.

    ``predict(paths)`` returns one dict per path: ``{"path", "top": [(index, name, probability), ...]}``, or
    ``{"path", "error"}`` for a file that cannot be read - the others go on.

    ``accelerate`` (default True): on a CPU target the network runs folded on the CPU accelerator
    (``accel.default(net, "infer")``, which folds BatchNorm into a given ``net`` in place); False keeps it as
    it is.
    """

    def __init__(self, checkpoint: str = "", model: str | None = None, labels: str | None = None, topk: int = 5,
                 net: nn.Cell | None = None, preprocess: dict | None = None, batch_size: int = 8,
                 accelerate: bool = True):
        self.net = net if net is not None else load_checkpoint_model(checkpoint, model)
        self.net.set_train(False)
        accel.default(self.net, "infer", accelerate)
        self.pre = normalize_preprocess(preprocess or getattr(self.net, "preprocess", None))
        self.num_classes = int(getattr(self.net, "num_classes", 0)) or None
        self.names = load_labels(labels, self.num_classes, getattr(self.net, "class_names", None))
        if topk < 1:
            raise PredictError(f"topk must be >= 1, got {topk}")
        self.topk = topk
        self.batch_size = max(1, int(batch_size))

    def _name(self, i: int) -> str:
        return self.names[i] if self.names else f"class {i}"

    def predict(self, paths) -> list[dict]:
        paths = collect_images(paths)
        results, ready = [], []
        for p in paths:
            try:
                x = preprocess_image(load_image(p), self.pre)
            except Exception as e:  # PIL raises many kinds (UnidentifiedImageError, OSError, SyntaxError...)
                why = (str(e).strip().splitlines() or [type(e).__name__])[0]
                if isinstance(e, FileNotFoundError):
                    why = "no such file"
                results.append({"path": p, "error": f"cannot read image: {why}"})
                continue
            results.append({"path": p})
            ready.append((len(results) - 1, x))
        bs = min(self.batch_size, max(1, len(ready)))
        for start in range(0, len(ready), bs):
            chunk = ready[start:start + bs]
            batch = np.stack([x for _, x in chunk])
            if len(chunk) < bs:   # one input shape: graph mode compiles once
                batch = np.concatenate([batch, np.zeros((bs - len(chunk),) + batch.shape[1:], np.float32)])
            probs = _softmax(self.net(ms.Tensor(batch)).asnumpy().astype(np.float64))[:len(chunk)]
            k = min(self.topk, probs.shape[1])
            for (idx, _), pr in zip(chunk, probs):
                order = np.argsort(-pr, kind="stable")[:k]
                results[idx]["top"] = [(int(i), self._name(int(i)), float(pr[i])) for i in order]
        return results
