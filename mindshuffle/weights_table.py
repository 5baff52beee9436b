"""The published pretrained weights per model, like torchvision's weight enums: where each file is, how its
publisher lets you check it, what it expects as input and what it scored. A leaf module (it imports fileio only).

Every URL, hash and figure here is copied from its publisher's own files (``url_source`` / ``metrics_source``):

- MindCV: ``mindcv/models/shufflenetv1.py`` / ``shufflenetv2.py`` ``default_cfgs`` (mindcv 0.3.0, unchanged on
  main) - the files ``mindcv.create_model(name, pretrained=True)`` downloads - and the ``-910v2`` files linked
  from ``configs/shufflenetv1/README.md`` / ``configs/shufflenetv2/README.md`` on mindspore-lab/mindcv main.
  MindCV publishes no checksum: its ``load_pretrained`` calls ``DownLoad().download_url(url)`` without an md5,
  and the 8 hex digits in its file names are not documented as a hash, so they are not checked ("none"); such
  a file is accepted only if MindSpore can read it as a checkpoint, and its parameters are checked when loaded.
- torchvision: ``torchvision/models/shufflenetv2.py`` (``ShuffleNet_V2_X*_Weights.IMAGENET1K_V1``). The hex
  after the '-' in the file name is a SHA-256 prefix, checked the way ``torch.hub`` checks it
  (``HASH_REGEX = r"-([a-f0-9]*)\\."``, digest must start with it). Sizes are the enums' ``_file_size`` (MB).
- The authors (megvii-model/ShuffleNet-Series ``README.md``) publish their weights only as a OneDrive folder
  share (``https://1drv.ms/f/s!AgaP37NGYuEXhRfQxHRseR7eSxXo``): no direct file URL and no hash, so there are no
  entries for them; download by hand and convert with ``tools/convert.py``.
- MindCV publishes no ShuffleNet V1 g8 (nor g3 x1.5/x2.0) weights: ``default_cfgs`` has ``url=""`` for them.
"""
from __future__ import annotations

import posixpath
import re
from fnmatch import fnmatch
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .fileio import markdown_table
from .meta import IMAGENET_PREPROCESS

__all__ = ["Weights", "WEIGHTS", "weights_for", "list_weights", "weights_rows", "weights_markdown",
           "hash_prefix_of", "HASH_REGEX"]

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's: the hash prefix in a file name

IMAGENET_RGB_232 = {**IMAGENET_PREPROCESS, "resize": 232}  # torchvision's ImageClassification(resize_size=232)

_MINDCV = "mindspore-lab/mindcv"
_MCV_V1_README = f"{_MINDCV} configs/shufflenetv1/README.md (main)"
_MCV_V2_README = f"{_MINDCV} configs/shufflenetv2/README.md (main)"
_MCV_V1_CFG = f"{_MINDCV} mindcv/models/shufflenetv1.py default_cfgs (0.3.0 = main)"
_MCV_V2_CFG = f"{_MINDCV} mindcv/models/shufflenetv2.py default_cfgs (0.3.0 = main)"
_TV = "pytorch/vision torchvision/models/shufflenetv2.py"
_MCV_LAYOUT_V2 = "MindCV ShuffleNet V2 names (first_conv/features/conv_last), 'same' pooling"
_MCV_LAYOUT_V1 = "MindCV ShuffleNet V1 names, 'same' pooling, authors' shuffle order"
_MCV_LAYOUT_V1_GC = _MCV_LAYOUT_V1 + ", GroupConv per-group convs (MindCV >= 0.4)"
_TV_LAYOUT = "torchvision state dict (.pth), converted on first use"


@dataclass(frozen=True)
class Weights:
    """One published checkpoint of one model."""

    model: str                 # the mindshuffle model it loads into
    tag: str                   # "mindcv", "mindcv-910v2", "torchvision": pretrained=<tag> picks it
    url: str
    publisher: str             # MindCV / torchvision
    file_format: str           # "mindspore" (.ckpt) or "torch" (.pth, converted on first use)
    check: str                 # "sha256", "sha256-prefix" (torch.hub's file-name rule) or "none"
    layout: str
    preprocess: dict = field(default_factory=lambda: dict(IMAGENET_PREPROCESS))
    sha256: str = ""           # the full SHA-256 where the publisher gives one
    size_mb: float | None = None
    num_classes: int = 1000
    top1: float | None = None
    top5: float | None = None
    metrics_source: str = ""
    recipe: str = ""
    url_source: str = ""

    @property
    def file_name(self) -> str:
        return posixpath.basename(urlparse(self.url).path)

    @property
    def expected_hash(self) -> str:
        """What the downloaded file's SHA-256 must equal (``sha256``) or start with (``sha256-prefix``)."""
        if self.check == "sha256":
            return self.sha256
        if self.check == "sha256-prefix":
            return self.sha256 or hash_prefix_of(self.file_name)
        return ""


def hash_prefix_of(file_name: str) -> str:
    """The SHA-256 prefix torch.hub reads from a file name (``shufflenetv2_x1-5666bf0f80.pth`` -> ``5666bf0f80``)."""
    m = HASH_REGEX.search(file_name)
    return m.group(1) if m else ""


def _mindcv(model, url, top1, top5, recipe, v1=False, v910v2=False) -> Weights:
    readme, cfg = (_MCV_V1_README, _MCV_V1_CFG) if v1 else (_MCV_V2_README, _MCV_V2_CFG)
    where = "ascend 910*, 8 cards x 64" if v910v2 else "Ascend 910, 8 cards (D910x8-G)"
    return Weights(model=model, tag="mindcv-910v2" if v910v2 else "mindcv", url=url, publisher="MindCV",
                   file_format="mindspore", check="none",
                   layout=(_MCV_LAYOUT_V1_GC if v910v2 else _MCV_LAYOUT_V1) if v1 else _MCV_LAYOUT_V2,
                   top1=top1, top5=top5, metrics_source=f"{readme}, {where}",
                   recipe=f"https://github.com/mindspore-lab/mindcv/blob/main/configs/{recipe}",
                   url_source=readme if v910v2 else f"{cfg}; {readme}")


def _tv(model, url, top1, top5, size_mb, new_recipe) -> Weights:
    return Weights(model=model, tag="torchvision", url=url, publisher="torchvision", file_format="torch",
                   check="sha256-prefix", layout=_TV_LAYOUT,
                   preprocess=dict(IMAGENET_RGB_232 if new_recipe else IMAGENET_PREPROCESS), size_mb=size_mb,
                   top1=top1, top5=top5, metrics_source=f"{_TV} (meta _metrics ImageNet-1K)",
                   recipe="https://github.com/pytorch/vision/pull/5906" if new_recipe
                   else "https://github.com/ericsun99/Shufflenet-v2-Pytorch (ported)", url_source=_TV)


_MCV = "https://download.mindspore.cn/toolkits/mindcv/shufflenet"
_MCV_NEW = "https://download-mindspore.osinfra.cn/toolkits/mindcv/shufflenet"
_TVD = "https://download.pytorch.org/models"

_ENTRIES = [
    _mindcv("shufflenet_v2_x0_5", f"{_MCV}/shufflenetv2/shufflenet_v2_x0_5-8c841061.ckpt", 60.53, 82.11,
            "shufflenetv2/shufflenet_v2_0.5_ascend.yaml"),
    _mindcv("shufflenet_v2_x0_5", f"{_MCV_NEW}/shufflenetv2/shufflenet_v2_x0_5-39d05bb6-910v2.ckpt", 60.65, 82.26,
            "shufflenetv2/shufflenet_v2_0.5_ascend.yaml", v910v2=True),
    _mindcv("shufflenet_v2_x1_0", f"{_MCV}/shufflenetv2/shufflenet_v2_x1_0-0da4b7fa.ckpt", 69.47, 88.88,
            "shufflenetv2/shufflenet_v2_1.0_ascend.yaml"),
    _mindcv("shufflenet_v2_x1_5", f"{_MCV}/shufflenetv2/shufflenet_v2_x1_5-00b56131.ckpt", 72.79, 90.93,
            "shufflenetv2/shufflenet_v2_1.5_ascend.yaml"),
    _mindcv("shufflenet_v2_x2_0", f"{_MCV}/shufflenetv2/shufflenet_v2_x2_0-ed8e698d.ckpt", 75.07, 92.08,
            "shufflenetv2/shufflenet_v2_2.0_ascend.yaml"),
    _mindcv("shufflenet_v1_g3_x0_5", f"{_MCV}/shufflenetv1/shufflenet_v1_g3_05-42cfe109.ckpt", 57.05, 79.73,
            "shufflenetv1/shufflenet_v1_0.5_ascend.yaml", v1=True),
    _mindcv("shufflenet_v1_g3_x0_5", f"{_MCV_NEW}/shufflenetv1/shufflenet_v1_g3_05-56209ef3-910v2.ckpt", 57.08,
            79.89, "shufflenetv1/shufflenet_v1_0.5_ascend.yaml", v1=True, v910v2=True),
    _mindcv("shufflenet_v1_g3_x1_0", f"{_MCV}/shufflenetv1/shufflenet_v1_g3_10-245f0ccf.ckpt", 67.77, 87.73,
            "shufflenetv1/shufflenet_v1_1.0_ascend.yaml", v1=True),
    _tv("shufflenet_v2_x0_5_tv", f"{_TVD}/shufflenetv2_x0.5-f707e7126e.pth", 60.552, 81.746, 5.282, False),
    _tv("shufflenet_v2_x1_0_tv", f"{_TVD}/shufflenetv2_x1-5666bf0f80.pth", 69.362, 88.316, 8.791, False),
    _tv("shufflenet_v2_x1_5_tv", f"{_TVD}/shufflenetv2_x1_5-3c479a10.pth", 72.996, 91.086, 13.557, True),
    _tv("shufflenet_v2_x2_0_tv", f"{_TVD}/shufflenetv2_x2_0-8be3c8ee.pth", 76.230, 93.006, 28.433, True),
]

# model -> its weights, the default (pretrained=True) first: the file MindCV's own pretrained=True downloads
WEIGHTS: dict[str, list[Weights]] = {}
for _w in _ENTRIES:
    WEIGHTS.setdefault(_w.model, []).append(_w)


def weights_for(model: str, tag: str | bool = True) -> Weights | None:
    """The weights of ``model`` with ``tag`` (``True`` = the default one); ``None`` if there are none."""
    options = WEIGHTS.get(model, [])
    if tag is True:
        return options[0] if options else None
    return next((w for w in options if w.tag == tag), None)


def list_weights(pattern: str = "*") -> list[Weights]:
    """Every entry whose model matches the shell-style ``pattern``, in table order."""
    return [w for ws in WEIGHTS.values() for w in ws if fnmatch(w.model, pattern)]


def weights_rows(pattern: str = "*", links: bool = True) -> tuple[list, list]:
    """(header, rows) of the weights table, for ``tools/models.py --weights`` and the README; ``links``: the file
    as a Markdown link, else its URL."""
    head = ["model", "pretrained=", "file", "check", "top-1", "top-5", "input", "publisher"]
    rows = []
    for w in list_weights(pattern):
        default = weights_for(w.model) is w
        pre = w.preprocess
        check = {"sha256-prefix": f"sha256 {w.expected_hash}...", "sha256": f"sha256 {w.sha256[:12]}...",
                 "none": "none published"}[w.check]
        file = f"[{w.file_name}]({w.url})" if links else w.url
        rows.append([w.model, ("True / " if default else "") + repr(w.tag), file, check, f"{w.top1:g}",
                     f"{w.top5:g}", f"{pre['channel_order']} {pre['resize']}->{pre['input_size']}", w.publisher])
    return head, rows


def weights_markdown(pattern: str = "*") -> str:
    head, rows = weights_rows(pattern)
    return markdown_table(head, rows) if rows else ""
