"""The digits demo: scikit-learn's 1,797 handwritten digits written once as a class-folder dataset of PNGs
with a fixed, stratified train/val split, then read as ``folder``."""
from __future__ import annotations

import logging
import os

import numpy as np

from ..errors import DataError
from ..fileio import atomic_json, atomic_write

__all__ = ["prepare_digits"]

log = logging.getLogger("mindshuffle.data")  # one logger for the whole data package, as before the split


def prepare_digits(root: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write scikit-learn's digits as ``root/{train,val}/<digit>/<index>.png`` (``size`` px, RGB).

    The split is stratified and fixed by ``seed``; an existing complete folder is left alone. A folder that
    already holds anything this function did not write is refused (DataError): the digits would be mixed
    into its images. ``.started`` (written first, kept) marks the folder as this function's, so an interrupted
    preparation (or another rank's) continues; ``.prepared`` (written last) marks it complete.
    """
    done, started = os.path.join(root, ".prepared"), os.path.join(root, ".started")
    if os.path.isfile(done):
        return root
    if os.path.isdir(root) and not os.path.isfile(started):
        theirs = sorted(f for f in os.listdir(root) if not f.startswith("."))
        if theirs:
            raise DataError(f"dataset digits: data_dir {root!r} already holds {', '.join(theirs[:3])}"
                            f"{', ...' if len(theirs) > 3 else ''} and was not prepared by mindshuffle (no "
                            f".prepared); set data_dir to a new or empty folder, or use dataset: folder")
    os.makedirs(root, exist_ok=True)
    atomic_json(started, {"dataset": "digits", "written_by": "mindshuffle.data.prepare_digits"})
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
            atomic_write(path, lambda f: img.save(f, format="PNG"), binary=True, suffix=".png")
    atomic_json(done, {"train": len(train_idx), "val": len(val_idx), "size": size, "seed": seed})
    log.info("digits: wrote %d train and %d val images (%d px) to %s", len(train_idx), len(val_idx), size, root)
    return root
