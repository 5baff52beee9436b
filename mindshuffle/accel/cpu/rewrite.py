"""The explicit rewrite: swap a built network's cells to their accelerated subclasses (``cells.py``) in place,
and back. Parameters, their names and the checkpoint layout do not change; only the class of each cell (and the
operators it holds) does."""
from __future__ import annotations

from mindspore import nn

from ...layers import ChannelSplit, ConvBNAct
from ...models.base import ClassifierNet
from ...models.shufflenet_v2 import ShuffleNetV2, ShuffleUnitV2
from .cells import AccelChannelSplit, AccelConvBNAct, AccelHead, AccelShuffleNetV2, AccelShuffleUnitV2

__all__ = ["swap_in", "swap_out", "accel_class"]

_SWAPS = {ConvBNAct: AccelConvBNAct, ChannelSplit: AccelChannelSplit, ShuffleUnitV2: AccelShuffleUnitV2,
          ShuffleNetV2: AccelShuffleNetV2}
_HEADS: dict = {}


def accel_class(cls: type) -> type | None:
    """The accelerated class of ``cls``: its own (``cells.py``) or, for any other ``ClassifierNet``, the class
    with the accelerated pooled head mixed in; None for a cell that has none."""
    if cls in _SWAPS:
        return _SWAPS[cls]
    if issubclass(cls, ClassifierNet):
        if cls not in _HEADS:
            _HEADS[cls] = type(f"Accel{cls.__name__}", (AccelHead, cls), {"plain": cls, "__module__": __name__})
        return _HEADS[cls]
    return None


def _clear_compiled(net: nn.Cell) -> None:
    """A graph compiled before the swap must not be reused."""
    for _, cell in net.cells_and_names():
        cache = getattr(cell, "compile_cache", None)
        if cache is not None:
            cache.clear()


def swap_in(net: nn.Cell, lib: str) -> nn.Cell:
    """Swap every cell of ``net`` that has an accelerated class to it and make its operators from ``lib``
    (sub-cells first, so that a network sees its accelerated units). A second call re-reads the state
    (e.g. BatchNorm folded since)."""
    cells = [cell for _, cell in net.cells_and_names()]
    for cell in cells:
        if getattr(type(cell), "plain", None) is None:
            new = accel_class(type(cell))
            if new is not None:
                cell.__class__ = new
    for cell in reversed(cells):
        if getattr(type(cell), "plain", None) is not None:
            cell.accel_init(lib)
    _clear_compiled(net)
    return net


def swap_out(net: nn.Cell) -> nn.Cell:
    """Undo ``swap_in``: every accelerated cell back to its plain class (export runs the plain model)."""
    for _, cell in net.cells_and_names():
        plain = getattr(type(cell), "plain", None)
        if plain is not None:
            cell.__class__ = plain
    _clear_compiled(net)
    return net
