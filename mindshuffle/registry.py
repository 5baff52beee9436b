"""mindshuffle's own model registry: names -> constructors, with metadata per model.

It is separate from MindCV's registry on purpose: registering here never overwrites one of MindCV's names
(MindCV 0.3.0's ``register_model`` replaces an existing name silently).
"""
from __future__ import annotations

import difflib
import fnmatch
import json
from dataclasses import dataclass, field, asdict
from typing import Callable

from .pretrained import hand_placed_path, pretrained_checkpoint

__all__ = ["register_model", "create_model", "list_models", "model_info", "ModelInfo", "UnknownModelError",
           "ModelArgumentError"]


class ModelArgumentError(TypeError, ValueError):
    """A keyword argument the model does not take, or a value it refuses (``create_model(..., **kwargs)``)."""


class UnknownModelError(KeyError):
    """A model name that is not registered; the message names the closest registered names."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass
class ModelInfo:
    """What a user may want to know about a registered model before building it."""

    name: str
    family: str = ""
    params: int | None = None              # trainable parameters with 1000 classes
    flops: float | None = None             # multiply-adds at 224 px, in millions
    input_size: tuple = (3, 224, 224)
    top1: float | None = None              # reported ImageNet-1k top-1 (%)
    top5: float | None = None
    source: str = ""                       # where the reported accuracy comes from
    paper: str = ""
    aliases: tuple = ()
    classifier: str = "classifier"         # name of the classifier cell (swapped when fine-tuning)
    first_conv: str = "conv1.conv"         # name of the first conv (adapted for in_channels != 3)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


_CONSTRUCTORS: dict[str, Callable] = {}
_INFO: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def register_model(fn: Callable | None = None, *, name: str | None = None, **info) -> Callable:
    """Register a constructor ``fn(num_classes=..., in_channels=..., **kwargs) -> nn.Cell``.

    Usable bare (``@register_model``) or with metadata (``@register_model(params=..., flops=..., aliases=(...))``).
    Registering a name twice is an error, never a silent overwrite.
    """

    def wrap(f: Callable) -> Callable:
        key = name or f.__name__
        aliases = tuple(info.pop("aliases", ()))
        for n in (key, *aliases):
            if n in _CONSTRUCTORS or n in _ALIASES:
                raise ValueError(f"model name {n!r} is already registered in mindshuffle")
        _CONSTRUCTORS[key] = f
        _INFO[key] = ModelInfo(name=key, aliases=aliases, **info)
        for a in aliases:
            _ALIASES[a] = key
        return f

    if fn is not None:
        return wrap(fn)
    return wrap


def _resolve(name: str) -> str:
    _ensure_loaded()
    if name in _CONSTRUCTORS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted(_CONSTRUCTORS) + sorted(_ALIASES)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else f"; see list_models() ({len(_CONSTRUCTORS)} models)"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def _ensure_loaded() -> None:
    # importing the model files registers their constructors
    from . import models  # noqa: F401


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Sorted registered names matching a shell-style pattern (``"shufflenet_v2_*"``)."""
    _ensure_loaded()
    names = list(_CONSTRUCTORS) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (or alias)."""
    return _INFO[_resolve(name)]


def pretrained_path(name: str) -> str:
    """Where a checkpoint placed by hand for ``pretrained=True`` is found (it wins over any download):
    ``<cache>/checkpoints/<name>.ckpt``, the cache being ``$MINDSHUFFLE_HOME``, else ``$XDG_CACHE_HOME/mindshuffle``,
    else ``~/.cache/mindshuffle``."""
    return hand_placed_path(_resolve(name))


def _recordable(kwargs: dict) -> dict:
    """The constructor arguments a checkpoint can record (JSON values) so that loaders rebuild the same net."""
    out = {}
    for k, v in kwargs.items():
        v = list(v) if isinstance(v, tuple) else v
        try:
            json.dumps(v)
        except (TypeError, ValueError):
            continue
        out[k] = v
    return out


def create_model(name: str, num_classes: int = 1000, pretrained: bool | str = False, checkpoint_path: str = "",
                 in_channels: int = 3, features_only: bool = False, out_indices=(0, 1, 2, 3), **kwargs):
    """Build a registered model.

    Args:
        name: a registered name or alias (``list_models()``).
        num_classes: classifier outputs.
        pretrained: ``True`` loads the model's default published weights (``weights_table``), a tag
            (``"mindcv"``, ``"mindcv-910v2"``, ``"torchvision"``) picks one: downloaded once into the cache,
            checked, then used offline; a file placed by hand at ``pretrained_path(name)`` wins.
        checkpoint_path: load these weights (mindshuffle's or MindCV's parameter names). With a different
            ``num_classes`` the classifier is left newly initialised (fine-tuning).
        in_channels: input image channels.
        features_only: return a backbone whose output is the tuple of stage feature maps
            (strides 4, 8, 16, 32) selected by ``out_indices``.
        **kwargs: passed to the model class (e.g. ``layout="torchvision"``, ``drop_rate=0.2``).
    """
    key = _resolve(name)
    try:
        net = _CONSTRUCTORS[key](num_classes=num_classes, in_channels=in_channels, **kwargs)
    except (TypeError, ValueError) as e:
        if not kwargs:
            raise
        raise ModelArgumentError(f"model {key!r}: {str(e).split('() ', 1)[-1]}") from None
    net.model_name = key
    net.model_kwargs = _recordable(kwargs)
    ckpt = checkpoint_path
    if pretrained and not ckpt:
        ckpt = pretrained_checkpoint(key, pretrained)
    if ckpt:
        from .checkpoints import load_model_weights
        load_model_weights(net, ckpt)
    if features_only:
        from .features import FeatureExtractor
        net = FeatureExtractor(net, out_indices)
    return net
