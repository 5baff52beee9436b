"""``dry_run: True``: resolve the recipe, the data (or ImageNet-1k's size when data_dir is not on this
machine), the run plan for the recipe's device and cards, the learning-rate table, the model and the optimizer;
print the plan; compile nothing and write nothing. Runs on any machine: an Ascend recipe's plan is resolved
without an Ascend device."""
from __future__ import annotations

import logging
import math
import os

from .build import build_model, make_optimizer
from .inputs import TrainInputs
from .logs import start_logging
from .plan import resolve

__all__ = ["dry_run", "IMAGENET_TRAIN_IMAGES"]

log = logging.getLogger("mindshuffle")

IMAGENET_TRAIN_IMAGES = 1281167  # ImageNet-1k's training split
# dataset -> (name, training images, classes) when the data is not on this machine (or, for digits, not prepared:
# a dry run writes nothing, so it does not prepare the digits either); digits: 1,797 images, 360 held out
ASSUMED = {"tiny_imagenet": ("Tiny ImageNet", 100000, 200), "digits": ("the digits demo", 1437, 10)}


def _cards(cfg) -> int:
    """Under msrun the job's size; otherwise the cards the recipe's lr was tuned for (global batch / batch)."""
    if os.environ.get("MS_WORKER_NUM"):
        return int(os.environ["MS_WORKER_NUM"])
    if cfg.distribute and cfg.global_batch_size:
        return max(1, cfg.global_batch_size // cfg.batch_size)
    return 1


def _data(cfg, world: int) -> tuple:
    """(steps per epoch, classes, what was assumed)."""
    prepared = cfg.dataset != "digits" or os.path.isfile(os.path.join(cfg.data_dir, ".prepared"))
    if os.path.isdir(cfg.data_dir) and prepared:
        data = TrainInputs(cfg, world)
        return data.steps, data.num_classes, f"{len(data.train)} images in {cfg.data_dir or 'digits'}"
    name, images, classes = ASSUMED.get(cfg.dataset, ("ImageNet-1k", IMAGENET_TRAIN_IMAGES, 1000))
    per_rank = math.ceil(images / world)
    steps = per_rank // cfg.batch_size if cfg.drop_remainder else math.ceil(per_rank / cfg.batch_size)
    why = "not prepared" if os.path.isdir(cfg.data_dir) else "not here"
    return steps, cfg.num_classes or classes, f"data_dir {cfg.data_dir!r} {why}: {name}'s {images} images assumed"


def dry_run(cfg) -> dict:
    import mindspore as ms
    start_logging(0)
    world = _cards(cfg)
    steps, classes, data_note = _data(cfg, world)
    plan = resolve(cfg, 0, world, steps)
    lrs = plan.learning_rates()
    ms.set_context(mode=ms.GRAPH_MODE)  # building cells needs no device: nothing is compiled or run
    net = build_model(cfg, classes)
    make_optimizer(net, cfg, lrs, plan.optimizer_loss_scale)
    params = sum(int(p.size) for p in net.trainable_params())
    log.info("dry run of %s: %s; model %s (%d classes, %.3f M trainable parameters), %d epochs x %d steps\n%s",
             os.path.basename(cfg.config) or "the recipe", data_note, cfg.model, classes, params / 1e6, cfg.epoch_size, steps,
             plan.describe())
    return {"dry_run": True, "plan": dict(plan.rows()), "notes": list(plan.notes), "steps_per_epoch": steps,
            "cards": world, "classes": classes}
