"""The paper's four guideline experiments (ShuffleNet V2, Sec. 2, Tables 1-4), rebuilt as MindSpore networks and
timed on the current device.

- G1 (Table 1) equal channel width minimises MAC: ``depth`` (10) blocks of two 1x1 convs (c1 -> c2 -> c1),
  c1:c2 of 1:1, 1:2, 1:6, 1:12 at equal FLOPs.
- G2 (Table 2) excessive group convolution increases MAC: 10 1x1 group convs (c -> c) with g = 1, 2, 4, 8 at
  equal FLOPs (c grows with sqrt(g)).
- G3 (Table 3) network fragmentation reduces parallelism: 10 blocks of 1 to 4 1x1 convs in series or in
  parallel at equal FLOPs.
- G4 (Table 4) element-wise ops are not free: a ResNet bottleneck (1x1, 3x3, 1x1) with and without ReLU and
  shortcut (equal FLOPs: ReLU and the add have no multiply-adds).

Each experiment has three widths (the paper's x1, x2, x4 columns). A setting's networks are built, their
FLOPs counted by ``analysis.profile_cell`` and checked equal within 1% per column (``UnequalFlopsError``
otherwise), then timed in the current mode (use graph mode), the settings of a column round-robin
(``benchmark.measure_interleaved``), reporting the median or the fastest of the repeats.

    from mindshuffle.research.guidelines import run_experiment, format_table
    res = run_experiment("G1", batch_size=8, image_size=56)
    print(format_table(res))

Our choices where the paper is silent or cannot be followed literally (the tool's README section says it too):
- Convolutions have no BN, bias or activation (the paper times the conv kernels); G4 uses ReLU as its toggle.
- Channel counts are derived, not copied: the paper's own widths are up to 5% apart in FLOPs (e.g. Table 1's
  (36, 432) vs (128, 128)) and 180 channels do not split into 8 groups (Table 2). G1 picks integer (c1, c2)
  with c1*c2 = c^2 closest and c2/c1 near the ratio; G2 picks the multiple of g nearest c*sqrt(g); G3 uses
  c/sqrt(n) channels for n convs in series and n branches of c -> c/n, concatenated, in parallel (our reading
  of the paper's Appendix Fig. 1). Default base widths are the ones nearest the paper's that keep every
  setting within 1% of equal FLOPs (68 instead of 64 for G2/G3, for instance).
- G4 stacks ``depth`` bottlenecks (default 10, like G1-G3; the paper does not say) with 4c input channels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from mindspore import Tensor, nn, ops

from ..fileio import markdown_table
from . import analysis, benchmark

__all__ = ["EXPERIMENTS", "PAPER", "DEFAULT_WIDTHS", "GPU_WIDTHS", "UnequalFlopsError", "Setting",
           "g1_channels", "g2_channels", "g3_channels", "build", "settings", "check_equal_flops",
           "run_experiment", "format_table", "to_csv_rows", "n_settings"]

EXPERIMENTS = ("G1", "G2", "G3", "G4")
TITLES = {
    "G1": "Table 1 - G1: equal channel width minimizes MAC (blocks of two 1x1 convs c1->c2->c1, equal FLOPs)",
    "G2": "Table 2 - G2: excessive group convolution increases MAC (stacked 1x1 group convs, equal FLOPs)",
    "G3": "Table 3 - G3: network fragmentation reduces degree of parallelism (stacked blocks, equal FLOPs)",
    "G4": "Table 4 - G4: element-wise operations are non-negligible (stacked ResNet bottlenecks)",
}
ROWS = {
    "G1": ("1:1", "1:2", "1:6", "1:12"),
    "G2": ("1", "2", "4", "8"),
    "G3": ("1-fragment", "2-fragment-series", "4-fragment-series", "2-fragment-parallel", "4-fragment-parallel"),
    "G4": ("ReLU yes, short-cut yes", "ReLU yes, short-cut no", "ReLU no, short-cut yes", "ReLU no, short-cut no"),
}
ROW_HEAD = {"G1": "c1:c2", "G2": "g", "G3": "block", "G4": "variant"}

# base width of each experiment's first row at x1, x2, x4: c of (c, c) for G1, c at g=1 for G2, the
# 1-fragment's c for G3, the bottleneck width c for G4. DEFAULT_WIDTHS is sized for a CPU (near the paper's
# ARM/CPU columns), GPU_WIDTHS near the paper's GPU columns (both adjusted to keep FLOPs equal within 1%).
DEFAULT_WIDTHS = {"G1": (64, 128, 256), "G2": (68, 136, 272), "G3": (68, 136, 272), "G4": (32, 64, 128)}
GPU_WIDTHS = {"G1": (128, 256, 512), "G2": (136, 272, 544), "G3": (136, 272, 544), "G4": (32, 64, 128)}

# The paper's figures (ShuffleNet V2, ECCV 2018, Tables 1-4): GPU (GTX 1080Ti, batches/s) and ARM (Snapdragon
# 810, one thread, images/s; Tables 2-4 head this column "CPU") at x1, x2, x4, and the widths they used for x1.
PAPER = {
    "G1": dict(gpu_widths="(128,128) (90,180) (52,312) (36,432)", arm_widths="(32,32) (22,44) (13,78) (9,108)",
               gpu={"1:1": (1480, 723, 232), "1:2": (1296, 586, 206), "1:6": (876, 489, 189),
                    "1:12": (748, 392, 163)},
               arm={"1:1": (76.2, 21.7, 5.3), "1:2": (72.9, 20.5, 5.1), "1:6": (69.1, 17.9, 4.6),
                    "1:12": (57.6, 15.1, 4.4)}),
    "G2": dict(gpu_widths="c = 128, 180, 256, 360", arm_widths="c = 64, 90, 128, 180",
               gpu={"1": (2451, 1289, 437), "2": (1725, 873, 341), "4": (1026, 644, 338), "8": (634, 445, 230)},
               arm={"1": (40.0, 10.2, 2.3), "2": (35.0, 9.5, 2.2), "4": (32.9, 8.7, 2.1), "8": (27.8, 7.5, 1.8)}),
    "G3": dict(gpu_widths="c = 128, 256, 512", arm_widths="c = 64, 128, 256",
               gpu={"1-fragment": (2446, 1274, 434), "2-fragment-series": (1790, 909, 336),
                    "4-fragment-series": (752, 745, 349), "2-fragment-parallel": (1537, 803, 320),
                    "4-fragment-parallel": (691, 572, 292)},
               arm={"1-fragment": (40.2, 10.1, 2.3), "2-fragment-series": (38.6, 10.1, 2.2),
                    "4-fragment-series": (38.4, 10.1, 2.3), "2-fragment-parallel": (33.4, 9.1, 2.2),
                    "4-fragment-parallel": (35.0, 8.4, 2.1)}),
    "G4": dict(gpu_widths="c = 32, 64, 128", arm_widths="c = 32, 64, 128",
               gpu={ROWS["G4"][0]: (2427, 2066, 1436), ROWS["G4"][1]: (2647, 2256, 1735),
                    ROWS["G4"][2]: (2672, 2121, 1458), ROWS["G4"][3]: (2842, 2376, 1782)},
               arm={ROWS["G4"][0]: (56.7, 16.9, 5.0), ROWS["G4"][1]: (61.9, 18.8, 5.2),
                    ROWS["G4"][2]: (57.3, 18.2, 5.1), ROWS["G4"][3]: (66.3, 20.2, 5.4)}),
}
FLOPS_TOLERANCE = 0.01


class UnequalFlopsError(ValueError):
    """Settings meant to have equal FLOPs differ by more than the tolerance."""


# ---------------------------------------------------------------------------------------------------------
# channel arithmetic

def g1_channels(c: int, ratio: int) -> tuple:
    """Integer (c1, c2) with c1*c2 within 1% of c*c (equal FLOPs) and c2/c1 as near ``ratio`` as that allows."""
    if ratio == 1:
        return c, c
    best = None
    centre = c / math.sqrt(ratio)
    for c1 in range(max(1, int(centre) - 3), int(centre) + 5):
        c2 = max(1, round(c * c / c1))
        err = abs(c1 * c2 - c * c) / (c * c)
        rerr = abs(c2 / c1 - ratio) / ratio
        key = (err > 0.01, rerr + err if err <= 0.01 else err)
        if best is None or key < best[0]:
            best = (key, (c1, c2))
    return best[1]


def g2_channels(c: int, groups: int) -> int:
    """Channels of a g-group 1x1 conv with the FLOPs of a c -> c dense one: the multiple of g nearest c*sqrt(g)."""
    target = c * c * groups
    k0 = max(1, round(c * math.sqrt(groups) / groups))
    return min((k * groups for k in range(max(1, k0 - 2), k0 + 3)), key=lambda n: abs(n * n - target))


def g3_channels(c: int, kind: str) -> int:
    """Channels per conv of a G3 block with the FLOPs of one c -> c conv: c/sqrt(n) for n convs in series;
    in parallel each of the n branches maps c -> c/n (so ``c`` must be divisible by n)."""
    n = _fragments(kind)
    if kind.endswith("parallel"):
        if c % n:
            raise ValueError(f"{kind} needs a width divisible by {n}, got {c}")
        return c // n
    return max(1, round(c / math.sqrt(n)))


def _fragments(kind: str) -> int:
    return 1 if kind == "1-fragment" else int(kind.split("-")[0])


# ---------------------------------------------------------------------------------------------------------
# networks

def _conv1x1(c_in: int, c_out: int, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, group=groups, has_bias=False, weight_init="HeUniform")


class ParallelConvs(nn.Cell):
    """n 1x1 convs on the same input, outputs concatenated (G3's parallel fragments)."""

    def __init__(self, c_in: int, c_branch: int, n: int):
        super().__init__()
        self.branches = nn.CellList([_conv1x1(c_in, c_branch) for _ in range(n)])

    def construct(self, x: Tensor) -> Tensor:
        outs = ()
        for b in self.branches:
            outs = outs + (b(x),)
        return ops.concat(outs, 1)


class Add(nn.Cell):
    """Element-wise add as a cell, so that the profile lists its MAC."""

    def construct(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


class Bottleneck(nn.Cell):
    """ResNet bottleneck: 1x1 (4c -> c), 3x3 (c -> c), 1x1 (c -> 4c), optional ReLUs and shortcut."""

    def __init__(self, c: int, relu: bool = True, shortcut: bool = True):
        super().__init__()
        self.conv1 = _conv1x1(4 * c, c)
        self.conv2 = nn.Conv2d(c, c, 3, pad_mode="pad", padding=1, has_bias=False, weight_init="HeUniform")
        self.conv3 = _conv1x1(c, 4 * c)
        self.use_relu, self.use_shortcut = relu, shortcut
        if relu:
            self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        if shortcut:
            self.add = Add()

    def construct(self, x: Tensor) -> Tensor:
        y = self.conv1(x)
        if self.use_relu:
            y = self.relu1(y)
        y = self.conv2(y)
        if self.use_relu:
            y = self.relu2(y)
        y = self.conv3(y)
        if self.use_shortcut:
            y = self.add(y, x)
        if self.use_relu:
            y = self.relu3(y)
        return y


@dataclass
class Setting:
    """One cell of a guideline table: row (e.g. "1:2"), column (0, 1, 2 for x1, x2, x4) and its network."""

    experiment: str
    row: str
    column: int
    channels: str            # human-readable channel description
    in_channels: int
    net: nn.Cell | None = None
    flops: int = 0
    mac: int = 0
    params: int = 0
    result: dict = field(default_factory=dict)


def build(experiment: str, row: str, width: int, depth: int = 10) -> tuple:
    """The network of one setting at base ``width``: ``(net, input channels, channel description)``."""
    if experiment == "G1":
        ratio = int(row.split(":")[1])
        c1, c2 = g1_channels(width, ratio)
        layers = []
        for _ in range(depth):
            layers += [_conv1x1(c1, c2), _conv1x1(c2, c1)]
        return nn.SequentialCell(layers), c1, f"({c1},{c2})"
    if experiment == "G2":
        g = int(row)
        c = g2_channels(width, g)
        return nn.SequentialCell([_conv1x1(c, c, g) for _ in range(depth)]), c, f"c={c}"
    if experiment == "G3":
        n = _fragments(row)
        cc = g3_channels(width, row)
        if row.endswith("parallel"):
            return nn.SequentialCell([ParallelConvs(width, cc, n) for _ in range(depth)]), width, f"c={width}, {n}x{cc}"
        layers = [_conv1x1(cc, cc) for _ in range(depth * n)]
        return nn.SequentialCell(layers), cc, f"c={cc}"
    if experiment == "G4":
        relu, shortcut = (part.split()[-1] == "yes" for part in row.split(", "))
        units = [Bottleneck(width, relu, shortcut) for _ in range(depth)]
        return nn.SequentialCell(units), 4 * width, f"c={width} ({4 * width} in/out)"
    raise ValueError(f"unknown experiment {experiment!r}; choose one of {EXPERIMENTS}")


def settings(experiment: str, widths=None, depth: int = 10) -> list:
    """All settings (rows x widths) of an experiment, networks built, not yet profiled."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    widths = tuple(widths or DEFAULT_WIDTHS[experiment])
    out = []
    for col, w in enumerate(widths):
        for row in ROWS[experiment]:
            net, c_in, desc = build(experiment, row, w, depth)
            out.append(Setting(experiment, row, col, desc, c_in, net))
    return out


def check_equal_flops(items: list, image_size: int = 56, tolerance: float = FLOPS_TOLERANCE) -> dict:
    """Profile every setting (``analysis.profile_cell``) and check that the settings of each column have equal
    FLOPs within ``tolerance``. Fills ``flops``/``mac``/``params``; returns ``{column: relative spread}``.
    Raises ``UnequalFlopsError`` naming the column and the settings."""
    for s in items:
        prof = analysis.profile_cell(s.net, (s.in_channels, image_size, image_size), name=f"{s.experiment} {s.row}")
        s.flops, s.mac, s.params = prof.flops, prof.mac, prof.params
    spreads = {}
    for col in sorted({s.column for s in items}):
        group = [s for s in items if s.column == col]
        spread = analysis.relative_spread([s.flops for s in group])
        spreads[col] = spread
        if spread > tolerance:
            detail = ", ".join(f"{s.row} {s.channels}: {s.flops / 1e6:.2f}M" for s in group)
            raise UnequalFlopsError(
                f"{group[0].experiment} settings of width column x{2 ** col} differ by {spread:.1%} in FLOPs "
                f"(> {tolerance:.0%}): {detail}; pick other base widths (defaults: "
                f"{DEFAULT_WIDTHS[group[0].experiment]})")
    return spreads


def run_experiment(experiment: str, widths=None, batch_size: int = 8, image_size: int = 56, warmup: int = 2,
                   repeats: int = 5, depth: int = 10, progress=None, statistic: str = "median") -> dict:
    """Build, check (equal FLOPs) and time one experiment. The settings of one width column are timed
    round-robin (``benchmark.measure_interleaved``) so that load from other processes hits them alike.
    ``statistic`` is "median" (default) or "min" of the repeats: on a machine shared with other jobs the
    fastest run is the one least disturbed by them.
    ``progress(setting)`` is called after each setting is done (e.g. a tqdm bar's update). Returns
    ``{"experiment", "widths", "batch_size", "image_size", "depth", "spreads", "settings": [Setting ...]}``
    with each setting's ``result`` = ``{"ms_per_batch", "img_per_s", "compile_s", "t_*" timing details}``."""
    if statistic not in ("median", "min"):
        raise ValueError(f"statistic must be 'median' or 'min', got {statistic!r}")
    widths = tuple(widths or DEFAULT_WIDTHS[experiment])
    items = settings(experiment, widths, depth)
    spreads = check_equal_flops(items, image_size)
    rng = np.random.default_rng(0)
    for col in range(len(widths)):
        group = [s for s in items if s.column == col]
        fns = {}
        for s in group:
            s.net.set_train(False)
            x = Tensor(rng.standard_normal((batch_size, s.in_channels, image_size, image_size)).astype(np.float32))
            fns[s.row] = (lambda net=s.net, x=x: net(x))
        timing = benchmark.measure_interleaved(fns, warmup, repeats)
        for s in group:
            m = timing[s.row]
            ms_ = m[f"{statistic}_ms"]
            s.result = dict(batch_size=batch_size, ms_per_batch=ms_, img_per_s=batch_size * 1e3 / ms_,
                            compile_s=max(0.0, m["first_s"] - m["median_ms"] / 1e3),
                            **{f"t_{k}": v for k, v in m.items()})
            s.net = None  # free the weights
            if progress is not None:
                progress(s)
    return dict(experiment=experiment, widths=widths, batch_size=batch_size, image_size=image_size,
                spreads=spreads, settings=items, depth=depth, statistic=statistic, repeats=repeats)


def n_settings(experiment: str, widths=None) -> int:
    """How many settings (networks to time) an experiment has at these widths."""
    return len(ROWS[experiment]) * len(tuple(widths or DEFAULT_WIDTHS[experiment]))


# ---------------------------------------------------------------------------------------------------------
# tables

def _cell(experiment: str, items: list, row: str, col: int):
    return next(s for s in items if s.row == row and s.column == col)


def to_csv_rows(res: dict) -> list:
    """Long-format rows (one per setting) with ours and the paper's speeds and ratios to the first row."""
    exp, items = res["experiment"], res["settings"]
    first = ROWS[exp][0]
    rows = []
    for s in items:
        base = _cell(exp, items, first, s.column)
        pg, pa = PAPER[exp]["gpu"][s.row][s.column], PAPER[exp]["arm"][s.row][s.column]
        rows.append(dict(
            experiment=exp, setting=s.row, width=f"x{2 ** s.column}", channels=s.channels,
            flops_M=round(s.flops / 1e6, 3), mac_M=round(s.mac / 1e6, 3), batch_size=res["batch_size"],
            image_size=res["image_size"], statistic=res.get("statistic", "median"),
            ms_per_batch=round(s.result["ms_per_batch"], 3), median_ms=round(s.result["t_median_ms"], 3),
            min_ms=round(s.result["t_min_ms"], 3), max_ms=round(s.result["t_max_ms"], 3),
            img_per_s=round(s.result["img_per_s"], 2),
            ratio=round(s.result["img_per_s"] / base.result["img_per_s"], 3),
            paper_gpu_batches_per_s=pg, paper_gpu_ratio=round(pg / PAPER[exp]["gpu"][first][s.column], 3),
            paper_arm_img_per_s=pa, paper_arm_ratio=round(pa / PAPER[exp]["arm"][first][s.column], 3)))
    return rows


def format_table(res: dict, markdown: bool = False) -> str:
    """The paper-shaped table: one row per setting, our images/s at x1/x2/x4 with the ratio to the first row,
    then the paper's GPU and ARM figures (with their ratios)."""
    exp, items = res["experiment"], res["settings"]
    first = ROWS[exp][0]
    ncol = len(res["widths"])
    head = [ROW_HEAD[exp], "channels (x1)"] + [f"ours x{2 ** k} img/s" for k in range(ncol)]
    head += ["MFLOPs x1", "MAC (M) x1", "paper GPU x1/x2/x4", "paper ARM x1/x2/x4"]
    body = []
    for row in ROWS[exp]:
        cells = [row, _cell(exp, items, row, 0).channels]
        for k in range(ncol):
            s, b = _cell(exp, items, row, k), _cell(exp, items, first, k)
            cells.append(f"{s.result['img_per_s']:.1f} ({s.result['img_per_s'] / b.result['img_per_s']:.2f})")
        s0 = _cell(exp, items, row, 0)
        cells += [f"{s0.flops / 1e6:.1f}", f"{s0.mac / 1e6:.2f}"]
        for dev in ("gpu", "arm"):
            v, v0 = PAPER[exp][dev][row], PAPER[exp][dev][first]
            cells.append(" / ".join(f"{a:g}" for a in v) + " (" + " / ".join(f"{a / b:.2f}" for a, b in zip(v, v0))
                         + ")")
        body.append(cells)
    note = (f"batch {res['batch_size']}, {res['image_size']}x{res['image_size']} maps, depth {res['depth']}, "
            f"{res.get('statistic', 'median')} of {res.get('repeats', '?')} interleaved runs, "
            f"base widths {', '.join(map(str, res['widths']))}; (ratio to the first row); FLOPs spread per column "
            + ", ".join(f"{v:.2%}" for v in res["spreads"].values())
            + f"; paper widths: GPU {PAPER[exp]['gpu_widths']}, ARM {PAPER[exp]['arm_widths']}")
    if markdown:
        return "\n".join([f"**{TITLES[exp]}**", "", markdown_table(head, body), "", note])
    table = [head] + body
    w = [max(len(r[k]) for r in table) for k in range(len(head))]
    lines = [TITLES[exp]] + ["  ".join(c.ljust(x) for c, x in zip(r, w)) for r in table]
    return "\n".join(lines + [note])
