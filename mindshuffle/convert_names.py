"""Parameter-name translation between MindCV's ShuffleNet checkpoints and mindshuffle's models.

(A first cut that passes mindshuffle's own names through; MindCV's names are mapped by the weights issue.)
"""
from __future__ import annotations

__all__ = ["to_mindshuffle_names"]


def to_mindshuffle_names(ckpt: dict, net) -> dict:
    """Return ``ckpt`` with its keys in mindshuffle's naming for ``net``."""
    return dict(ckpt)
