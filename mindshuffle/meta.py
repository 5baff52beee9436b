"""What a checkpoint's numbers mean, decided in one place: ``CheckpointMeta`` (the model, its classes and switches,
the preprocessing its weights expect) and the key it is stored under, ImageNet's mean and std (written once, here),
and the image files readers take.

A leaf: training, validate, infer, export, averaging and the converters all read and write ``CheckpointMeta``; it
imports only ``errors``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from .errors import CheckpointError

__all__ = ["META_KEY", "STATE_KEY", "CheckpointMeta", "run_state_of", "IMAGENET_MEAN", "IMAGENET_STD", "IMAGENET_PREPROCESS",
           "IMAGE_EXTENSIONS", "PREDICT_EXTENSIONS", "normalize_preprocess"]

META_KEY = "mindshuffle_meta"     # CheckpointMeta as a JSON string, stored beside the weights
STATE_KEY = "mindshuffle_state"   # the training engine's run state (epoch, best, ...; train/state.py) as JSON

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


def run_state_of(ckpt: dict) -> dict:
    """The training engine's run state stored in a loaded checkpoint (``STATE_KEY``: epoch, best top-1, the run's
    class count, mean/std, ...); ``{}`` for a checkpoint the engine did not write or an unreadable entry."""
    try:
        state = json.loads(ckpt[STATE_KEY]) if isinstance(ckpt.get(STATE_KEY), str) else {}
    except ValueError:
        state = {}
    return state if isinstance(state, dict) else {}


@dataclass
class CheckpointMeta:
    """What a checkpoint records beside its weights (JSON under ``META_KEY``).

    ``model``/``model_kwargs``/``num_classes`` rebuild the network; ``pool_same`` (MindCV's "same" pooling) and
    ``v1_shuffle == "authors"`` (Megvii's and MindCV's V1 channel order) are the model's switches; ``preprocess``
    is what its weights expect (``normalize_preprocess``'d, ``None`` when unknown); ``source``,
    ``converted_from`` and ``averaged`` say where the weights came from. Keys it does not know are kept in
    ``extra`` and written back.
    """

    model: str = ""
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = None
    pool_same: bool = False
    v1_shuffle: str = ""
    preprocess: dict | None = None
    class_names: list | None = None
    source: str = ""
    converted_from: str = ""
    averaged: dict | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.preprocess is not None:
            self.preprocess = normalize_preprocess(self.preprocess)
        if self.num_classes is not None:
            self.num_classes = int(self.num_classes)
        self.model_kwargs = dict(self.model_kwargs or {})
        self.class_names = None if self.class_names is None else [str(n) for n in self.class_names]

    @classmethod
    def from_dict(cls, d: dict) -> "CheckpointMeta":
        """The metadata in ``d``; ``CheckpointError`` for a field of the wrong kind."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        try:
            return cls(**{k: v for k, v in d.items() if k in names},
                       extra={k: v for k, v in d.items() if k not in names})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"the checkpoint's metadata ({META_KEY}) is malformed: {e}") from None

    def to_dict(self) -> dict:
        """The fields that say something (unset ones are left out; ``pool_same`` always), then ``extra``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out = {k: v for k, v in out.items() if k == "pool_same" or v not in ("", None, {}, [])}
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, text) -> "CheckpointMeta":
        """The metadata in ``text``; an empty one for anything that is not a JSON object."""
        try:
            d = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            d = None
        return cls.from_dict(d) if isinstance(d, dict) else cls()

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "CheckpointMeta":
        """The metadata of a loaded checkpoint (names already mindshuffle's). A checkpoint without ``META_KEY``
        but with the engine's run state (``STATE_KEY``) is described by that state: its model, classes and the
        mean/std and input size it was trained with."""
        if isinstance(ckpt.get(META_KEY), str):
            return cls.from_json(ckpt[META_KEY])
        state = run_state_of(ckpt)
        pre = None
        if state.get("mean") and state.get("std"):
            pre = {"channel_order": "RGB", "mean": state["mean"], "std": state["std"]}
            if state.get("image_resize"):
                pre["input_size"] = int(state["image_resize"])
        return cls(model=state.get("model") or "", model_kwargs=state.get("model_kwargs") or {},
                   num_classes=state.get("num_classes"), preprocess=pre)

    def input_preprocess(self) -> dict:
        """The preprocessing the weights expect: the recorded one, else ImageNet's RGB defaults."""
        return normalize_preprocess(self.preprocess)

    def rebuild_kwargs(self, model: str, kwargs: dict) -> dict:
        """Constructor arguments that rebuild the variant the weights were saved from: the recorded
        ``model_kwargs`` (when they were saved from ``model``), overridden by ``kwargs``."""
        return {**(self.model_kwargs if self.model == model else {}), **kwargs}
