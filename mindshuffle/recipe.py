"""Recipes: a YAML file -> one validated, typed config object.

Every key is declared once in ``KEYS`` with its type, default and meaning; names follow MindCV's recipes
(``model``, ``data_dir``, ``batch_size``, ``lr``, ``scheduler``, ``epoch_size``, ...), so a MindCV recipe reads
as-is. ``load(path, overrides)`` reads the YAML, applies command-line overrides (``["--lr", "0.1",
"--distribute", "False"]``), checks every value and returns a ``Recipe`` (a dict with attribute access).
An unknown key or a bad value raises ``RecipeError`` naming the key, the value and the closest valid choice.
"""
from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from .errors import RecipeError
from .fileio import atomic_write, markdown_table

__all__ = ["Key", "KEYS", "Recipe", "RecipeError", "load", "parse_overrides", "coerce", "save", "keys_table"]


@dataclass(frozen=True)
class Key:
    name: str
    type: str            # bool | int | float | float? | str | floats | stats | jitter | mapping
    default: Any
    help: str
    choices: tuple = ()
    minimum: float | None = None


_DEVICE = ("CPU", "Ascend", "GPU")
_OPTIMIZERS = ("momentum", "sgd", "nesterov", "adam", "adamw", "lion", "nadam", "adan", "rmsprop", "adagrad", "lamb")
KEYS: tuple[Key, ...] = (
    # system
    Key("mode", "int", 0, "0 = GRAPH mode (the only mode tested), 1 = PyNative", (0, 1)),
    Key("device_target", "str", "CPU", "CPU, Ascend or GPU", _DEVICE),
    Key("distribute", "bool", False, "data-parallel training over the ranks msrun starts"),
    Key("seed", "int", 42, "seed for weights, data order and augmentation"),
    Key("num_parallel_workers", "int", 2, "data-pipeline workers per rank", minimum=1),
    Key("val_while_train", "bool", True, "validate during training"),
    Key("val_interval", "int", 1, "validate every N epochs (and always after the last)", minimum=1),
    Key("log_interval", "int", 0, "log the running loss every N steps (0 = only per epoch)", minimum=0),
    Key("log_sample_ids", "bool", False, "write the sample indices each rank sees per epoch to samples/"),
    Key("jit_level", "str", "O0", "graph compile level passed to MindSpore (O0, O1, O2)", ("O0", "O1", "O2")),
    Key("dataset_sink_mode", "bool", False, "feed data through the device queue and run sink_size steps per "
        "host call (Ascend/GPU; off on CPU)"),
    Key("sink_size", "int", -1, "steps per host call in dataset sink mode (-1 = a whole epoch, as MindCV; "
        "rounded down to a divisor of the steps per epoch)", minimum=-1),
    Key("enable_compile_cache", "bool", False, "cache compiled graphs between runs (MindSpore compile cache)"),
    Key("accelerate", "bool", True, "on CPU, run the model on mindshuffle's CPU kernels (mindshuffle.accel: training, "
        "validation, inference with BatchNorm folded); false: MindSpore's kernels only. Ignored on Ascend/GPU"),
    # dataset
    Key("dataset", "str", "folder", "folder | imagenet (train/ val/ of class folders), tiny_imagenet "
        "(its own layout, read as-is), digits (scikit-learn digits, prepared on first use)",
        ("folder", "imagenet", "tiny_imagenet", "digits")),
    Key("data_dir", "str", "", "dataset root folder"),
    Key("train_split", "str", "train", "sub-folder of data_dir with the training images"),
    Key("val_split", "str", "val", "sub-folder of data_dir with the validation images"),
    Key("shuffle", "bool", True, "shuffle the training data every epoch"),
    Key("batch_size", "int", 64, "batch size per card", minimum=1),
    Key("global_batch_size", "int", 0, "the global batch (cards x batch x gradient_accumulation_steps) the "
        "recipe's lr was tuned for; when it differs from this run's, lr and min_lr are scaled linearly (0 = never "
        "scale)", minimum=0),
    Key("drop_remainder", "bool", True, "drop the last incomplete training batch"),
    Key("strict_data", "bool", False, "stop at the first unreadable image (default: skip it, named once in the log)"),
    Key("num_samples", "int", 0, "use only the first N training samples (0 = all; quick trials)", minimum=0),
    # augmentation
    Key("image_resize", "int", 224, "training and validation resolution (px)", minimum=8),
    Key("scale", "floats", [0.08, 1.0], "random-resized-crop area range"),
    Key("ratio", "floats", [0.75, 1.333], "random-resized-crop aspect range"),
    Key("hflip", "float", 0.5, "horizontal flip probability", minimum=0),
    Key("vflip", "float", 0.0, "vertical flip probability", minimum=0),
    Key("color_jitter", "jitter", None, "brightness/contrast/saturation[/hue]: one number or a list of 3-4"),
    Key("interpolation", "str", "bilinear", "resize interpolation", ("bilinear", "bicubic", "nearest", "area")),
    Key("crop_pct", "float", 0.875, "validation: resize to image_resize / crop_pct, then centre-crop", minimum=0.01),
    Key("re_prob", "float", 0.0, "random-erasing probability", minimum=0),
    Key("auto_augment", "str", "", "MindCV's policy, spelled as in MindCV: randaug-m9-mstd0.5-inc1 (sections m, n, "
        "w, mstd, mmax, inc), autoaug / autoaugr / 3a (mstd), trivialaugwide (m), augmix (m, w, d, a); "
        "replaces color_jitter, as in MindCV ('' = off)"),
    Key("mixup", "float", 0.0, "mixup alpha: mix whole batches with a Beta(alpha, alpha) weight, labels mixed "
        "alike (0 = off)", minimum=0),
    Key("cutmix", "float", 0.0, "cutmix alpha: paste a box of the batch's mirror image, labels mixed by area "
        "(0 = off; with mixup too, each batch picks one of the two with probability 0.5)", minimum=0),
    Key("cutmix_prob", "float", 1.0, "probability that a batch is mixed at all when mixup or cutmix is on "
        "(MindCV's name; 0-1)", minimum=0),
    Key("mixup_off_epoch", "int", 0, "stop mixing (mixup and cutmix) from this epoch on, counted from 0 as in "
        "timm: epochs 1..N are mixed, the rest see plain images with one-hot targets (0 = mix to the end)",
        minimum=0),
    Key("aug_repeats", "int", 0, "repeated augmentation (MindCV's RepeatAugSampler): each image r times in a "
        "row of the epoch's order, the ranks taking interleaved shards (so the copies land on different ranks), "
        "each rank keeping the epoch's usual length (0 or 1 = off)", minimum=0),
    Key("rotation", "float", 0.0, "random rotation of up to +-N degrees before the crop (0 = off; small "
        "shapes such as digits)", minimum=0),
    Key("translate", "float", 0.0, "random shift of up to +-N x the image size before the crop (0 = off)",
        minimum=0),
    Key("mean", "stats", "imagenet", "per-channel mean (0-255): a list of 3, 'imagenet', or 'auto' "
        "(computed from the training images, cached beside the data)"),
    Key("std", "stats", "imagenet", "per-channel std (0-255): a list of 3, 'imagenet' or 'auto'"),
    # model
    Key("model", "str", "shufflenet_v2_x1_0", "registered model name (python tools/models.py lists them)"),
    Key("model_kwargs", "mapping", {}, "more keyword arguments for the model, like timm's --model-kwargs: "
        "{layout: torchvision}, {repeats: [2, 4, 2]} (a shallower net); recorded in checkpoints"),
    Key("num_classes", "int", 0, "classifier outputs (0 = the number of class folders found)", minimum=0),
    Key("drop_rate", "float?", None, "dropout before the classifier (null = the model's default)", minimum=0),
    Key("pretrained", "bool", False, "start from the model's published weights (downloaded once into the "
        "cache, checked; README: Pretrained weights); ckpt_path, when set, wins"),
    Key("ckpt_path", "str", "", "start weights; with another num_classes the classifier is re-initialised"),
    Key("freeze_backbone", "bool", False, "train only the classifier"),
    Key("ckpt_save_dir", "str", "./runs/run", "the run folder: recipe, logs, metrics.csv, checkpoints"),
    Key("keep_checkpoint_max", "int", 1, "k: with k > 1 the run folder also keeps k per-epoch checkpoints "
        "epoch_<N>.ckpt chosen by ckpt_save_policy (1 = last.ckpt and best.ckpt only; MindCV's default is 10)",
        minimum=1),
    Key("ckpt_save_policy", "str", "latest_k", "which epoch_<N>.ckpt files stay: latest_k (the k most recent) "
        "or top_k (the k best by val top-1; ties: the later epoch)", ("latest_k", "top_k")),
    Key("ckpt_save_interval", "int", 1, "write epoch_<N>.ckpt every N epochs (and after the last)", minimum=1),
    Key("overwrite", "bool", False, "allow writing into a run folder that holds a finished run"),
    Key("epoch_size", "int", 100, "epochs to train", minimum=1),
    Key("dry_run", "bool", False, "resolve the recipe, the run plan and the data, build the model and "
        "optimizer, print the plan, and stop: no graph compiled, nothing written"),
    Key("stop_after_epoch", "int", 0, "end this process after that epoch, as if interrupted (0 = off; "
        "for resume tests)", minimum=0),
    Key("amp_level", "str", "O0", "mixed precision: O0 (fp32), O1, O2, O3 (O0 is used on CPU)",
        ("O0", "O1", "O2", "O3")),
    Key("loss_scale", "float", 1.0, "static loss scale (for fp16 AMP levels)", minimum=1e-8),
    Key("loss_scale_type", "str", "fixed", "fixed or dynamic loss scaling", ("fixed", "dynamic")),
    Key("drop_overflow_update", "bool", False, "skip the update of a step whose gradients overflowed (always "
        "on with dynamic loss scaling)"),
    # loss
    Key("loss", "str", "CE", "MindCV loss name (cross-entropy)", ("CE",)),
    Key("label_smoothing", "float", 0.1, "label smoothing", minimum=0),
    # lr scheduler
    Key("scheduler", "str", "linear_decay", "linear_decay (the paper's), cosine_decay, constant",
        ("linear_decay", "cosine_decay", "constant")),
    Key("lr", "float", 0.5, "peak learning rate (for global_batch_size)", minimum=0),
    Key("min_lr", "float", 0.0, "learning rate at the end of the decay", minimum=0),
    Key("warmup_epochs", "int", 0, "linear warm-up epochs", minimum=0),
    Key("warmup_factor", "float", 0.0, "warm-up starts at lr * warmup_factor", minimum=0),
    Key("decay_epochs", "int", 0, "epochs of decay after warm-up (0 = the rest of the run)", minimum=0),
    # optimizer
    Key("opt", "str", "momentum", "optimizer, by MindCV's name (its create_optimizer builds it); nesterov is "
        "Nesterov only with use_nesterov True, as in MindCV; lion wants an lr ~3-10x below adamw's and a weight "
        "decay ~3-10x above; lamb has no CPU kernel (Ascend/GPU)", _OPTIMIZERS),
    Key("momentum", "float", 0.9, "momentum", minimum=0),
    Key("weight_decay", "float", 4e-5, "weight decay", minimum=0),
    Key("weight_decay_filter", "str", "conv_fc_weights", "which parameters decay: conv_fc_weights (the "
        "paper's: conv and fc weights; not BN, not biases) or all", ("conv_fc_weights", "all")),
    Key("use_nesterov", "bool", False, "Nesterov momentum"),
    Key("clip_grad", "bool", False, "clip the gradients to a global L2 norm of clip_value before each optimizer "
        "update (after loss-scale unscaling and the all-reduce; with gradient_accumulation_steps the accumulated "
        "gradient, as for one big batch)"),
    Key("clip_value", "float", 15.0, "the global norm clip_grad clips the gradients to (> 0)", minimum=0),
    Key("gradient_accumulation_steps", "int", 1, "k: average the gradients of k batches (micro-batches) and "
        "update once, as one batch of k x batch_size (lr schedule counted in updates; BatchNorm statistics move "
        "per micro-batch; a trailing partial group of an epoch is dropped)", minimum=1),
    Key("ema", "bool", False, "validate and save an exponential moving average of the weights (BN statistics "
        "included) instead of the last weights"),
    Key("ema_decay", "float", 0.9999, "EMA decay per step (ramped up as min(ema_decay, (1+n)/(10+n)) over the "
        "first updates); the average spans about 1/(1-ema_decay) steps", minimum=0),
)
_BY_NAME = {k.name: k for k in KEYS}
# MindCV keys that only make sense inside MindCV's own train.py; accepted and ignored so MindCV recipes load.
IGNORED_MINDCV_KEYS = ("dataset_download", "val_split_size", "filter_bias_and_bn", "aux_factor", "num_aug_repeats",
                       "config")


class Recipe(dict):
    """Resolved recipe: a plain dict with attribute access (``cfg.lr``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


def _closest(name: str) -> str:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1, cutoff=0.4)
    return f"; did you mean {close[0]!r}?" if close else "; see README.md, Recipe keys"


def _bad(key: Key, value: Any, why: str) -> RecipeError:
    return RecipeError(f"recipe key {key.name!r}: bad value {value!r} ({why})")


def _to_bool(key: Key, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
        return v.strip().lower() in ("true", "yes", "on", "1")
    raise _bad(key, v, "expected True or False")


def _finite(key: Key, v: Any, numbers: list) -> list:
    """``numbers`` if none is nan or +-inf (which no recipe value means: ``--lr nan`` would train on nan)."""
    if not all(math.isfinite(x) for x in numbers):
        raise _bad(key, v, "expected a finite number, not nan or inf")
    return numbers


def _to_num(key: Key, v: Any, kind: type) -> Any:
    if isinstance(v, bool):
        raise _bad(key, v, "expected a number, got a bool")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise _bad(key, v, f"expected {'an integer' if kind is int else 'a number'}") from None
    _finite(key, v, [f])
    if kind is int and f != int(f):
        raise _bad(key, v, "expected an integer")
    out = int(f) if kind is int else f
    if key.minimum is not None and out < key.minimum:
        raise _bad(key, v, f"must be >= {key.minimum:g}")
    return out


def _to_floats(key: Key, v: Any, n: tuple = ()) -> list:
    given = v
    if isinstance(v, str):
        v = yaml.safe_load(v) if v.strip().startswith("[") else [x for x in v.replace(",", " ").split()]
    if not isinstance(v, (list, tuple)):
        raise _bad(key, v, "expected a list of numbers")
    try:
        out = [float(x) for x in v]
    except (TypeError, ValueError):
        raise _bad(key, v, "expected a list of numbers") from None
    if n and len(out) not in n:
        raise _bad(key, v, f"expected {' or '.join(map(str, n))} numbers")
    return _finite(key, given, out)


def _to_mapping(key: Key, v: Any) -> dict:
    if v is None or (isinstance(v, str) and v.strip().lower() in ("", "none", "null", "{}")):
        return {}
    if isinstance(v, str):
        try:
            v = yaml.safe_load(v)
        except yaml.YAMLError:
            raise _bad(key, v, "expected a mapping such as {layout: torchvision}") from None
    if not isinstance(v, dict) or not all(isinstance(k, str) and k.isidentifier() for k in v):
        raise _bad(key, v, "expected a mapping of argument names to values, such as {layout: torchvision}")
    return dict(v)


def coerce(name: str, value: Any) -> Any:
    """Check one value against its key's declaration; returns the typed value."""
    if name not in _BY_NAME:
        raise RecipeError(f"unknown recipe key {name!r}{_closest(name)}")
    key = _BY_NAME[name]
    t = key.type
    if t == "bool":
        out = _to_bool(key, value)
    elif t == "int":
        out = _to_num(key, value, int)
    elif t == "float":
        out = _to_num(key, value, float)
    elif t == "float?":
        out = None if value is None or str(value).strip().lower() in ("none", "null", "") else \
            _to_num(key, value, float)
    elif t == "str":
        out = "" if value is None else str(value)
    elif t == "floats":
        out = _to_floats(key, value, (2,))
    elif t == "stats":
        if isinstance(value, str) and value.strip().lower() in ("auto", "imagenet"):
            out = value.strip().lower()
        else:
            try:
                out = _to_floats(key, value, (1, 3))
            except RecipeError:
                raise _bad(key, value, "expected 'auto', 'imagenet' or a list of 3 finite numbers "
                                       "(0-255 scale)") from None
    elif t == "jitter":
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            out = None
        else:
            try:
                out = float(value)
            except (TypeError, ValueError):
                out = _to_floats(key, value, (3, 4))
            else:
                _finite(key, value, [out])
    elif t == "mapping":
        out = _to_mapping(key, value)
    else:  # pragma: no cover - a declaration error
        raise AssertionError(t)
    if key.choices and out not in key.choices:
        # case-insensitive match for string choices (o0 -> O0, cpu -> CPU)
        if isinstance(out, str):
            for c in key.choices:
                if isinstance(c, str) and c.lower() == out.lower():
                    return c
        close = difflib.get_close_matches(str(out), [str(c) for c in key.choices], n=1, cutoff=0.0)
        raise _bad(key, value, f"choose one of {', '.join(map(str, key.choices))}"
                   + (f"; closest: {close[0]!r}" if close else ""))
    return out


def parse_overrides(argv: Sequence[str]) -> dict:
    """``["--lr", "0.1", "--distribute", "False", "--hflip=0"]`` -> ``{"lr": "0.1", ...}``.

    A bool key given without a value (``--distribute``) means True. Values stay strings; ``coerce`` types them.
    """
    out: dict = {}
    i = 0
    argv = list(argv)
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--") or len(tok) == 2:
            raise RecipeError(f"unexpected argument {tok!r}; overrides are written --key value")
        name, eq, val = tok[2:].partition("=")
        name = name.replace("-", "_")
        if name not in _BY_NAME:
            raise RecipeError(f"unknown recipe key {name!r}{_closest(name)}")
        if not eq:
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            if nxt is None or (nxt.startswith("--") and len(nxt) > 2 and not _is_number(nxt)):
                if _BY_NAME[name].type != "bool":
                    raise RecipeError(f"recipe key {name!r} needs a value: --{name} VALUE")
                val = "True"
            else:
                val = nxt
                i += 1
        out[name] = val
        i += 1
    return out


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


def load(path: str | None = None, overrides: Sequence[str] | dict | None = None) -> Recipe:
    """Defaults <- YAML file at ``path`` <- overrides (a ``--key value`` list or a dict); all checked."""
    raw: dict = {}
    if path:
        if not os.path.isfile(path):
            raise RecipeError(f"recipe {path!r} does not exist; see configs/ for the recipes")
        try:
            with open(path, encoding="utf-8") as f:
                raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise RecipeError(f"recipe {path!r} is not valid YAML{where}") from None
        if not isinstance(raw, dict):
            raise RecipeError(f"recipe {path!r} must be a mapping of key: value lines")
    if isinstance(overrides, dict):
        over = dict(overrides)
    else:
        over = parse_overrides(overrides or [])
    cfg = Recipe({k.name: (type(k.default)(k.default) if isinstance(k.default, (list, dict)) else k.default)
                  for k in KEYS})
    for source, values in (("recipe", raw), ("override", over)):
        for name, value in values.items():
            if name in IGNORED_MINDCV_KEYS:
                continue
            try:
                cfg[name] = coerce(str(name), value)
            except RecipeError as e:
                if source == "recipe" and path:
                    raise RecipeError(f"{path}: {e}") from None
                raise
    cfg["config"] = os.path.abspath(path) if path else ""
    _check(cfg)
    return cfg


def _check(cfg: Recipe) -> None:
    if cfg.scale[0] > cfg.scale[1] or cfg.scale[0] <= 0:
        raise RecipeError(f"recipe key 'scale': bad value {cfg.scale!r} (need 0 < min <= max)")
    if cfg.min_lr > cfg.lr:
        raise RecipeError(f"recipe key 'min_lr': bad value {cfg.min_lr!r} (must not exceed lr={cfg.lr})")
    if cfg.clip_value <= 0:
        raise RecipeError(f"recipe key 'clip_value': bad value {cfg.clip_value!r} (must be > 0)")
    if cfg.cutmix_prob > 1:
        raise RecipeError(f"recipe key 'cutmix_prob': bad value {cfg.cutmix_prob!r} (must be between 0 and 1)")
    _check_auto_augment(cfg.auto_augment)
    if cfg.label_smoothing >= 1:
        raise RecipeError(f"recipe key 'label_smoothing': bad value {cfg.label_smoothing!r} (must be < 1)")
    if not cfg.data_dir and cfg.dataset != "digits":
        raise RecipeError("recipe key 'data_dir' is empty; set it in the recipe or with --data_dir PATH")


# MindCV 0.3.0's auto-augment policies: the first dash-separated part names it, each further part is a section
# letter code followed by a number (mindcv/data/auto_augment.py parses them and asserts on anything else).
_AUTO_AUGMENT = {"randaug": ("m", "n", "w", "mstd", "mmax", "inc"), "autoaug": ("mstd",), "autoaugr": ("mstd",),
                 "3a": ("mstd",), "trivialaugwide": ("m",), "augmix": ("m", "w", "d", "a")}


def _check_auto_augment(value: str) -> None:
    """RecipeError unless ``value`` is '' or a policy string MindCV's create_transforms accepts."""
    if not value:
        return
    name, *sections = value.split("-")
    ok = name in _AUTO_AUGMENT
    for part in sections if ok else ():
        m = re.fullmatch(r"([a-z]+)(\d[\d.]*)", part)
        ok = ok and m is not None and m.group(1) in _AUTO_AUGMENT[name] and _is_number(m.group(2))
    if not ok:
        forms = "; ".join(f"{k}[-{'N|-'.join(v)}N]" for k, v in _AUTO_AUGMENT.items())
        raise RecipeError(f"recipe key 'auto_augment': bad value {value!r} (MindCV's forms: {forms}; e.g. "
                          f"randaug-m9-mstd0.5-inc1, autoaug, trivialaugwide, augmix; '' = off)")


def save(cfg: Recipe, path: str) -> str:
    """Write the resolved recipe as YAML atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return atomic_write(path, lambda f: yaml.safe_dump(dict(cfg), f, sort_keys=False), suffix=".yaml")


def keys_table() -> str:
    """Markdown table of every key (for the README)."""
    return markdown_table(("key", "type", "default", "meaning"),
                          [(f"`{k.name}`", k.type, f"`{k.default!r}`",
                            k.help + (f" ({', '.join(map(str, k.choices))})" if k.choices else "")) for k in KEYS])
