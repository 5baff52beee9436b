"""Params, FLOPs and memory access cost (MAC) per layer and in total.

ShuffleNet V2's point is that FLOPs are an indirect metric: two layers of equal FLOPs can differ in memory
access cost (MAC) and so in speed. This module counts both, per layer, for any ``nn.Cell``:

    from mindshuffle.research.analysis import profile_model
    prof = profile_model("shufflenet_v2_x1_0", image_size=224)
    print(prof.table())                  # layer, kind, output shape, params, FLOPs, MAC, MAC / G1 bound
    prof.flops, prof.params, prof.mac    # totals (FLOPs = multiply-adds, per image)

How it works: one forward pass of a single image in PyNative mode with a forward hook on every leaf cell
(a cell without child cells) records each leaf's real input and output shapes, so the count follows whatever
the model does (padding modes, strides, groups, SE blocks, extra depthwise convs) without a shape model of
its own. A conv that its parent applies with an op of its own (``op(x, self.conv.weight)``, e.g. a native
kernel) instead of calling it is counted on the parent's input with ``conv_output_shape``. The previous
execution mode is restored afterwards.

Counting rules (per image):
- FLOPs are multiply-adds of convolutions and fully connected layers, as the paper counts them:
  conv ``H_out * W_out * C_out * (C_in / g) * k_h * k_w``; dense ``in * out``. Biases, BatchNorm,
  activations, pooling, shuffles and element-wise ops count 0 FLOPs.
- MAC (memory access cost, in elements) is what a layer reads and writes when the cache holds everything:
  its input feature maps + its output feature maps + its parameters (weights, bias, BN statistics). For a
  1x1 conv this is the paper's ``hw(c1 + c2) + c1*c2``; for a group conv ``... + c1*c2/g`` (Eq. 2).
  No-op cells (Identity, Dropout at inference) have MAC 0.
- For every 1x1, stride-1, ungrouped conv the paper's G1 lower bound ``MAC >= 2*sqrt(hw*B) + B/hw``
  (``B = hw*c1*c2`` FLOPs) is given, with ``balance = MAC / bound`` (1.0 means c1 == c2).
- Ops called inside ``construct`` (concat, split, mean, add, mul) are not cells and are not listed; they have
  no parameters and no multiply-adds. Wrap one in a small cell to have its MAC listed.
- ``params`` counts trainable parameters of the whole network (the same as ``trainable_params()``).
"""
from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass, field, asdict

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from ..fileio import atomic_text, markdown_table

__all__ = ["LayerStat", "Profile", "profile_model", "profile_cell", "conv_flops", "conv_mac", "mac_lower_bound",
           "relative_spread", "conv_output_shape"]

_NOOPS = (nn.Identity, nn.Dropout)


def conv_flops(c_in: int, c_out: int, h_out: int, w_out: int, kernel=(1, 1), groups: int = 1) -> int:
    """Multiply-adds of a 2-D convolution producing a ``c_out x h_out x w_out`` map."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return h_out * w_out * c_out * (c_in // groups) * kh * kw


def conv_mac(c_in: int, h_in: int, w_in: int, c_out: int, h_out: int, w_out: int, kernel=(1, 1),
             groups: int = 1, bias: bool = False) -> int:
    """Input map + output map + weights (+ bias): ``hw(c1 + c2) + c1*c2/g`` for a stride-1 1x1 conv."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    weights = c_out * (c_in // groups) * kh * kw + (c_out if bias else 0)
    return c_in * h_in * w_in + c_out * h_out * w_out + weights


def mac_lower_bound(h: int, w: int, flops: float) -> float:
    """The paper's Eq. 1: a 1x1 conv of ``flops`` multiply-adds on an ``h x w`` map has
    ``MAC >= 2*sqrt(hw*B) + B/hw``, reached when its input and output channel counts are equal."""
    hw = h * w
    return 2.0 * math.sqrt(hw * flops) + flops / hw


def relative_spread(values) -> float:
    """``(max - min) / max`` of a list of numbers: 0.0 when all are equal (used for equal-FLOPs checks)."""
    values = [float(v) for v in values]
    top = max(values)
    return 0.0 if top == 0 else (top - min(values)) / top


@dataclass
class LayerStat:
    """One call of a leaf cell."""

    name: str
    type: str
    input_shape: tuple
    output_shape: tuple
    params: int
    flops: int
    mac: int
    mac_bound: float | None = None  # G1 lower bound (1x1, stride-1, ungrouped convs only)
    kind: str = ""                  # finer type: "Conv2d 1x1", "Conv2d 3x3 dw /2", "Conv2d 1x1 g3", ...

    @property
    def balance(self) -> float | None:
        """MAC divided by its G1 lower bound (1.0: balanced, c1 == c2)."""
        return None if not self.mac_bound else self.mac / self.mac_bound


@dataclass
class Profile:
    """Per-layer statistics and totals of one network at one input size (counts are per image)."""

    model: str
    input_shape: tuple
    layers: list = field(default_factory=list)
    params: int = 0

    @property
    def flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    @property
    def mac(self) -> int:
        return sum(layer.mac for layer in self.layers)

    def by_type(self) -> dict:
        """``{layer kind: {"count", "flops", "mac", "params"}}`` - where the FLOPs and the MAC are (convs split
        by kernel, groups and stride: "Conv2d 1x1", "Conv2d 3x3 dw /2", ...)."""
        out: dict = {}
        for layer in self.layers:
            d = out.setdefault(layer.kind or layer.type, dict(count=0, flops=0, mac=0, params=0))
            d["count"] += 1
            d["flops"] += layer.flops
            d["mac"] += layer.mac
            d["params"] += layer.params
        return out

    def by_module(self, level: int = 1) -> dict:
        """Totals per top-level module (``level`` name components: conv1, stage2, ... or stage2.0, ...),
        in network order: ``{name: {"count", "flops", "mac", "params"}}``."""
        out: dict = {}
        for layer in self.layers:
            key = ".".join(layer.name.split("#")[0].split(".")[:level])
            d = out.setdefault(key, dict(count=0, flops=0, mac=0, params=0))
            d["count"] += 1
            d["flops"] += layer.flops
            d["mac"] += layer.mac
            d["params"] += layer.params
        return out

    def summary(self) -> dict:
        return dict(model=self.model, input_shape=list(self.input_shape), params=self.params, flops=self.flops,
                    mac=self.mac, params_M=self.params / 1e6, flops_M=self.flops / 1e6, mac_M=self.mac / 1e6)

    def rows(self) -> list:
        """Table rows as dicts (what ``to_csv`` writes)."""
        out = []
        for layer in self.layers:
            d = asdict(layer)
            d["input_shape"] = _fmt_shape(layer.input_shape)
            d["output_shape"] = _fmt_shape(layer.output_shape)
            d["mac_bound"] = "" if layer.mac_bound is None else round(layer.mac_bound)
            d["balance"] = "" if layer.balance is None else round(layer.balance, 3)
            out.append(d)
        return out

    def table(self, markdown: bool = False, min_flops: int = 0) -> str:
        """Per-layer table plus a totals line. ``min_flops`` hides smaller layers (totals stay complete)."""
        head = ["layer", "type", "output", "params", "MFLOPs", "MAC (K)", "MAC/bound"]
        body = []
        for layer in self.layers:
            if layer.flops < min_flops:
                continue
            bal = "" if layer.balance is None else f"{layer.balance:.2f}"
            body.append([layer.name, layer.kind or layer.type, _fmt_shape(layer.output_shape), f"{layer.params:,}",
                         f"{layer.flops / 1e6:.3f}", f"{layer.mac / 1e3:.1f}", bal])
        total = ["total", "", "x".join(map(str, self.input_shape)) + " in", f"{self.params:,}",
                 f"{self.flops / 1e6:.3f}", f"{self.mac / 1e3:.1f}", ""]
        return _render(head, body, total, markdown)

    def to_csv(self, path: str) -> None:
        """Write the per-layer rows (and a totals row) as CSV, atomically."""
        rows = self.rows()
        keys = ["name", "type", "kind", "input_shape", "output_shape", "params", "flops", "mac", "mac_bound", "balance"]
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        w.writerow(dict(name="total", type="", input_shape="x".join(map(str, self.input_shape)), output_shape="",
                        params=self.params, flops=self.flops, mac=self.mac, mac_bound="", balance=""))
        write_text_atomic(path, buf.getvalue())


def _fmt_shape(shape) -> str:
    """(58, 28, 28) -> "58x28x28"; several outputs -> "58x28x28 + 58x28x28"."""
    if shape and isinstance(shape[0], tuple):
        return " + ".join(_fmt_shape(s) for s in shape)
    return "x".join(map(str, shape))


def _render(head, body, total, markdown: bool) -> str:
    if markdown:
        return markdown_table(head, body + [[f"**{c}**" if c else "" for c in total]], align="lll" + "r" * len(head))
    rows = [head] + body + [total]
    widths = [max(len(r[k]) for r in rows) for k in range(len(head))]

    def fmt(r):
        return "  ".join(c.ljust(w) if k < 3 else c.rjust(w) for k, (c, w) in enumerate(zip(r, widths)))

    sep = "-" * len(fmt(head))
    return "\n".join([fmt(head), sep] + [fmt(r) for r in body] + [sep, fmt(total)])


def write_text_atomic(path: str, text: str) -> None:
    """``fileio.atomic_text`` into a folder made if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_text(path, text)


# ---------------------------------------------------------------------------------------------------------
# per-layer rules

def _shape(x) -> tuple:
    return tuple(int(d) for d in x.shape)


def _tensors(obj) -> list:
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    return []


def _numel(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _param_counts(cell: nn.Cell) -> tuple:
    """(trainable, stored) parameter elements of the cell itself (stored includes BN moving statistics)."""
    trainable = sum(_numel(p.shape) for p in cell.trainable_params(recurse=False))
    stored = sum(_numel(p.shape) for p in cell.get_parameters(expand=False))
    return trainable, stored


def _layer_stat(name: str, cell: nn.Cell, in_shapes: list, out_shapes: list, counts: tuple) -> LayerStat:
    """Statistics of one call of a leaf cell from its input and output shapes (with the batch axis)."""
    in_shape = in_shapes[0] if in_shapes else ()
    out_shape = out_shapes[0] if len(out_shapes) == 1 else tuple(out_shapes)
    batch = max(1, in_shape[0] if in_shape else 1)
    in_elems = sum(_numel(t) for t in in_shapes) // batch
    out_elems = sum(_numel(t) for t in out_shapes) // batch
    trainable, stored = counts
    flops, bound = 0, None
    kind = type(cell).__name__
    if isinstance(cell, nn.Conv2d):
        c_out, h_out, w_out = out_shapes[0][1:]
        c_in = in_shape[1]
        k = cell.kernel_size
        flops = conv_flops(c_in, c_out, h_out, w_out, k, cell.group)
        kind = f"Conv2d {k[0]}x{k[1]}"
        if cell.group > 1:
            kind += " dw" if cell.group == c_in == c_out else f" g{cell.group}"
        if in_shape[2] != h_out or in_shape[3] != w_out:
            kind += f" /{round(in_shape[2] / h_out)}"
        if tuple(k) == (1, 1) and cell.group == 1 and in_shape[2:] == (h_out, w_out):
            bound = mac_lower_bound(h_out, w_out, flops)
        mac = in_elems + out_elems + stored
    elif isinstance(cell, nn.Dense):
        rows = _numel(in_shape[1:-1]) if len(in_shape) > 2 else 1
        flops = rows * cell.in_channels * cell.out_channels
        mac = in_elems + out_elems + stored
    elif isinstance(cell, _NOOPS):
        mac = 0
    else:
        mac = in_elems + out_elems + stored
    return LayerStat(name, type(cell).__name__, in_shape[1:], _drop_batch(out_shape), trainable, int(flops),
                     int(mac), bound, kind)


def _drop_batch(shape):
    if shape and isinstance(shape[0], tuple):
        return tuple(s[1:] for s in shape)
    return shape[1:]


def _pair(v, n: int = 2) -> tuple:
    v = (v,) * n if isinstance(v, int) else tuple(v)
    return v[-n:]


def conv_output_shape(conv: nn.Conv2d, in_shape: tuple) -> tuple:
    """(N, C_out, H_out, W_out) of ``conv`` on an (N, C, H, W) input, from its kernel, stride, padding and
    dilation (used for convs whose weights a parent cell applies with an op of its own)."""
    n, _, h, w = in_shape
    kh, kw = _pair(conv.kernel_size)
    sh, sw = _pair(conv.stride)
    dh, dw = _pair(conv.dilation)
    mode = str(conv.pad_mode).lower()
    if mode == "same":
        return n, conv.out_channels, -(-h // sh), -(-w // sw)
    pad = (0, 0, 0, 0) if mode == "valid" else _pair(conv.padding, 4) if not isinstance(conv.padding, int) \
        else (conv.padding,) * 4
    h_out = (h + pad[0] + pad[1] - dh * (kh - 1) - 1) // sh + 1
    w_out = (w + pad[2] + pad[3] - dw * (kw - 1) - 1) // sw + 1
    return n, conv.out_channels, h_out, w_out


def _weight_users(cell: nn.Cell) -> list:
    """Direct Conv2d/Dense children whose weight the cell's own code reads (``self.<child>.weight``): a cell
    may apply a child's weights with an op of its own (a native kernel) instead of calling the child."""
    import inspect

    children = [(a, c) for a, c in cell.name_cells().items() if isinstance(c, (nn.Conv2d, nn.Dense))]
    if not children:
        return []
    try:
        src = inspect.getsource(type(cell))
    except (OSError, TypeError):
        return []
    return [(a, c) for a, c in children if f"self.{a}.weight" in src]


def profile_cell(net: nn.Cell, input_shape=(3, 224, 224), name: str = "") -> Profile:
    """Profile ``net`` on one zero image of ``input_shape`` (C, H, W) (or a full (1, C, H, W) shape).

    Runs one forward pass in PyNative mode with forward hooks on the leaf cells, in inference mode
    (``set_train(False)``); the network's training flag and the context's execution mode are restored.
    A Conv2d/Dense child that its parent did not call during the parent's call, although the parent's code
    reads its weight (a parent applying the weights with a native op of its own), is counted as if called on
    the parent's input.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1,) + shape
    if shape[0] != 1:
        raise ValueError(f"profile one image at a time; got batch {shape[0]} in {shape}")
    records: list = []
    handles = []
    calls: dict = {}
    # parameter counts are taken before the pass: reading a parameter's flags inside a PyNative hook waits
    # for the asynchronous op pipeline each time (seconds per model)
    named = [(n, c) for n, c in net.cells_and_names() if n]
    leaves = [(n, c) for n, c in named if not c.name_cells()] or [(type(net).__name__, net)]
    counts = {id(c): _param_counts(c) for _, c in leaves}
    for cname, cell in leaves:
        def hook(c, args, output, _n=cname):
            calls[id(c)] = calls.get(id(c), 0) + 1
            ins = [_shape(t) for t in _tensors(args)]
            outs = [_shape(t) for t in _tensors(output)]
            records.append(_layer_stat(_n, c, ins, outs, counts[id(c)]))

        handles.append(cell.register_forward_hook(hook))
    for pname, parent in named:
        users = _weight_users(parent)
        if not users:
            continue
        for _, child in users:
            counts.setdefault(id(child), _param_counts(child))
        frames: list = []

        def pre(c, args, _users=users, _frames=frames):
            _frames.append((len(records), [calls.get(id(ch), 0) for _, ch in _users]))

        def post(c, args, output, _users=users, _frames=frames, _p=pname):
            at, before = _frames.pop()
            ins = [_shape(t) for t in _tensors(args)]
            for (attr, ch), n0 in zip(_users, before):
                if calls.get(id(ch), 0) == n0 and ins and isinstance(ch, nn.Conv2d) and len(ins[0]) == 4:
                    out = conv_output_shape(ch, ins[0])
                    records.insert(at, _layer_stat(f"{_p}.{attr}", ch, ins[:1], [out], counts[id(ch)]))
                    at += 1

        handles.append(parent.register_forward_pre_hook(pre))
        handles.append(parent.register_forward_hook(post))
    mode = ms.get_context("mode")
    was_training = net.training
    try:
        ms.set_context(mode=ms.PYNATIVE_MODE)
        net.set_train(False)
        net(Tensor(np.zeros(shape, np.float32)))
    finally:
        for h in handles:
            h.remove()
        net.set_train(was_training)
        ms.set_context(mode=mode)
    seen_calls: dict = {}
    for r in records:  # a cell called twice gets numbered rows
        k = seen_calls.get(r.name, 0)
        seen_calls[r.name] = k + 1
        if k:
            r.name = f"{r.name}#{k + 1}"
    params = sum(_numel(p.shape) for p in net.trainable_params())
    return Profile(model=name or type(net).__name__, input_shape=shape[1:], layers=records, params=params)


def profile_model(name: str, image_size: int = 224, num_classes: int = 1000, in_channels: int = 3,
                  **kwargs) -> Profile:
    """Build the registered model ``name`` and profile it at ``image_size`` px (see ``profile_cell``).
    Unknown names raise ``registry.UnknownModelError``."""
    from ..builder import create_model

    net = create_model(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    return profile_cell(net, (in_channels, image_size, image_size), name=name)
