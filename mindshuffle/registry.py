"""mindshuffle's own model registry: names -> constructors, with metadata per model.

It is separate from MindCV's registry on purpose: registering here never overwrites one of MindCV's names
(MindCV 0.3.0's ``register_model`` replaces an existing name silently).

A leaf: it knows only what has been registered. The model files register themselves when ``mindshuffle.models``
is imported; ``mindshuffle.create_model`` / ``list_models`` / ``model_info`` (builder.py) import it first.
"""
from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field, asdict
from typing import Callable

__all__ = ["register_model", "list_models", "model_info", "resolve", "constructor", "ModelInfo",
           "UnknownModelError", "ModelArgumentError"]


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


def resolve(name: str) -> str:
    """The registered name of ``name`` (a name or an alias); ``UnknownModelError`` naming the closest ones."""
    if name in _CONSTRUCTORS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted(_CONSTRUCTORS) + sorted(_ALIASES)
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; closest: {', '.join(close)}" if close else f"; see list_models() ({len(_CONSTRUCTORS)} models)"
    raise UnknownModelError(f"unknown model {name!r}{hint}")


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Sorted registered names matching a shell-style pattern (``"shufflenet_v2_*"``)."""
    names = list(_CONSTRUCTORS) + (list(_ALIASES) if include_aliases else [])
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (or alias)."""
    return _INFO[resolve(name)]


def constructor(name: str) -> Callable:
    """The function registered under ``name`` (or an alias of it)."""
    return _CONSTRUCTORS[resolve(name)]
