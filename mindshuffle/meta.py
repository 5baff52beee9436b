"""What a checkpoint's numbers mean, decided in one place: the key its metadata is stored under, the
preprocessing its weights expect (ImageNet's mean and std written once, here), and the image files readers take.

A leaf: training, validate, infer, export and the converters all read these; it imports only ``errors``.
"""
from __future__ import annotations

from .errors import CheckpointError

__all__ = ["META_KEY", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_PREPROCESS", "IMAGE_EXTENSIONS", "PREDICT_EXTENSIONS",
           "normalize_preprocess"]

META_KEY = "mindshuffle_meta"   # a JSON string stored beside the weights (see checkpoints.checkpoint_metadata)

# ImageNet's per-channel mean and std in 0-255 units (0.485/0.456/0.406 and 0.229/0.224/0.225 of 255)
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)

# what MindCV's, torchvision's and mindshuffle's ImageNet weights expect: RGB, ImageNet mean/std, 256 -> 224
IMAGENET_PREPROCESS = {"channel_order": "RGB", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                       "resize": 256, "input_size": 224}

# image files the data pipeline reads (lower case; hidden files are skipped by the readers); the predictor reads
# with Pillow, which also takes GIF
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
PREDICT_EXTENSIONS = IMAGE_EXTENSIONS + (".gif",)


def normalize_preprocess(pre: dict | None) -> dict:
    """A complete, checked preprocessing dict (channel order, mean and std in 0-255 units, resize, input size).

    Missing keys take ImageNet's RGB defaults; ``scale`` (e.g. 1/255 with mean/std in 0-1 units) is folded
    into mean and std.
    """
    out = dict(IMAGENET_PREPROCESS)
    pre = dict(pre or {})
    scale = float(pre.pop("scale", 1.0) or 1.0)
    out.update({k: v for k, v in pre.items() if v is not None})
    if "input_size" in pre and "resize" not in pre:
        out["resize"] = int(round(int(pre["input_size"]) / 0.875))
    order = str(out["channel_order"]).upper()
    if order not in ("RGB", "BGR"):
        raise CheckpointError(f"preprocess channel_order must be RGB or BGR, got {out['channel_order']!r}")
    mean = [float(v) / scale for v in out["mean"]]
    std = [float(v) / scale for v in out["std"]]
    if len(mean) != len(std) or any(v <= 0 for v in std):
        raise CheckpointError(f"preprocess mean {mean} / std {std} invalid: equal lengths and std > 0 needed")
    out.update(channel_order=order, mean=mean, std=std, resize=int(out["resize"]),
               input_size=int(out["input_size"]))
    return out
