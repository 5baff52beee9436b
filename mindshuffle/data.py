"""Datasets, channel statistics and loaders.

Layouts read as they come (nothing is copied or reorganised):

- ``folder`` / ``imagenet``: ``data_dir/<split>/<class>/<image>`` (one folder per class; images may sit in
  sub-folders of a class folder).
- ``tiny_imagenet``: Tiny ImageNet's own layout: ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``, classes from ``wnids.txt``, readable names
  from ``words.txt``.
- ``digits``: scikit-learn's 1,797 handwritten digits written once as a class-folder dataset of PNGs
  (``prepare_digits``) with a fixed, stratified train/val split, then read as ``folder``.

Each split becomes a ``FileList`` (paths, labels, class names). ``build_loader`` turns the part of it one rank
sees in one epoch into a batched MindSpore dataset: the order is a permutation drawn from (seed, epoch), the
ranks take interleaved, disjoint shards of it, and the transforms and batching are MindCV's
(``create_transforms``, ``create_loader``). MindCV's ``create_dataset`` is not used: it cannot read Tiny
ImageNet's val layout, does not tell which files a rank saw, and stops at the first unreadable image.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field

import numpy as np

__all__ = ["DataError", "FileList", "scan", "prepare_digits", "channel_stats", "resolve_stats",
           "epoch_indices", "build_loader", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


class DataError(ValueError):
    """A dataset that cannot be used: missing folder, no classes, empty class, unreadable image."""


@dataclass
class FileList:
    """The images of one split: ``paths[i]`` has label ``labels[i]``; ``classes[label]`` is the folder/wnid
    and ``names[label]`` a readable name."""

    paths: list
    labels: np.ndarray
    classes: list
    names: list = field(default_factory=list)
    root: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _class_folder_images(folder: str) -> list:
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(files) if _is_image(f))
    return out


def _scan_folder(root: str, classes: list | None) -> FileList:
    if not os.path.isdir(root):
        raise DataError(f"data folder {root!r} does not exist; set data_dir (and train_split/val_split)")
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not found:
        raise DataError(f"data folder {root!r} has no class folders; expected {root}/<class>/<image>")
    if classes is None:
        classes = found
    else:
        unknown = [d for d in found if d not in classes]
        if unknown:
            raise DataError(f"data folder {root!r} has class folders not in the training set: "
                            f"{', '.join(unknown[:5])}; add them to the training split or remove them here")
    paths, labels = [], []
    for label, c in enumerate(classes):
        folder = os.path.join(root, c)
        if not os.path.isdir(folder):
            continue  # a validation split may lack a class
        files = _class_folder_images(folder)
        if not files and c in found:
            raise DataError(f"class folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...); "
                            f"add images or remove the folder")
        paths += files
        labels += [label] * len(files)
    return FileList(paths, np.asarray(labels, np.int32), list(classes), list(classes), root)


def _read_lines(path: str) -> list:
    if not os.path.isfile(path):
        raise DataError(f"Tiny ImageNet file {path!r} is missing; data_dir must be the unpacked "
                        f"tiny-imagenet-200 folder")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _scan_tiny(root: str, split: str) -> FileList:
    wnids = sorted(w.strip() for w in _read_lines(os.path.join(root, "wnids.txt")))
    words = {}
    if os.path.isfile(os.path.join(root, "words.txt")):
        for line in _read_lines(os.path.join(root, "words.txt")):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    names = [words.get(w, w) for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for w in wnids:
            folder = os.path.join(root, "train", w, "images")
            if not os.path.isdir(folder):
                folder = os.path.join(root, "train", w)
            files = _class_folder_images(folder) if os.path.isdir(folder) else []
            if not files:
                raise DataError(f"Tiny ImageNet class {w!r} has no images under {folder!r}")
            paths += files
            labels += [index[w]] * len(files)
    else:
        base = os.path.join(root, split)
        for line in _read_lines(os.path.join(base, f"{split}_annotations.txt")):
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{base}/{split}_annotations.txt: bad line {line[:60]!r} "
                                f"(expected '<file>\\t<wnid>...' with a wnid from wnids.txt)")
            paths.append(os.path.join(base, "images", parts[0]))
            labels.append(index[parts[1]])
    if not paths:
        raise DataError(f"Tiny ImageNet split {split!r} under {root!r} has no images")
    return FileList(paths, np.asarray(labels, np.int32), wnids, names, root)


def default_data_dir(dataset: str) -> str:
    return os.path.join(".", "data", "digits") if dataset == "digits" else ""


def scan(dataset: str, data_dir: str, split: str, classes: list | None = None) -> FileList:
    """List the images of one split. ``classes`` (from the training split) fixes the label order for val."""
    data_dir = data_dir or default_data_dir(dataset)
    if dataset == "tiny_imagenet":
        return _scan_tiny(data_dir, split)
    if dataset == "digits":
        prepare_digits(data_dir)
    return _scan_folder(os.path.join(data_dir, split), classes)


# -- the digits demo -----------------------------------------------------------------------------------------

def prepare_digits(root: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write scikit-learn's digits as ``root/{train,val}/<digit>/<index>.png`` (``size`` px, RGB).

    The split is stratified and fixed by ``seed``; an existing complete folder is left alone.
    """
    done = os.path.join(root, ".prepared")
    if os.path.isfile(done):
        return root
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed,
                                          stratify=digits.target)
    for split, ids in (("train", train_idx), ("val", val_idx)):
        for i in sorted(ids):
            img8 = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(img8, mode="L").resize((size, size), Image.BICUBIC).convert("RGB")
            folder = os.path.join(root, split, str(digits.target[i]))
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{i:04d}.png")
            tmp = f"{path}.{os.getpid()}.tmp"
            img.save(tmp, format="PNG")
            os.replace(tmp, path)
    with open(done, "w") as f:
        f.write(json.dumps({"train": len(train_idx), "val": len(val_idx), "size": size, "seed": seed}))
    log.info("digits: wrote %d train and %d val images (%d px) to %s", len(train_idx), len(val_idx), size, root)
    return root


# -- channel statistics --------------------------------------------------------------------------------------

def channel_stats(files: FileList, max_images: int = 20000, seed: int = 0) -> tuple:
    """Per-channel mean and std (0-255 scale, RGB) over the pixels of up to ``max_images`` training images
    (a fixed random subset beyond that)."""
    from PIL import Image
    idx = np.arange(len(files))
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    s = np.zeros(3)
    s2 = np.zeros(3)
    n = 0
    for i in idx:
        try:
            with Image.open(files.paths[i]) as im:
                a = np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3)
        except Exception:  # unreadable images are handled (skipped or fatal) by the loader
            continue
        s += a.sum(0)
        s2 += (a * a).sum(0)
        n += a.shape[0]
    if n == 0:
        raise DataError(f"no readable training images under {files.root!r} to compute mean/std from")
    mean = s / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1e-12))
    return [round(float(x), 4) for x in mean], [round(float(x), 4) for x in std]


def resolve_stats(cfg, train: FileList, cache_dir: str | None = None) -> tuple:
    """The recipe's ``mean``/``std`` as two lists of 3 (0-255). ``auto`` computes them from the training
    images once and caches them in ``<data_dir>/mean_std.json`` (or ``cache_dir`` if data_dir is read-only)."""
    def pick(v, default):
        if v == "imagenet":
            return list(default)
        if isinstance(v, list):
            return v * 3 if len(v) == 1 else v
        return None

    mean, std = pick(cfg.mean, IMAGENET_MEAN), pick(cfg.std, IMAGENET_STD)
    if mean is not None and std is not None:
        return mean, std
    key = hashlib.sha1(f"{len(train)}|{train.paths[0]}|{train.paths[-1]}".encode()).hexdigest()[:12]
    root = train.root if os.path.isdir(train.root) else os.path.dirname(train.paths[0])
    if cfg.dataset != "tiny_imagenet":
        root = os.path.dirname(os.path.abspath(root))  # the folder holding train/ and val/
    candidates = [os.path.join(root, "mean_std.json")] + ([os.path.join(cache_dir, "mean_std.json")]
                                                         if cache_dir else [])
    for c in candidates:
        try:
            with open(c) as f:
                entry = json.load(f).get(key)
            if entry:
                log.info("mean/std from cache %s: mean %s std %s", c, entry["mean"], entry["std"])
                return (mean or entry["mean"]), (std or entry["std"])
        except (OSError, ValueError):
            pass
    log.info("computing per-channel mean/std from %d training images ...", len(train))
    m, s = channel_stats(train)
    log.info("mean %s std %s (0-255, RGB)", m, s)
    for c in candidates:
        try:
            data = {}
            if os.path.isfile(c):
                with open(c) as f:
                    data = json.load(f)
            data[key] = {"mean": m, "std": s, "images": len(train)}
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(c))
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, c)
            break
        except OSError:
            continue
    return (mean or m), (std or s)


# -- loaders -------------------------------------------------------------------------------------------------

def epoch_indices(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                  pad: bool = True) -> np.ndarray:
    """Sample indices rank ``rank`` of ``world`` sees in ``epoch``.

    All ranks draw the same permutation from (seed, epoch) and take every ``world``-th entry from ``rank`` on,
    so shards are disjoint. With ``pad`` the permutation is wrapped to a multiple of ``world`` (equal step
    counts on every rank, as data parallelism needs); without it (validation) shards may differ by one.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if pad and n % world:
        extra = world - n % world
        order = np.concatenate([order, order[:extra]])
    return order[rank::world]


class _Source:
    """Random-access source for ``GeneratorDataset``: (encoded image bytes, label).

    An unreadable image is skipped (the next readable one takes its place, so the epoch keeps its length) and
    named once in the log, or with ``strict`` stops the run with its name (``first_error``).
    """

    _warned: set = set()
    _lock = threading.Lock()

    def __init__(self, files: FileList, indices: np.ndarray, strict: bool):
        self.files = files
        self.indices = np.asarray(indices)
        self.strict = strict
        self.first_error: str | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _read(self, path: str):
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if not raw:
                return None, "empty file, 0 bytes"
            from PIL import Image, UnidentifiedImageError
            try:
                with Image.open(io.BytesIO(raw)) as im:
                    im.verify()
            except UnidentifiedImageError:
                return None, "not an image format PIL can read"
            return raw, None
        except Exception as e:  # any unreadable file
            return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

    def __getitem__(self, k: int):
        n = len(self.indices)
        for j in range(n):
            i = int(self.indices[(k + j) % n])
            path = self.files.paths[i]
            raw, err = self._read(path)
            if raw is not None:
                return np.frombuffer(raw, np.uint8).copy(), np.array(self.files.labels[i], np.int32)
            msg = f"unreadable image {path!r} ({err})"
            if self.strict:
                self.first_error = self.first_error or msg
                raise DataError(msg + "; remove or replace it, or set strict_data: False to skip it")
            with self._lock:
                if path not in self._warned:
                    self._warned.add(path)
                    log.warning("%s: skipped (strict_data: False)", msg)
        raise DataError(f"no readable image among the {n} of this shard (first: {self.files.paths[0]!r})")


def _rgb_to_bgr(img):
    """HWC RGB -> BGR (a contiguous copy), for weights trained on OpenCV-decoded images (Megvii's)."""
    return np.ascontiguousarray(np.asarray(img)[..., ::-1])


def _with_affine(cfg, tf: list) -> list:
    """MindCV has no rotation/shift keys: MindCV's fused decode+random-resized-crop becomes decode, a random
    affine (background 0), then the same random-resized crop."""
    from mindspore.dataset import vision
    if type(tf[0]).__name__ != "RandomCropDecodeResize":
        raise ValueError(f"unexpected first MindCV training transform {type(tf[0]).__name__}")
    inter = {"bilinear": vision.Inter.BILINEAR, "bicubic": vision.Inter.BICUBIC, "nearest": vision.Inter.NEAREST,
             "area": vision.Inter.AREA}[cfg.interpolation]
    shift = min(float(cfg.translate), 1.0)
    return [vision.Decode(),
            vision.RandomAffine(degrees=float(cfg.rotation), translate=(-shift, shift, -shift, shift) if shift
                                else None, resample=vision.Inter.BILINEAR),
            vision.RandomResizedCrop(cfg.image_resize, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                                     interpolation=inter)] + list(tf[1:])


def build_transforms(cfg, mean: list, std: list, is_training: bool, bgr: bool = False) -> list:
    """MindCV's ImageNet-style transforms with the recipe's augmentation keys. ``bgr`` swaps the channels to
    BGR right before normalisation (mean/std are then in BGR order, as the checkpoint records them)."""
    from mindcv.data import create_transforms
    if is_training:
        tf = create_transforms("", image_resize=cfg.image_resize, is_training=True, scale=tuple(cfg.scale),
                               ratio=tuple(cfg.ratio), hflip=cfg.hflip, vflip=cfg.vflip,
                               color_jitter=cfg.color_jitter, interpolation=cfg.interpolation, mean=mean,
                               std=std, re_prob=cfg.re_prob)
        if cfg.rotation or cfg.translate:
            tf = _with_affine(cfg, tf)
    else:
        tf = create_transforms("", image_resize=cfg.image_resize, is_training=False, crop_pct=cfg.crop_pct,
                               interpolation=cfg.interpolation, mean=mean, std=std)
    if bgr:
        at = next((i for i, t in enumerate(tf) if type(t).__name__ == "Normalize"), len(tf) - 1)
        tf = tf[:at] + [_rgb_to_bgr] + tf[at:]
    return tf


def build_loader(cfg, files: FileList, indices: np.ndarray, transforms: list, is_training: bool,
                 batch_size: int | None = None):
    """A batched MindSpore dataset over ``files[indices]`` in that order. Returns (dataset, source)."""
    import mindspore.dataset as ds
    from mindcv.data import create_loader
    source = _Source(files, indices, cfg.strict_data)
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"], shuffle=False,
                                  num_parallel_workers=1)
    loader = create_loader(dataset, batch_size=batch_size or cfg.batch_size,
                           drop_remainder=bool(cfg.drop_remainder and is_training), is_training=is_training,
                           num_classes=len(files.classes), transform=transforms,
                           num_parallel_workers=cfg.num_parallel_workers)
    return loader, source
