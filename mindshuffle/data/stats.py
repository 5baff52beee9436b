"""Channel statistics: the recipe's ``mean``/``std`` (ImageNet's, given, or ``auto``: computed from the
training images once and cached beside them)."""
from __future__ import annotations

import hashlib
import json
import logging
import os

import numpy as np

from ..errors import DataError
from ..fileio import atomic_json
from ..meta import IMAGENET_MEAN as _IMAGENET_MEAN, IMAGENET_STD as _IMAGENET_STD
from .files import FileList

__all__ = ["channel_stats", "resolve_stats", "IMAGENET_MEAN", "IMAGENET_STD"]

log = logging.getLogger("mindshuffle.data")  # one logger for the whole data package, as before the split

IMAGENET_MEAN = list(_IMAGENET_MEAN)
IMAGENET_STD = list(_IMAGENET_STD)


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
    # at least one grey level: a channel without variation (a test image, a scan) must not divide by zero,
    # which MindSpore's Normalize refuses
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1.0))
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
            atomic_json(c, data)
            break
        except OSError:
            continue
    return (mean or m), (std or s)
