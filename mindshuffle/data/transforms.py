"""The transforms: MindCV's ImageNet-style ones with the recipe's augmentation keys (plus rotation/shift and
BGR input where asked), and where the recipe allows, normalisation moved into the compiled step (``ImagePrep``)."""
from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import nn, ops
from mindspore.dataset import vision

__all__ = ["build_transforms", "input_transforms", "ImagePrep"]


def _rgb_to_bgr(img):
    """HWC RGB -> BGR (a contiguous copy), for weights trained on OpenCV-decoded images (Megvii's)."""
    return np.ascontiguousarray(np.asarray(img)[..., ::-1])


def _with_affine(cfg, tf: list) -> list:
    """MindCV has no rotation/shift keys: MindCV's fused decode+random-resized-crop becomes decode, a random
    affine (background 0), then the same random-resized crop."""
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
    """MindCV's ImageNet-style transforms with the recipe's augmentation keys, normalised on the host (float32
    CHW out). ``bgr`` swaps the channels to BGR right before normalisation (mean/std are then in BGR order, as
    the checkpoint records them)."""
    from mindcv.data import create_transforms
    if is_training:
        tf = create_transforms("", image_resize=cfg.image_resize, is_training=True, scale=tuple(cfg.scale),
                               ratio=tuple(cfg.ratio), hflip=cfg.hflip, vflip=cfg.vflip,
                               color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment or None,
                               interpolation=cfg.interpolation, mean=mean, std=std, re_prob=cfg.re_prob)
        if cfg.rotation or cfg.translate:
            tf = _with_affine(cfg, tf)
    else:
        tf = create_transforms("", image_resize=cfg.image_resize, is_training=False, crop_pct=cfg.crop_pct,
                               interpolation=cfg.interpolation, mean=mean, std=std)
    if bgr:
        at = next((i for i, t in enumerate(tf) if type(t).__name__ == "Normalize"), len(tf) - 1)
        tf = tf[:at] + [_rgb_to_bgr] + tf[at:]
    return tf


class ImagePrep(nn.Cell):
    """The normalisation the host pipeline would have done, as the first step of a compiled graph: a uint8
    NHWC batch -> float32 NCHW, ``(x - mean) / std`` per channel (0-255 units, RGB)."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean = ms.Tensor(np.asarray(mean, np.float32).reshape(1, 3, 1, 1))
        self.std = ms.Tensor(np.asarray(std, np.float32).reshape(1, 3, 1, 1))

    def construct(self, x):
        x = ops.cast(ops.transpose(x, (0, 3, 1, 2)), ms.float32)
        return (x - self.mean) / self.std


def _host_tail(tf: list) -> bool:
    """True when ``tf`` ends with MindCV's Normalize + HWC2CHW and nothing after them."""
    return [type(t).__name__ for t in tf[-2:]] == ["Normalize", "HWC2CHW"]


def input_transforms(cfg, mean: list, std: list, is_training: bool) -> tuple:
    """(transforms, prep). Normalisation moves to the device when the training recipe allows it: the pipeline
    then ends with uint8 HWC images (a quarter of the bytes to copy and transfer) and ``prep``, an
    ``ImagePrep``, must be applied first by the compiled train and eval steps. It stays on the host (prep None)
    when an augmentation works on the normalised tensor (MindCV's random erasing, ``re_prob > 0``; mixup and
    cutmix, which mix float CHW batches) or gives float images (MindCV's AugMix). The choice depends on the
    recipe only, so the training and validation transforms always agree."""
    tf = build_transforms(cfg, mean, std, is_training)
    train_tf = tf if is_training else build_transforms(cfg, mean, std, True)
    float_images = cfg.mixup > 0 or cfg.cutmix > 0 or cfg.auto_augment.startswith("augmix")
    if float_images or not _host_tail(train_tf) or not _host_tail(tf):
        return tf, None
    return tf[:-2], ImagePrep(mean, std)
