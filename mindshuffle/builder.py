"""Building a registered model: construct it, record its arguments, load its weights (a checkpoint or the
published ones), wrap it as a feature backbone. The registry (a leaf) only knows names; this is where the model
files are imported (which registers them) and where weights come in (timm's ``_builder`` beside ``_registry``).
"""
from __future__ import annotations

import importlib
import json

from . import registry
from .pretrained import hand_placed_path, pretrained_checkpoint
from .registry import ModelArgumentError, ModelInfo

__all__ = ["create_model", "list_models", "model_info", "pretrained_path"]


def _register_models() -> None:
    """Import the model files (each registers its models); MindSpore is imported then, not at ``import mindshuffle``."""
    importlib.import_module(f"{__package__}.models")


def list_models(pattern: str = "*", include_aliases: bool = False) -> list[str]:
    """Sorted registered names matching a shell-style pattern (``"shufflenet_v2_*"``)."""
    _register_models()
    return registry.list_models(pattern, include_aliases)


def model_info(name: str) -> ModelInfo:
    """Metadata of a registered model (or alias): params, FLOPs, published accuracy and its source."""
    _register_models()
    return registry.model_info(name)


def pretrained_path(name: str) -> str:
    """Where a checkpoint placed by hand for ``pretrained=True`` is found (it wins over any download):
    ``<cache>/checkpoints/<name>.ckpt``, the cache being ``$MINDSHUFFLE_HOME``, else ``$XDG_CACHE_HOME/mindshuffle``,
    else ``~/.cache/mindshuffle``."""
    _register_models()
    return hand_placed_path(registry.resolve(name))


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
    _register_models()
    key = registry.resolve(name)
    try:
        net = registry.constructor(key)(num_classes=num_classes, in_channels=in_channels, **kwargs)
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
        from .checkpoints import load_model_weights  # MindSpore's checkpoint reader: imported when used
        load_model_weights(net, ckpt)
    if features_only:
        from .features import FeatureExtractor
        net = FeatureExtractor(net, out_indices)
    return net
