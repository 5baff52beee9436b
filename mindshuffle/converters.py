"""PyTorch ShuffleNet weights -> mindshuffle checkpoints.

- torchvision's ShuffleNet V2 (``shufflenetv2_x*.pth``) -> the ``*_tv`` models (torchvision's layout).
- the authors' ShuffleNet-Series (Megvii) V2 and V1 checkpoints (``{"state_dict": {"module.first_conv.0...``)
  -> the default models.

Only the file reading needs torch (``pip install mindshuffle[convert]``); the conversion works on numpy arrays.

What has to line up besides the names:
- BatchNorm: PyTorch's ``weight/bias/running_mean/running_var`` are MindSpore's ``gamma/beta/moving_mean/
  moving_variance``; both use eps 1e-5, and PyTorch's momentum 0.1 is MindSpore's 0.9 (mindshuffle's setting).
- Max pool: torchvision and Megvii pad 1 on each side, like mindshuffle's default (MindCV's "same" padding
  is only used for MindCV checkpoints).
- Classifier: torchvision's ``fc`` has a bias (so has the ``*_tv`` model); Megvii's ``classifier.0`` has none.
- Channel order: torchvision shuffles after each unit's concat (``channel_shuffle(x, 2)``) and takes the first
  half as the identity branch; mindshuffle fuses the shuffle into the next unit's split, taking the even
  channels as the identity branch. The two networks route every channel through the same units, but a
  channel sits at different positions; ``torchvision_stage_orders`` follows each channel through a stage in
  both networks and reorders the convolutions that create and consume it. torchvision's extra shuffle after
  the last unit before conv5 is absorbed the same way.
- Preprocessing: torchvision's weights expect RGB normalised with ImageNet's mean/std; Megvii's expect BGR
  pixels in 0-255 without normalisation. The checkpoint records it, and validation and prediction use it.
"""
from __future__ import annotations

import os

import numpy as np

from . import registry
from .checkpoints import CheckpointError, load_model_weights, save_checkpoint
from .convert_names import MINDCV_PREPROCESS, detect_layout, megvii_v1_dw_first, rename_params
from .meta import META_KEY, CheckpointMeta, normalize_preprocess
from .models.shufflenet_v1 import _BASE, _SCALES, v1_widths
from .models.shufflenet_v2 import STAGE_WIDTHS

__all__ = ["ConversionError", "load_torch_state_dict", "torch_to_mindspore_bn", "convert_torchvision_v2",
           "convert_megvii", "convert_state_dict", "convert_file", "detect_source", "torchvision_stage_orders",
           "TORCHVISION_PREPROCESS", "MEGVII_PREPROCESS"]

TORCHVISION_PREPROCESS = dict(MINDCV_PREPROCESS)
MEGVII_PREPROCESS = {"channel_order": "BGR", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "resize": 256,
                     "input_size": 224}


class ConversionError(CheckpointError):
    """A PyTorch file that is not a ShuffleNet state dict this converter knows."""


# ---------------------------------------------------------------------------------------------------------
# reading

def load_torch_state_dict(path: str) -> dict:
    """Tensors of a PyTorch checkpoint as float32 numpy arrays, with ``module.`` prefixes and
    ``num_batches_tracked`` removed; accepts a bare state dict or one under ``state_dict`` / ``model``."""
    try:
        import torch
    except ImportError:
        raise ConversionError("converting PyTorch weights needs torch: pip install 'mindshuffle[convert]' "
                              "(torch==2.13.0, CPU build)") from None
    if not os.path.isfile(path):
        raise ConversionError(f"PyTorch checkpoint {path!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, zip errors, unsafe globals ...
        raise ConversionError(f"{path!r} is not a PyTorch checkpoint mindshuffle can read "
                              f"({_torch_load_problem(path, e)})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj:
        raise ConversionError(f"{path!r} holds no state dict (a dict of tensors)")
    out = {}
    for k, v in obj.items():
        if not hasattr(v, "detach"):
            continue
        k = k[len("module."):] if k.startswith("module.") else k
        if k.endswith("num_batches_tracked"):
            continue
        out[k] = v.detach().cpu().float().numpy()
    return out


def _torch_load_problem(path: str, e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path``, in a few words (never torch's advice to load with
    ``weights_only=False``, which would run code from the file)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head.startswith((b"PK", b"\x80")):  # neither a zip (torch.save) nor a pickle (legacy torch.save)
        kind = "a MindSpore checkpoint: load it directly, no conversion needed" if path.endswith(".ckpt") else \
            "neither a zip nor a pickle file"
        return f"it is {kind}"
    text = str(e)
    if "WeightsUnpickler error:" in text:
        lines = [ln.strip() for ln in text.split("WeightsUnpickler error:", 1)[1].splitlines() if ln.strip()]
        why = next((ln for ln in lines if "weights_only" not in ln), "")
        return ("it holds Python objects other than tensors, which are not unpickled because that could run code "
                "from the file" + (f": {why}" if why else ""))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and "weights_only" not in ln]
    return f"damaged or not a checkpoint: {lines[0] if lines else type(e).__name__}"


def torch_to_mindspore_bn(sd: dict) -> dict:
    """Rename BatchNorm entries (a module with ``running_mean``) to MindSpore's names; others unchanged."""
    bn = {k[: -len(".running_mean")] for k in sd if k.endswith(".running_mean")}
    leaf = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    out = {}
    for k, v in sd.items():
        prefix, _, last = k.rpartition(".")
        out[f"{prefix}.{leaf[last]}" if prefix in bn and last in leaf else k] = v
    return out


def detect_source(sd: dict) -> str:
    """``"torchvision"`` or ``"megvii"`` from a (prefix-stripped) state dict's keys."""
    if "conv1.0.weight" in sd and any(k.startswith("stage2.0.branch1.") for k in sd):
        return "torchvision"
    if "first_conv.0.weight" in sd and any(k.startswith("features.") for k in sd):
        return "megvii"
    sample = ", ".join(sorted(sd)[:3])
    raise ConversionError(f"not a torchvision or Megvii ShuffleNet state dict (keys start {sample}, ...)")


# ---------------------------------------------------------------------------------------------------------
# torchvision ShuffleNet V2

def _tv_shuffle(z: list) -> list:
    """torchvision's channel_shuffle(x, 2) on a list of channel labels."""
    h = len(z) // 2
    out = [None] * len(z)
    out[0::2], out[1::2] = z[:h], z[h:]
    return out


def torchvision_stage_orders(channels: int, units: int) -> dict:
    """Where each channel of one stage sits in torchvision's network and in mindshuffle's.

    Every channel is created by one conv (the down-sampling unit's two branches, each unit's main branch) and
    consumed by one later unit's main branch or by whatever follows the stage; in both networks the same
    number of channels of each creator is consumed by each unit. Matching them by (creator, consumer) gives:

    - ``rows[(k, b)]``: our output channel i of unit k's branch b ("proj"/"main") is torchvision's channel
      ``rows[(k, b)][i]`` of that branch;
    - ``cols[k]``: our main-branch input j of unit k >= 1 is torchvision's branch2 input ``cols[k][j]``;
    - ``out``: our stage output channel p is torchvision's (shuffled) stage output ``out[p]``.
    """
    h = channels // 2
    created = [(0, "proj", i) for i in range(h)] + [(0, "main", i) for i in range(h)]
    # torchvision: concat, shuffle; the next unit keeps the first half, feeds the second to its branch2
    t = _tv_shuffle(created)
    tv_in, tv_used = {}, {}
    for k in range(1, units):
        tv_in[k] = t[h:]
        for f in t[h:]:
            tv_used[f] = k
        t = _tv_shuffle(t[:h] + [(k, "main", i) for i in range(h)])
    for f in t:
        tv_used[f] = units
    tv_out = t
    # mindshuffle: concat; the next unit keeps the even channels, feeds the odd ones to its main branch
    y = list(created)
    our_in, our_used = {}, {}
    for k in range(1, units):
        our_in[k] = y[1::2]
        for f in y[1::2]:
            our_used[f] = k
        y = y[0::2] + [(k, "main", i) for i in range(h)]
    for f in y:
        our_used[f] = units
    ours_to_tv = {}
    rows = {}
    for k, b in [(0, "proj")] + [(k, "main") for k in range(units)]:
        mine = sorted(((k, b, i) for i in range(h)), key=lambda f: our_used[f])
        theirs = sorted(((k, b, i) for i in range(h)), key=lambda f: tv_used[f])
        if [our_used[f] for f in mine] != [tv_used[f] for f in theirs]:
            raise ConversionError(f"channel routing of a {channels}-channel stage differs from torchvision's")
        for a, c in zip(mine, theirs):
            ours_to_tv[a] = c
        rows[(k, b)] = np.array([ours_to_tv[(k, b, i)][2] for i in range(h)])
    cols = {}
    for k in range(1, units):
        pos = {f: j for j, f in enumerate(tv_in[k])}
        cols[k] = np.array([pos[ours_to_tv[f]] for f in our_in[k]])
    pos = {f: j for j, f in enumerate(tv_out)}
    return {"rows": rows, "cols": cols, "out": np.array([pos[ours_to_tv[f]] for f in y])}


def _put_conv_bn(out: dict, ours: str, sd: dict, conv: str, bn: str, rows=None, cols=None) -> None:
    """our ``ours.conv`` / ``ours.bn`` from torchvision's ``conv`` / ``bn`` (MindSpore BN names), with the
    conv's output channels (and the BN) reordered by ``rows`` and its input channels by ``cols``."""
    w = sd[f"{conv}.weight"]
    if cols is not None and w.shape[1] == 1 and len(cols) == w.shape[0]:  # depthwise: channels are rows
        rows = cols if rows is None else rows
        cols = None
    if rows is not None:
        w = w[rows]
    if cols is not None:
        w = w[:, cols]
    out[f"{ours}.conv.weight"] = w
    for leaf in ("gamma", "beta", "moving_mean", "moving_variance"):
        v = sd[f"{bn}.{leaf}"]
        out[f"{ours}.bn.{leaf}"] = v[rows] if rows is not None else v


def _need(sd: dict, keys) -> None:
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ConversionError(f"state dict lacks {', '.join(missing[:4])}: not a torchvision ShuffleNet V2")


def convert_torchvision_v2(sd: dict) -> tuple[dict, CheckpointMeta]:
    """torchvision ShuffleNet V2 state dict (MindSpore BN names) -> (our parameters, metadata)."""
    _need(sd, ["conv1.0.weight", "conv5.0.weight", "fc.weight", "fc.bias"])
    out = {}
    _put_conv_bn(out, "conv1", sd, "conv1.0", "conv1.1")
    perm = np.arange(sd["conv1.0.weight"].shape[0])
    widths = [sd["conv1.0.weight"].shape[0]]
    for s in (2, 3, 4):
        n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith(f"stage{s}."))
        c = sd[f"stage{s}.0.branch1.2.weight"].shape[0] + sd[f"stage{s}.0.branch2.5.weight"].shape[0]
        widths.append(c)
        o = torchvision_stage_orders(c, n)
        p = f"stage{s}.0"
        _put_conv_bn(out, f"{p}.branch_proj.0", sd, f"{p}.branch1.0", f"{p}.branch1.1", cols=perm)
        _put_conv_bn(out, f"{p}.branch_proj.1", sd, f"{p}.branch1.2", f"{p}.branch1.3", rows=o["rows"][(0, "proj")],
                     cols=perm)
        _put_conv_bn(out, f"{p}.branch_main.0", sd, f"{p}.branch2.0", f"{p}.branch2.1", cols=perm)
        for k in range(n):
            p = f"stage{s}.{k}"
            if k:
                _put_conv_bn(out, f"{p}.branch_main.0", sd, f"{p}.branch2.0", f"{p}.branch2.1", cols=o["cols"][k])
            _put_conv_bn(out, f"{p}.branch_main.1", sd, f"{p}.branch2.3", f"{p}.branch2.4")
            _put_conv_bn(out, f"{p}.branch_main.2", sd, f"{p}.branch2.5", f"{p}.branch2.6",
                         rows=o["rows"][(k, "main")])
        perm = o["out"]
    _put_conv_bn(out, "conv5", sd, "conv5.0", "conv5.1", cols=perm)
    widths.append(sd["conv5.0.weight"].shape[0])
    out["classifier.weight"] = sd["fc.weight"]
    out["classifier.bias"] = sd["fc.bias"]
    width = next((w for w, ws in STAGE_WIDTHS.items() if tuple(ws) == tuple(widths)), None)
    model = "" if width is None else f"shufflenet_v2_x{str(width).replace('.', '_')}_tv"
    return out, CheckpointMeta(source="torchvision ShuffleNet V2 state dict", model=model,
                               num_classes=int(sd["fc.weight"].shape[0]), preprocess=TORCHVISION_PREPROCESS)


# ---------------------------------------------------------------------------------------------------------
# Megvii ShuffleNet-Series

def convert_megvii(sd: dict) -> tuple[dict, CheckpointMeta]:
    """Megvii ShuffleNet-Series V2 or V1 state dict (MindSpore BN names) -> (our parameters, metadata)."""
    layout = detect_layout(sd)
    if layout == "mindshuffle":
        raise ConversionError("not a Megvii ShuffleNet state dict (no first_conv/features keys)")
    out = rename_params(sd, source="megvii")
    meta = CheckpointMeta(source=f"Megvii ShuffleNet-Series {layout.upper()} checkpoint",
                          preprocess=MEGVII_PREPROCESS, num_classes=int(out["classifier.weight"].shape[0]))
    if layout == "v1":
        out = megvii_v1_dw_first(out)
        meta.v1_shuffle = "authors"
    meta.model = (_guess_v1(out) if layout == "v1" else _guess_v2(out)) or ""
    return out, meta


def _guess_v2(p: dict) -> str | None:
    try:
        widths = (p["conv1.conv.weight"].shape[0],
                  *(p[f"stage{s}.0.branch_proj.1.conv.weight"].shape[0]
                    + p[f"stage{s}.0.branch_main.2.conv.weight"].shape[0] for s in (2, 3, 4)),
                  p["conv5.conv.weight"].shape[0])
    except KeyError:
        return None
    w = next((w for w, ws in STAGE_WIDTHS.items() if tuple(ws) == widths), None)
    return None if w is None else f"shufflenet_v2_x{str(w).replace('.', '_')}"


def _guess_v1(p: dict) -> str | None:
    try:
        w = p["stage2.1.pw1.conv.weight"]
        c2 = w.shape[0] * 4
        groups = c2 // w.shape[1]
        widths = (p["conv1.conv.weight"].shape[0], c2, p["stage3.1.pw1.conv.weight"].shape[0] * 4,
                  p["stage4.1.pw1.conv.weight"].shape[0] * 4)
    except KeyError:
        return None
    if groups not in _BASE:
        return None
    for s in _SCALES:
        if v1_widths(groups, s) == widths:
            return f"shufflenet_v1_g{groups}_x{str(s).replace('.', '_')}"
    return None


# ---------------------------------------------------------------------------------------------------------
# files

def convert_state_dict(sd: dict, source: str = "auto") -> tuple[dict, CheckpointMeta]:
    """A prefix-stripped PyTorch state dict (numpy values) -> (our parameters, metadata)."""
    sd = {k[len("module."):] if k.startswith("module.") else k: np.asarray(v, np.float32) for k, v in sd.items()
          if not k.endswith("num_batches_tracked")}
    source = detect_source(sd) if source == "auto" else source
    ms_sd = torch_to_mindspore_bn(sd)
    if source == "torchvision":
        return convert_torchvision_v2(ms_sd)
    if source == "megvii":
        return convert_megvii(ms_sd)
    raise ConversionError(f"unknown source {source!r}; choose auto, torchvision or megvii")


def convert_file(src: str, dst: str, source: str = "auto", model: str | None = None, verify: bool = True,
                 preprocess: dict | None = None) -> CheckpointMeta:
    """Convert the PyTorch checkpoint ``src`` into the mindshuffle checkpoint ``dst`` (written atomically).

    ``model`` overrides the registered model name read from the shapes, ``preprocess`` the preprocessing recorded
    (e.g. a publisher's resize 232). With ``verify`` the checkpoint is loaded into that model (strict: every
    parameter must fit). Returns the checkpoint's metadata.
    """
    import mindspore as ms
    params, meta = convert_state_dict(load_torch_state_dict(src), source)
    if model:
        meta.model = model
    if preprocess:
        meta.preprocess = normalize_preprocess(preprocess)
    if not meta.model:
        raise ConversionError(f"cannot tell which ShuffleNet {src!r} holds from its shapes; pass the model name")
    meta.converted_from = os.path.basename(src)
    items = [{"name": k, "data": ms.Tensor(np.ascontiguousarray(v, np.float32))} for k, v in params.items()]
    save_checkpoint(items, dst, append_dict={META_KEY: meta.to_json()})
    if verify:
        net = registry.constructor(meta.model)(num_classes=meta.num_classes)
        net.model_name = meta.model
        try:
            load_model_weights(net, dst)
        except CheckpointError as e:
            os.remove(dst)
            raise ConversionError(f"converted weights do not fit {meta.model!r} ({e}); nothing written") from None
    return meta
