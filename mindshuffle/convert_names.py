"""Parameter-name translation from MindCV's and the authors' (Megvii's) ShuffleNet layouts to mindshuffle's.

MindCV 0.3.0 and Megvii's ShuffleNet-Series name their cells ``first_conv``, ``features.N`` (one flat list of
units), ``conv_last`` and ``classifier``; mindshuffle names them after the paper: ``conv1``, ``stageS.i``,
``conv5``, ``classifier``, with each conv-BN pair in one ``ConvBNAct``.

ShuffleNet V2: the units compute the same thing in all three, so only names change.

ShuffleNet V1: MindCV and Megvii shuffle a unit's bottleneck by viewing its C channels as (C/g, g) and
transposing (the textbook shuffle with C/g groups); mindshuffle's ``GroupShuffle(C, g)`` views them as (g, C/g).
The two are different permutations, and unless g*g divides C they even connect different channel groups (so
no reordering of weights can make up for it): a model loading such weights switches to the authors' order (metadata ``v1_shuffle: "authors"``,
``checkpoints.set_authors_shuffle``). Megvii also applies the shuffle after the depthwise conv instead of before
it; a depthwise conv commutes with a channel permutation, so that is a reindexing (``megvii_v1_dw_first``).

MindCV >= 0.4 (PR #763) builds V1's grouped 1x1 convs as ``GroupConv`` cells holding one conv per group
(``...branch_main_1.0.convs.<i>.weight``); those are stacked back into one grouped conv (``merge_group_convs``).

MindCV pools with ``pad_mode="same"`` (pad 0 before, 1 after) where the authors pad 1 on each side, which
changes every output of a net with even-sized feature maps. A MindCV checkpoint therefore comes out of
``to_mindshuffle_names`` with metadata ``pool_same: true`` and the loader switches the model's pooling to match.
"""
from __future__ import annotations

import re

import numpy as np

from .errors import CheckpointError
from .meta import IMAGENET_PREPROCESS as MINDCV_PREPROCESS, META_KEY, CheckpointMeta, normalize_preprocess

__all__ = ["to_mindshuffle_names", "detect_layout", "rename_params", "megvii_v1_dw_first", "merge_group_convs",
           "uses_group_convs", "META_KEY", "MINDCV_PREPROCESS"]

# META_KEY and MINDCV_PREPROCESS (MindCV's and torchvision's ImageNet preprocessing) come from meta.py

# cell index inside MindCV's / Megvii's SequentialCells -> our sub-cell
_V2_MAIN = {0: "0.conv", 1: "0.bn", 3: "1.conv", 4: "1.bn", 5: "2.conv", 6: "2.bn"}
_V2_PROJ = {0: "0.conv", 1: "0.bn", 2: "1.conv", 3: "1.bn"}
_V1 = {  # (source, branch) -> {index: our cell}
    ("mindcv", "branch_main_1"): {0: "pw1.conv", 1: "pw1.bn"},
    ("mindcv", "branch_main_2"): {0: "dw.conv", 1: "dw.bn", 2: "pw2.conv", 3: "pw2.bn"},
    ("megvii", "branch_main_1"): {0: "pw1.conv", 1: "pw1.bn", 3: "dw.conv", 4: "dw.bn"},
    ("megvii", "branch_main_2"): {0: "pw2.conv", 1: "pw2.bn"},
}
_UNIT = re.compile(r"^features\.(\d+)\.(branch_main_1|branch_main_2|branch_main|branch_proj)\.(\d+)\.(\w+)$")
_STEM = re.compile(r"^(first_conv|conv_last)\.(\d+)\.(\w+)$")
_HEAD = re.compile(r"^classifier\.(?:0\.)?(weight|bias)$")


class NameMapError(CheckpointError):
    """A parameter of a MindCV/Megvii checkpoint that has no place in mindshuffle's model."""


def detect_layout(names) -> str:
    """``"mindshuffle"``, ``"v2"`` (MindCV/Megvii ShuffleNet V2 naming) or ``"v1"`` (their V1 naming)."""
    names = list(names)
    if any(n.startswith("features.") and ".branch_main_1." in n for n in names):
        return "v1"
    if any(n.startswith("features.") and ".branch_main." in n for n in names) or \
            any(n.startswith("first_conv.") for n in names):
        return "v2"
    return "mindshuffle"


def _unit_index(n: int, repeats=(4, 8, 4)) -> str:
    """Flat unit index of ``features.N`` -> ``stageS.i``."""
    i = n
    for s, r in enumerate(repeats):
        if i < r:
            return f"stage{s + 2}.{i}"
        i -= r
    raise NameMapError(f"features.{n} is beyond the {sum(repeats)} units of a ShuffleNet {repeats} stages")


def rename_params(params: dict, source: str = "mindcv", repeats=(4, 8, 4)) -> dict:
    """Rename MindCV/Megvii ShuffleNet V2/V1 parameters (MindSpore BN names) to mindshuffle's; values unchanged.

    ``source`` is ``"mindcv"`` or ``"megvii"`` (they differ in V1's branch indices and the classifier's
    ``classifier.0``). Entries that are not weights (epoch, optimizer state) are passed through.
    """
    out = {}
    for name, value in params.items():
        m = _UNIT.match(name)
        if m:
            n, branch, idx, leaf = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            table = (_V2_MAIN if branch == "branch_main" else _V2_PROJ if branch == "branch_proj"
                     else _V1[(source, branch)])
            if idx not in table:
                raise NameMapError(f"{name}: no cell {idx} in a ShuffleNet {branch}")
            sub = table[idx]
            prefix = f"{_unit_index(n, repeats)}."
            if branch in ("branch_main", "branch_proj"):
                prefix += branch + "."
            out[prefix + sub + "." + leaf] = value
            continue
        m = _STEM.match(name)
        if m:
            cell = "conv1" if m.group(1) == "first_conv" else "conv5"
            kind = {0: "conv", 1: "bn"}.get(int(m.group(2)))
            if kind is None:
                raise NameMapError(f"{name}: no cell {m.group(2)} in {m.group(1)}")
            out[f"{cell}.{kind}.{m.group(3)}"] = value
            continue
        m = _HEAD.match(name)
        if m:
            out[f"classifier.{m.group(1)}"] = value
            continue
        out[name] = value
    return out


def _arr(x):
    return np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x)


def megvii_v1_dw_first(params: dict) -> dict:
    """Megvii's V1 unit runs its depthwise conv before the shuffle, MindCV and mindshuffle after; a depthwise
    conv commutes with a channel permutation, so reindex its channels by the authors' shuffle."""
    out = dict(params)
    for key in [k for k in params if k.endswith(".pw2.conv.weight")]:
        u = key[: -len(".pw2.conv.weight")]
        mid = _arr(params[f"{u}.dw.conv.weight"]).shape[0]
        g = mid // _arr(params[key]).shape[1]
        if g <= 1:
            continue
        order = np.arange(mid).reshape(mid // g, g).T.reshape(-1)   # shuffled channel j = channel order[j]
        for leaf in ("conv.weight", "bn.gamma", "bn.beta", "bn.moving_mean", "bn.moving_variance"):
            out[f"{u}.dw.{leaf}"] = np.take(_arr(params[f"{u}.dw.{leaf}"]), order, axis=0)
    return out


_GROUP_CONV = re.compile(r"^(features\.\d+\.branch_main_[12]\.\d+)\.convs\.(\d+)\.(weight|bias)$")


def uses_group_convs(names) -> bool:
    """True for MindCV >= 0.4's ShuffleNet V1 layout (PR #763): each grouped 1x1 conv is a ``GroupConv`` holding
    one ``nn.Conv2d`` per group (``features.N.branch_main_1.0.convs.<i>.weight``)."""
    return any(_GROUP_CONV.match(n) for n in names)


def merge_group_convs(params: dict) -> dict:
    """MindCV's per-group convs -> one grouped conv each: ``GroupConv`` feeds input group i to ``convs.i`` and
    concatenates the outputs in order, which is a grouped conv whose output channels are the per-group
    weights stacked along the output-channel axis in index order."""
    out, groups = {}, {}
    for name, value in params.items():
        m = _GROUP_CONV.match(name)
        if m:
            groups.setdefault((m.group(1), m.group(3)), {})[int(m.group(2))] = value
        else:
            out[name] = value
    for (prefix, leaf), parts in groups.items():
        if sorted(parts) != list(range(len(parts))):
            raise NameMapError(f"{prefix}.convs: groups {sorted(parts)} are not 0..{len(parts) - 1}")
        out[f"{prefix}.{leaf}"] = np.concatenate([_arr(parts[i]) for i in range(len(parts))], axis=0)
    return out


def convert_mindcv(params: dict, source: str = "mindcv") -> tuple[dict, str]:
    """(renamed and, for V1, reordered parameters, layout) of a MindCV (or Megvii, MindSpore-named) dict.
    MindCV >= 0.4's per-group V1 convs are merged first (``merge_group_convs``)."""
    layout = detect_layout(params)
    if layout == "mindshuffle":
        return dict(params), layout
    if layout == "v1" and uses_group_convs(params):
        params = merge_group_convs(params)
    out = rename_params(params, source)
    if layout == "v1" and source == "megvii":
        out = megvii_v1_dw_first(out)
    return out, layout


def to_mindshuffle_names(ckpt: dict, net=None) -> dict:
    """Return ``ckpt`` with its keys in mindshuffle's naming.

    mindshuffle's own checkpoints pass through. MindCV ShuffleNet V2/V1 checkpoints are renamed (and V1's
    bottleneck channels reordered); the result carries metadata (``META_KEY``) saying it came from MindCV,
    uses "same" pooling and MindCV's ImageNet preprocessing, so that the loader configures ``net`` to match.
    """
    out, layout = convert_mindcv(ckpt, "mindcv")
    if layout == "mindshuffle":
        return out
    import mindspore as ms
    for k, v in list(out.items()):
        if isinstance(v, np.ndarray):
            out[k] = ms.Parameter(ms.Tensor(v), name=k)
    meta = CheckpointMeta.from_json(ckpt.get(META_KEY))   # averaged MindCV weights carry ours
    per_group = " (per-group GroupConv layout, MindCV >= 0.4)" if uses_group_convs(ckpt) else ""
    meta.source = meta.source or f"MindCV ShuffleNet {layout.upper()} checkpoint{per_group}"
    meta.pool_same = True
    if layout == "v1":
        meta.v1_shuffle = "authors"
    meta.preprocess = meta.preprocess or normalize_preprocess(MINDCV_PREPROCESS)
    out[META_KEY] = meta.to_json()
    return out
