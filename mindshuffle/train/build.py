"""What a run trains: the model (with the recipe's start weights and frozen parts), the loss, the parameter
groups and the optimizer over a per-step learning-rate table."""
from __future__ import annotations

import logging

import numpy as np

from ..builder import create_model, model_info
from ..errors import RecipeError
from ..registry import ModelArgumentError

__all__ = ["build_model", "param_groups", "make_optimizer", "make_loss"]

log = logging.getLogger("mindshuffle")


def build_model(cfg, num_classes: int):
    kw = dict(cfg.model_kwargs)
    if cfg.drop_rate is not None:
        kw["drop_rate"] = cfg.drop_rate
    try:
        net = create_model(cfg.model, num_classes=num_classes, pretrained=cfg.pretrained,
                           checkpoint_path=cfg.ckpt_path, **kw)
    except ModelArgumentError as e:  # an argument the model does not take, or a value it refuses
        if not cfg.model_kwargs:
            raise
        raise RecipeError(f"recipe key 'model_kwargs': bad value {cfg.model_kwargs!r} ({e})") from None
    if cfg.freeze_backbone:
        head = model_info(cfg.model).classifier + "."
        frozen = 0
        for p in net.get_parameters():
            if not p.name.startswith(head):
                p.requires_grad = False
                frozen += 1
        log.info("freeze_backbone: training only %s* (%d parameters frozen)", head, frozen)
    return net


def param_groups(net, cfg) -> list:
    """Weight decay on conv and fc weights only (tensors of rank > 1), never on BN gamma/beta or biases."""
    params = net.trainable_params()
    if not params:
        raise RecipeError("the model has no trainable parameters; check freeze_backbone and the model's classifier")
    if cfg.weight_decay_filter == "all":
        decay, rest = params, []
    else:
        decay = [p for p in params if len(p.shape) > 1]
        rest = [p for p in params if len(p.shape) <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if rest:
        groups.append({"params": rest, "weight_decay": 0.0})
    groups.append({"order_params": params})
    return groups


def make_optimizer(net, cfg, lrs: np.ndarray, loss_scale: float):
    """MindCV's optimizer factory over ``lrs`` (one learning rate per step; the optimizer's global step is the
    position in it). ``loss_scale``: the optimizer divides the gradients by it (fixed scaling, no drop)."""
    import mindspore as ms
    from mindcv.optim import create_optimizer
    mlog = logging.getLogger("mindcv")
    level = mlog.level
    mlog.setLevel(logging.ERROR)  # "auto" filter warning: our groups already say which parameters decay
    try:
        return create_optimizer(param_groups(net, cfg), opt=cfg.opt, lr=ms.Tensor(lrs, ms.float32),
                                weight_decay=cfg.weight_decay, momentum=cfg.momentum, nesterov=cfg.use_nesterov,
                                weight_decay_filter="auto", loss_scale=loss_scale)
    finally:
        mlog.setLevel(level)


def make_loss(cfg):
    from mindcv.loss import create_loss
    return create_loss(name=cfg.loss, label_smoothing=cfg.label_smoothing)
