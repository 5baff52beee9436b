"""Datasets, channel statistics and loaders.

Layouts read as they come (nothing is copied or reorganised):

- ``folder`` / ``imagenet``: ``data_dir/<split>/<class>/<image>`` (one folder per class; images may sit in
  sub-folders of a class folder).
- ``tiny_imagenet``: Tiny ImageNet's own layout: ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``, classes from ``wnids.txt``, readable names
  from ``words.txt``.
- ``digits``: scikit-learn's 1,797 handwritten digits written once as a class-folder dataset of PNGs
  (``prepare_digits``) with a fixed, stratified train/val split, then read as ``folder``.

Each split becomes a ``FileList`` (paths, labels, class names). ``build_loader`` turns the part of it one rank
sees in one epoch into a batched MindSpore dataset: the order is a permutation drawn from (seed, epoch), the
ranks take interleaved, disjoint shards of it, the transforms are MindCV's (``create_transforms``) and run in
MindSpore's C++ operations on ``num_parallel_workers`` threads; the only Python per image is the reader, which
reads the file's bytes and checks their structure (no decoding). ``build_train_dataset`` is the same pipeline
serving every remaining epoch at once (dataset sink mode). ``input_transforms`` moves the normalisation into
the compiled step (``ImagePrep``) where the recipe allows it. MindCV's ``create_dataset`` is not used: it
cannot read Tiny ImageNet's val layout, does not tell which files a rank saw, and stops at the first
unreadable image.
"""
from __future__ import annotations

import collections
import copy
import errno
import hashlib
import io
import json
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field

import mindspore as ms
import mindspore.dataset as ds
import numpy as np
from mindspore import nn, ops
from mindspore.dataset import vision

from .errors import DataError
from .fileio import atomic_json
from .meta import IMAGE_EXTENSIONS, IMAGENET_MEAN as _IMAGENET_MEAN, IMAGENET_STD as _IMAGENET_STD

__all__ = ["DataError", "FileList", "scan", "prepare_digits", "channel_stats", "resolve_stats",
           "epoch_indices", "build_transforms", "input_transforms", "ImagePrep", "build_loader",
           "build_train_dataset", "BatchMix", "batch_mix", "IMAGE_EXTENSIONS"]

log = logging.getLogger(__name__)

IMAGENET_MEAN = list(_IMAGENET_MEAN)
IMAGENET_STD = list(_IMAGENET_STD)


@dataclass
class FileList:
    """The images of one split: ``paths[i]`` has label ``labels[i]``; ``classes[label]`` is the folder/wnid
    and ``names[label]`` a readable name."""

    paths: list
    labels: np.ndarray
    classes: list
    names: list = field(default_factory=list)
    root: str = ""

    def __len__(self) -> int:
        return len(self.paths)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _refuse_loop(path: str) -> None:
    """DataError if ``path`` is a symlink that leads back to its own folder or one above it (``train/a ->
    train``, ``train/cls/loop -> ..``) or round in a circle: listing it would count images twice or never end."""
    if not os.path.islink(path):
        return
    try:
        os.stat(path)
    except OSError as e:
        if e.errno != errno.ELOOP:
            return  # a dangling link: not a folder, and not a loop
    else:
        real, parent = os.path.realpath(path), os.path.realpath(os.path.dirname(path))
        if os.path.commonpath([real, parent]) != real:
            return
    raise DataError(f"{path!r} is a symlink loop (-> {os.readlink(path)!r}, back into a folder that holds "
                    f"it); remove the link")


def _class_folder_images(folder: str) -> list:
    out = []
    for dirpath, dirnames, files in os.walk(folder):
        for d in dirnames:
            _refuse_loop(os.path.join(dirpath, d))
        dirnames.sort()
        out.extend(os.path.join(dirpath, f) for f in sorted(files) if _is_image(f))
    return out


def _class_folders(root: str) -> list:
    """The class folders of ``root`` (sorted, hidden ones skipped); a symlink loop among them is an error."""
    names = sorted(d for d in os.listdir(root) if not d.startswith("."))
    for d in names:
        _refuse_loop(os.path.join(root, d))
    return [d for d in names if os.path.isdir(os.path.join(root, d))]


def _scan_folder(root: str, classes: list | None) -> FileList:
    if not os.path.isdir(root):
        raise DataError(f"data folder {root!r} does not exist; set data_dir (and train_split/val_split)")
    found = _class_folders(root)
    if not found:
        raise DataError(f"data folder {root!r} has no class folders; expected {root}/<class>/<image>")
    if classes is None:
        classes = found
    else:
        unknown = [d for d in found if d not in classes]
        if unknown:
            raise DataError(f"data folder {root!r} has class folders not in the training set: "
                            f"{', '.join(unknown[:5])}; add them to the training split or remove them here")
    paths, labels = [], []
    for label, c in enumerate(classes):
        folder = os.path.join(root, c)
        if not os.path.isdir(folder):
            continue  # a validation split may lack a class
        files = _class_folder_images(folder)
        if not files and c in found:
            raise DataError(f"class folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS[:3])}, ...); "
                            f"add images or remove the folder")
        paths += files
        labels += [label] * len(files)
    return FileList(paths, np.asarray(labels, np.int32), list(classes), list(classes), root)


def _read_lines(path: str) -> list:
    if not os.path.isfile(path):
        raise DataError(f"Tiny ImageNet file {path!r} is missing; data_dir must be the unpacked "
                        f"tiny-imagenet-200 folder")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


def _scan_tiny(root: str, split: str) -> FileList:
    wnids = sorted(w.strip() for w in _read_lines(os.path.join(root, "wnids.txt")))
    words = {}
    if os.path.isfile(os.path.join(root, "words.txt")):
        for line in _read_lines(os.path.join(root, "words.txt")):
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    names = [words.get(w, w) for w in wnids]
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for w in wnids:
            folder = os.path.join(root, "train", w, "images")
            if not os.path.isdir(folder):
                folder = os.path.join(root, "train", w)
            files = _class_folder_images(folder) if os.path.isdir(folder) else []
            if not files:
                raise DataError(f"Tiny ImageNet class {w!r} has no images under {folder!r}")
            paths += files
            labels += [index[w]] * len(files)
    else:
        base = os.path.join(root, split)
        for line in _read_lines(os.path.join(base, f"{split}_annotations.txt")):
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise DataError(f"{base}/{split}_annotations.txt: bad line {line[:60]!r} "
                                f"(expected '<file>\\t<wnid>...' with a wnid from wnids.txt)")
            paths.append(os.path.join(base, "images", parts[0]))
            labels.append(index[parts[1]])
    if not paths:
        raise DataError(f"Tiny ImageNet split {split!r} under {root!r} has no images")
    return FileList(paths, np.asarray(labels, np.int32), wnids, names, root)


def default_data_dir(dataset: str) -> str:
    return os.path.join(".", "data", "digits") if dataset == "digits" else ""


def scan(dataset: str, data_dir: str, split: str, classes: list | None = None) -> FileList:
    """List the images of one split. ``classes`` (from the training split) fixes the label order for val."""
    data_dir = data_dir or default_data_dir(dataset)
    if dataset == "tiny_imagenet":
        return _scan_tiny(data_dir, split)
    if dataset == "digits":
        prepare_digits(data_dir)
    return _scan_folder(os.path.join(data_dir, split), classes)


# -- the digits demo -----------------------------------------------------------------------------------------

def prepare_digits(root: str, size: int = 32, val_fraction: float = 0.2, seed: int = 0) -> str:
    """Write scikit-learn's digits as ``root/{train,val}/<digit>/<index>.png`` (``size`` px, RGB).

    The split is stratified and fixed by ``seed``; an existing complete folder is left alone. A folder that
    already holds anything this function did not write is refused (DataError): the digits would be mixed
    into its images. ``.started`` (written first, kept) marks the folder as this function's, so an interrupted
    preparation (or another rank's) continues; ``.prepared`` (written last) marks it complete.
    """
    done, started = os.path.join(root, ".prepared"), os.path.join(root, ".started")
    if os.path.isfile(done):
        return root
    if os.path.isdir(root) and not os.path.isfile(started):
        theirs = sorted(f for f in os.listdir(root) if not f.startswith("."))
        if theirs:
            raise DataError(f"dataset digits: data_dir {root!r} already holds {', '.join(theirs[:3])}"
                            f"{', ...' if len(theirs) > 3 else ''} and was not prepared by mindshuffle (no "
                            f".prepared); set data_dir to a new or empty folder, or use dataset: folder")
    os.makedirs(root, exist_ok=True)
    atomic_json(started, {"dataset": "digits", "written_by": "mindshuffle.data.prepare_digits"})
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed,
                                          stratify=digits.target)
    for split, ids in (("train", train_idx), ("val", val_idx)):
        for i in sorted(ids):
            img8 = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            img = Image.fromarray(img8, mode="L").resize((size, size), Image.BICUBIC).convert("RGB")
            folder = os.path.join(root, split, str(digits.target[i]))
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(folder, f"{i:04d}.png")
            tmp = f"{path}.{os.getpid()}.tmp"
            img.save(tmp, format="PNG")
            os.replace(tmp, path)
    atomic_json(done, {"train": len(train_idx), "val": len(val_idx), "size": size, "seed": seed})
    log.info("digits: wrote %d train and %d val images (%d px) to %s", len(train_idx), len(val_idx), size, root)
    return root


# -- channel statistics --------------------------------------------------------------------------------------

def channel_stats(files: FileList, max_images: int = 20000, seed: int = 0) -> tuple:
    """Per-channel mean and std (0-255 scale, RGB) over the pixels of up to ``max_images`` training images
    (a fixed random subset beyond that)."""
    from PIL import Image
    idx = np.arange(len(files))
    if len(idx) > max_images:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_images, replace=False))
    s = np.zeros(3)
    s2 = np.zeros(3)
    n = 0
    for i in idx:
        try:
            with Image.open(files.paths[i]) as im:
                a = np.asarray(im.convert("RGB"), np.float64).reshape(-1, 3)
        except Exception:  # unreadable images are handled (skipped or fatal) by the loader
            continue
        s += a.sum(0)
        s2 += (a * a).sum(0)
        n += a.shape[0]
    if n == 0:
        raise DataError(f"no readable training images under {files.root!r} to compute mean/std from")
    mean = s / n
    # at least one grey level: a channel without variation (a test image, a scan) must not divide by zero,
    # which MindSpore's Normalize refuses
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 1.0))
    return [round(float(x), 4) for x in mean], [round(float(x), 4) for x in std]


def resolve_stats(cfg, train: FileList, cache_dir: str | None = None) -> tuple:
    """The recipe's ``mean``/``std`` as two lists of 3 (0-255). ``auto`` computes them from the training
    images once and caches them in ``<data_dir>/mean_std.json`` (or ``cache_dir`` if data_dir is read-only)."""
    def pick(v, default):
        if v == "imagenet":
            return list(default)
        if isinstance(v, list):
            return v * 3 if len(v) == 1 else v
        return None

    mean, std = pick(cfg.mean, IMAGENET_MEAN), pick(cfg.std, IMAGENET_STD)
    if mean is not None and std is not None:
        return mean, std
    key = hashlib.sha1(f"{len(train)}|{train.paths[0]}|{train.paths[-1]}".encode()).hexdigest()[:12]
    root = train.root if os.path.isdir(train.root) else os.path.dirname(train.paths[0])
    if cfg.dataset != "tiny_imagenet":
        root = os.path.dirname(os.path.abspath(root))  # the folder holding train/ and val/
    candidates = [os.path.join(root, "mean_std.json")] + ([os.path.join(cache_dir, "mean_std.json")]
                                                         if cache_dir else [])
    for c in candidates:
        try:
            with open(c) as f:
                entry = json.load(f).get(key)
            if entry:
                log.info("mean/std from cache %s: mean %s std %s", c, entry["mean"], entry["std"])
                return (mean or entry["mean"]), (std or entry["std"])
        except (OSError, ValueError):
            pass
    log.info("computing per-channel mean/std from %d training images ...", len(train))
    m, s = channel_stats(train)
    log.info("mean %s std %s (0-255, RGB)", m, s)
    for c in candidates:
        try:
            data = {}
            if os.path.isfile(c):
                with open(c) as f:
                    data = json.load(f)
            data[key] = {"mean": m, "std": s, "images": len(train)}
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=os.path.dirname(c))
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, c)
            break
        except OSError:
            continue
    return (mean or m), (std or s)


# -- reading: cheap checks that keep broken files away from MindSpore's decoders ------------------------------
#
# MindSpore 2.7.1's C++ decoders do not survive every broken file (measured): a JPEG cut off inside its header
# stops the process with SIGFPE, and a JPEG with a bogus Huffman-table header can crash it with SIGSEGV; no
# error mode of the pipeline catches that. So the reader walks each file's header segments (microseconds, no
# pixel decoded) and refuses what the decoders would choke on. What still gets past (a PNG whose compressed
# data is damaged, say) fails cleanly inside the pipeline and is named afterwards by ``_Source``.

_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_CHECKED_SEGMENTS = _SOF_MARKERS | {0xC4, 0xDA, 0xDB}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _jpeg_tables_problem(marker: int, seg) -> str | None:
    """What is wrong with a quantisation (DB) or Huffman (C4) table segment with payload ``seg``, or None."""
    i = 0
    while i < len(seg):
        kind, table = seg[i] >> 4, seg[i] & 15
        if marker == 0xDB:
            if kind > 1 or table > 3:
                return "bad quantisation table"
            i += 1 + 64 * (kind + 1)
        else:
            symbols = sum(seg[i + 1:i + 17])
            if kind > 1 or table > 3 or i + 17 > len(seg) or symbols > 256:
                return "bad Huffman table"
            i += 17 + symbols
    return None if i == len(seg) else "bad table length"


def _jpeg_segment_problem(marker: int, seg) -> str | None:
    """What is wrong with one JPEG header segment (its payload ``seg``), or None."""
    if marker in (0xC4, 0xDB):
        return _jpeg_tables_problem(marker, seg)
    if marker in _SOF_MARKERS:
        if len(seg) < 6:
            return "bad frame header"
        height, width, comps = int.from_bytes(seg[1:3], "big"), int.from_bytes(seg[3:5], "big"), seg[5]
        if not height or not width or comps not in (1, 3, 4) or len(seg) != 6 + 3 * comps:
            return f"bad frame header ({width}x{height} px, {comps} components)"
    if marker == 0xDA and (not seg or not 1 <= seg[0] <= 4 or len(seg) != 4 + 2 * seg[0]):
        return "bad scan header"
    return None


def _jpeg_problem(raw) -> str | None:
    """Walks the segments from the start to the first scan, then looks for the end-of-image marker after it
    (compressed data cannot contain that marker, so one found there is the image's own, not a thumbnail's)."""
    n, pos, frame = len(raw), 2, False
    while pos + 4 <= n:
        if raw[pos] != 0xFF:
            return f"no JPEG marker at byte {pos}"
        marker = raw[pos + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte; markers without a length
            pos += 1 if marker == 0xFF else 2
            continue
        if marker in (0xD8, 0xD9):
            return "JPEG ends before its image data" if marker == 0xD9 else "bad JPEG marker"
        end = pos + 2 + int.from_bytes(raw[pos + 2:pos + 4], "big")
        if end > n or end < pos + 4:
            break
        if marker in _CHECKED_SEGMENTS:
            problem = _jpeg_segment_problem(marker, raw[pos + 4:end])
            if problem:
                return problem
        frame = frame or marker in _SOF_MARKERS
        if marker == 0xDA:
            if not frame:
                return "JPEG scan without a frame header"
            return None if raw.rfind(b"\xff\xd9", end) >= 0 else "truncated JPEG (no end-of-image marker)"
        pos = end
    return "truncated JPEG header"


def _png_problem(raw) -> str | None:
    """Checks the header and walks the chunk lengths up to IEND (the compressed data is not inflated)."""
    n = len(raw)
    if n < 33 or raw[12:16] != b"IHDR" or int.from_bytes(raw[8:12], "big") != 13:
        return "bad PNG header"
    if not int.from_bytes(raw[16:20], "big") or not int.from_bytes(raw[20:24], "big"):
        return "PNG of 0 pixels"
    pos = 8
    while pos + 8 <= n:
        length, kind = int.from_bytes(raw[pos:pos + 4], "big"), raw[pos + 4:pos + 8]
        pos += 12 + length
        if kind == b"IEND":
            return None if pos <= n else "truncated PNG"
    return "truncated PNG (no IEND chunk)"


def _image_problem(raw) -> str | None:
    """Why the whole file ``raw`` could not be decoded, judged from its signature and structure; None when it
    looks whole. Formats without a cheap structure check (TIFF, PPM/PGM) pass."""
    n = len(raw)
    if not n:
        return "empty file, 0 bytes"
    if raw[:3] == b"\xff\xd8\xff":
        return _jpeg_problem(raw)
    if raw[:8] == _PNG_SIGNATURE:
        return _png_problem(raw)
    if raw[:2] == b"BM":
        size, offset = int.from_bytes(raw[2:6], "little"), int.from_bytes(raw[10:14], "little")
        return "truncated BMP" if n < 26 or size > n or offset >= n else None
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return None if int.from_bytes(raw[4:8], "little") + 8 <= n else "truncated WebP"
    if raw[:4] in (b"II*\x00", b"MM\x00*") or raw[:2] in (b"P2", b"P3", b"P5", b"P6"):
        return None
    return "not a JPEG, PNG, BMP, WebP, TIFF or PPM/PGM image"


def _read(path: str):
    """(the file's bytes, None) or (None, why the file cannot be used)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        problem = _image_problem(raw)
        return (None, problem) if problem else (raw, None)
    except OSError as e:
        return None, f"{type(e).__name__}: {e.strerror or e}"


def _decode_problem(raw) -> str | None:
    """Decodes ``raw`` fully with PIL (only on the error path, to find which of a few files the pipeline's
    decoder refused; MindSpore's own eager decoder would leave an ./abnormal_image.jpg in the working folder)."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
        return None
    except Exception as e:  # any decoder complaint
        return f"cannot be decoded: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}"


# -- loaders -------------------------------------------------------------------------------------------------

def epoch_indices(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                  pad: bool = True, repeats: int = 1) -> np.ndarray:
    """Sample indices rank ``rank`` of ``world`` sees in ``epoch``.

    All ranks draw the same permutation from (seed, epoch) and take every ``world``-th entry from ``rank`` on,
    so shards are disjoint. With ``pad`` the permutation is wrapped to a multiple of ``world`` (equal step
    counts on every rank, as data parallelism needs); without it (validation) shards may differ by one.
    ``repeats`` r > 1 (repeated augmentation, MindCV's ``RepeatAugSampler``): each entry of the permutation is
    written r times in a row before the wrap and the split, so consecutive copies go to different ranks and the
    shards together hold every image r times (plus the wrap); callers keep each rank's usual epoch length.
    """
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    if repeats > 1:
        order = np.repeat(order, repeats)
        n = len(order)
    if pad and n % world:
        extra = world - n % world
        order = np.concatenate([order, order[:extra]])
    return order[rank::world]


_TRACKED = 16384  # rows the source remembers between reading them and seeing them leave the pipeline


class _Source:
    """Random-access source for ``GeneratorDataset``: (encoded image bytes, key) for position ``k`` of
    ``indices``. The key is ``serial * len(files) + file index`` (``serial`` counts the rows read); the
    pipeline's last step, ``labels_of``, turns a batch of keys into labels.

    An unreadable image is skipped (the next readable one takes its place, so the epoch keeps its length) and
    named once in the log, or with ``strict`` stops the run with its name (``first_error``). "Unreadable" is
    decided twice: by the cheap checks when the file is read, and, for the rare file that passes them but fails
    in the C++ decoder, by MindSpore's error-samples mode (non-strict: the pipeline replaces the row; strict: it
    raises) together with the keys: a row read but never seen leaving the pipeline is decoded again here, once,
    to name it.
    """

    _warned: set = set()
    _lock = threading.Lock()

    def __init__(self, files: FileList, indices: np.ndarray, strict: bool):
        self.files = files
        self.indices = np.asarray(indices)
        self.strict = strict
        self._error: str | None = None
        self._bad: set = set()             # file indices found undecodable; skipped from then on
        self._state = threading.Lock()
        self._serial = 0
        self._read_rows = collections.deque(maxlen=_TRACKED)  # (serial, file index), in reading order
        self._last_out = -1                # highest serial seen leaving the pipeline
        self._missed = collections.deque(maxlen=_TRACKED)     # serials passed over on the way out
        self._searched = False
        self._unexplained = 0              # rows put in place of refused ones, not yet matched to a file

    def __len__(self) -> int:
        return len(self.indices)

    def __deepcopy__(self, memo):
        return self  # every pipeline MindSpore builds from a dataset (getters, iterators) shares one source

    def __getitem__(self, k: int):
        n = len(self.indices)
        for j in range(n):
            i = int(self.indices[(k + j) % n])
            if i in self._bad:
                continue
            raw, err = _read(self.files.paths[i])
            if raw is not None:
                with self._state:
                    serial = self._serial
                    self._serial += 1
                    self._read_rows.append((serial, i))
                return np.frombuffer(raw, np.uint8), np.array(serial * len(self.files) + i, np.int64)
            self._refuse(i, err)
        raise DataError(f"no readable image among the {n} of this shard (first: {self.files.paths[0]!r})")

    def _refuse(self, i: int, err: str) -> None:
        """Stops (strict) or names the file once and remembers it as bad."""
        path = self.files.paths[i]
        msg = f"unreadable image {path!r} ({err})"
        if self.strict:
            self._error = self._error or msg
            raise DataError(msg + "; remove or replace it, or set strict_data: False to skip it")
        self._bad.add(i)
        with self._lock:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("%s: skipped (strict_data: False)", msg)

    def labels_of(self, keys: np.ndarray) -> np.ndarray:
        """The pipeline's last map, once per batch: keys -> int32 labels. A key older than one already seen is a
        row the pipeline put in place of one its decoder refused (MindSpore's REPLACE mode): find and name that."""
        keys = np.asarray(keys, np.int64)
        n = len(self.files)
        repeats = 0
        with self._state:
            for s in (keys // n).tolist():
                if s > self._last_out:
                    self._missed.extend(range(self._last_out + 1, s))
                    self._last_out = s
                else:
                    repeats += 1
            self._unexplained += repeats
        if repeats and self._unexplained > 0:
            found = self._undecodable(first_only=False)
            for i, err in found:
                self._refuse(i, err)
            self._unexplained -= len(found)  # may go below 0: files found before their stand-ins came out
            if self._unexplained > 0:
                self._unexplained = 0
                log.warning("MindSpore's decoder refused an image and the pipeline used another in its place; "
                            "PIL decodes every candidate, so the file cannot be named")
        return self.files.labels[keys % n].astype(np.int32)

    def _undecodable(self, first_only: bool) -> list:
        """(file index, problem) of the rows read but not seen leaving the pipeline that fail to decode: first
        those passed over, then (if none of those) the ones still on their way."""
        with self._state:
            missed = set(self._missed)
            self._missed.clear()
            passed = [i for s, i in self._read_rows if s in missed]
            ahead = [i for s, i in self._read_rows if s > self._last_out]
        found = []
        for rows in (passed, ahead):
            for i in dict.fromkeys(rows):
                if i in self._bad:
                    continue
                raw, err = _read(self.files.paths[i])
                err = err or _decode_problem(raw)
                if err:
                    found.append((i, err))
                    if first_only:
                        return found
            if found:
                break
        return found

    @property
    def first_error(self) -> str | None:
        """Why the pipeline stopped, naming the file: set when the reader refused a file in strict mode; else,
        asked after the iterator raised, searched once among the rows that never left the pipeline."""
        if self._error is None and not self._searched:
            self._searched = True
            found = self._undecodable(first_only=True)
            if found:
                i, err = found[0]
                self._error = f"unreadable image {self.files.paths[i]!r} ({err})"
        return self._error


class _EpochOrder:
    """A sampler (any iterable will do for ``GeneratorDataset``) whose k-th pass yields the file indices of
    epoch ``start_epoch + k`` for one rank, as ``epoch_indices`` draws them, cut to ``per_epoch``. MindSpore
    iterates it while constructing the dataset and deep-copies it into every pipeline it builds (getters such as
    ``output_shapes``, iterators, the device queue); a copy starts again at ``start_epoch``."""

    def __init__(self, n: int, seed: int, rank: int, world: int, shuffle: bool, per_epoch: int,
                 start_epoch: int, repeats: int = 1):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.repeats = repeats
        self.per_epoch, self.start_epoch, self.passes = per_epoch, start_epoch, 0

    def __deepcopy__(self, memo):
        fresh = copy.copy(self)
        fresh.passes = 0
        return fresh

    def __iter__(self):
        epoch = self.start_epoch + self.passes
        self.passes += 1
        idx = epoch_indices(self.n, epoch, self.seed, self.rank, self.world, self.shuffle,
                            repeats=self.repeats)[:self.per_epoch]
        return iter(idx.tolist())

    def __len__(self) -> int:
        return self.per_epoch


def _rgb_to_bgr(img):
    """HWC RGB -> BGR (a contiguous copy), for weights trained on OpenCV-decoded images (Megvii's)."""
    return np.ascontiguousarray(np.asarray(img)[..., ::-1])


def _with_affine(cfg, tf: list) -> list:
    """MindCV has no rotation/shift keys: MindCV's fused decode+random-resized-crop becomes decode, a random
    affine (background 0), then the same random-resized crop."""
    if type(tf[0]).__name__ != "RandomCropDecodeResize":
        raise ValueError(f"unexpected first MindCV training transform {type(tf[0]).__name__}")
    inter = {"bilinear": vision.Inter.BILINEAR, "bicubic": vision.Inter.BICUBIC, "nearest": vision.Inter.NEAREST,
             "area": vision.Inter.AREA}[cfg.interpolation]
    shift = min(float(cfg.translate), 1.0)
    return [vision.Decode(),
            vision.RandomAffine(degrees=float(cfg.rotation), translate=(-shift, shift, -shift, shift) if shift
                                else None, resample=vision.Inter.BILINEAR),
            vision.RandomResizedCrop(cfg.image_resize, scale=tuple(cfg.scale), ratio=tuple(cfg.ratio),
                                     interpolation=inter)] + list(tf[1:])


def build_transforms(cfg, mean: list, std: list, is_training: bool, bgr: bool = False) -> list:
    """MindCV's ImageNet-style transforms with the recipe's augmentation keys, normalised on the host (float32
    CHW out). ``bgr`` swaps the channels to BGR right before normalisation (mean/std are then in BGR order, as
    the checkpoint records them)."""
    from mindcv.data import create_transforms
    if is_training:
        tf = create_transforms("", image_resize=cfg.image_resize, is_training=True, scale=tuple(cfg.scale),
                               ratio=tuple(cfg.ratio), hflip=cfg.hflip, vflip=cfg.vflip,
                               color_jitter=cfg.color_jitter, auto_augment=cfg.auto_augment or None,
                               interpolation=cfg.interpolation, mean=mean, std=std, re_prob=cfg.re_prob)
        if cfg.rotation or cfg.translate:
            tf = _with_affine(cfg, tf)
    else:
        tf = create_transforms("", image_resize=cfg.image_resize, is_training=False, crop_pct=cfg.crop_pct,
                               interpolation=cfg.interpolation, mean=mean, std=std)
    if bgr:
        at = next((i for i, t in enumerate(tf) if type(t).__name__ == "Normalize"), len(tf) - 1)
        tf = tf[:at] + [_rgb_to_bgr] + tf[at:]
    return tf


class ImagePrep(nn.Cell):
    """The normalisation the host pipeline would have done, as the first step of a compiled graph: a uint8
    NHWC batch -> float32 NCHW, ``(x - mean) / std`` per channel (0-255 units, RGB)."""

    def __init__(self, mean, std):
        super().__init__()
        self.mean = ms.Tensor(np.asarray(mean, np.float32).reshape(1, 3, 1, 1))
        self.std = ms.Tensor(np.asarray(std, np.float32).reshape(1, 3, 1, 1))

    def construct(self, x):
        x = ops.cast(ops.transpose(x, (0, 3, 1, 2)), ms.float32)
        return (x - self.mean) / self.std


def _host_tail(tf: list) -> bool:
    """True when ``tf`` ends with MindCV's Normalize + HWC2CHW and nothing after them."""
    return [type(t).__name__ for t in tf[-2:]] == ["Normalize", "HWC2CHW"]


def input_transforms(cfg, mean: list, std: list, is_training: bool) -> tuple:
    """(transforms, prep). Normalisation moves to the device when the training recipe allows it: the pipeline
    then ends with uint8 HWC images (a quarter of the bytes to copy and transfer) and ``prep``, an
    ``ImagePrep``, must be applied first by the compiled train and eval steps. It stays on the host (prep None)
    when an augmentation works on the normalised tensor (MindCV's random erasing, ``re_prob > 0``; mixup and
    cutmix, which mix float CHW batches) or gives float images (MindCV's AugMix). The choice depends on the
    recipe only, so the training and validation transforms always agree."""
    tf = build_transforms(cfg, mean, std, is_training)
    train_tf = tf if is_training else build_transforms(cfg, mean, std, True)
    float_images = cfg.mixup > 0 or cfg.cutmix > 0 or cfg.auto_augment.startswith("augmix")
    if float_images or not _host_tail(train_tf) or not _host_tail(tf):
        return tf, None
    return tf[:-2], ImagePrep(mean, std)


class BatchMix:
    """MindCV's ``Mixup`` as its ``create_loader`` applies it (whole batches, mixup or cutmix with probability 0.5
    each when both are on, ``cutmix_prob`` of the batches mixed at all, the batch mixed with its mirror image):
    a normalised float32 NCHW batch and int labels -> the mixed batch and float32 [N, num_classes] targets
    ``lam * onehot(y) + (1 - lam) * onehot(y[::-1])``, lam the cut box's area fraction kept for cutmix. Label
    smoothing stays in the loss, as in MindCV's loader. An odd batch (a last partial one) and every batch from
    epoch ``mixup_off_epoch`` on (0-based, timm's meaning; 0 = never off) pass unmixed with one-hot targets.

    The draws are a function of (seed, rank, epoch): each epoch starts its own random state, so a resumed run
    mixes as the uninterrupted one did. A loader of one epoch (``steps_per_epoch`` 0, the host feed) knows its
    epoch. The sink dataset's one pipeline (``steps_per_epoch`` batches per epoch from ``start_epoch``) counts
    batches, including the one MindSpore's shape getter pulls before training, so its epochs start a batch
    late: alike in a resumed run and an uninterrupted one, which is what resuming needs."""

    def __init__(self, cfg, num_classes: int, rank: int = 0, start_epoch: int = 0, steps_per_epoch: int = 0):
        from mindcv.data.mixup import Mixup
        self.num_classes, self.seed, self.rank = num_classes, cfg.seed, rank
        self.off_epoch = cfg.mixup_off_epoch
        self.start_epoch, self.steps_per_epoch, self.calls = start_epoch, steps_per_epoch, 0
        self.rng = None
        self.mixer = Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, prob=cfg.cutmix_prob, switch_prob=0.5,
                           mode="batch", label_smoothing=0.0, num_classes=num_classes)

    def __deepcopy__(self, memo):
        fresh = copy.copy(self)
        fresh.calls, fresh.rng = 0, None
        return fresh

    def _epoch(self) -> int:
        """The 0-based epoch of the batch being mixed; a new epoch starts its own random state."""
        k = self.calls // self.steps_per_epoch if self.steps_per_epoch else 0
        if self.rng is None or (self.steps_per_epoch and self.calls % self.steps_per_epoch == 0):
            self.rng = np.random.RandomState([self.seed, self.rank, self.start_epoch + k])
        self.calls += 1
        return self.start_epoch + k

    def __call__(self, images, labels):
        from mindcv.data.mixup import mixup_target
        epoch = self._epoch()
        images = np.array(images, np.float32)  # a writable copy: the mixer works in place
        if len(images) % 2 or (self.off_epoch and epoch >= self.off_epoch):
            return images, mixup_target(np.asarray(labels), self.num_classes).astype(np.float32)
        outer = np.random.get_state()  # MindCV's Mixup draws from numpy's global state: lend it ours
        np.random.set_state(self.rng.get_state())
        try:
            return self.mixer(images, np.asarray(labels))
        finally:
            self.rng.set_state(np.random.get_state())
            np.random.set_state(outer)


def batch_mix(cfg, num_classes: int, rank: int = 0, start_epoch: int = 0, steps_per_epoch: int = 0):
    """The recipe's ``BatchMix`` (``num_classes``: when the recipe's is 0, the class folders'), or None."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return BatchMix(cfg, cfg.num_classes or num_classes, rank, start_epoch, steps_per_epoch)


def _set_error_mode(strict: bool) -> None:
    """MindSpore's error-samples mode (process-wide, read while the pipeline runs): with ``strict_data`` a
    sample the decoder refuses stops the iterator (RETURN); without, the pipeline puts another row in its place
    (REPLACE) and ``_Source.labels_of`` names the file."""
    mode = ds.config.ErrorSamplesMode.RETURN if strict else ds.config.ErrorSamplesMode.REPLACE
    if ds.config.get_error_samples_mode() != mode:
        ds.config.set_error_samples_mode(mode)


def _pipeline(cfg, source: _Source, transforms: list, batch_size: int, drop_remainder: bool, sampler=None,
              mix=None):
    """Reader (one Python thread that only reads and checks bytes) -> ``transforms`` in MindSpore's C++
    operations on ``num_parallel_workers`` threads -> batches -> keys to labels (-> ``mix``: a ``BatchMix``)."""
    _set_error_mode(cfg.strict_data)
    dataset = ds.GeneratorDataset(source, column_names=["image", "label"], num_parallel_workers=1,
                                  **({"sampler": sampler} if sampler is not None else {"shuffle": False}))
    dataset = dataset.map(operations=list(transforms), input_columns="image",
                          num_parallel_workers=cfg.num_parallel_workers)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(operations=source.labels_of, input_columns="label", num_parallel_workers=1)
    if mix is not None:
        dataset = dataset.map(operations=mix, input_columns=["image", "label"], num_parallel_workers=1)
    return dataset


def build_loader(cfg, files: FileList, indices: np.ndarray, transforms: list, is_training: bool,
                 batch_size: int | None = None, epoch: int = 0, rank: int = 0):
    """A batched MindSpore dataset of (image, label) over ``files[indices]`` in that order, for one pass (training:
    of ``epoch``, 0-based, on ``rank``, which seed its batch mixing). Returns (dataset, source); after the
    iterator raises, ``source.first_error`` names the file to blame."""
    source = _Source(files, indices, cfg.strict_data)
    dataset = _pipeline(cfg, source, transforms, batch_size or cfg.batch_size,
                        bool(cfg.drop_remainder and is_training),
                        mix=batch_mix(cfg, len(files.classes), rank, epoch) if is_training else None)
    return dataset, source


def build_train_dataset(cfg, files: FileList, transforms: list, rank: int, world: int, steps: int,
                        start_epoch: int):
    """One batched dataset of (image, label) for every training epoch from ``start_epoch`` (0-based) on, for
    dataset sink mode (``mindspore.data_sink`` sends one dataset to the device queue once). Its k-th pass
    yields the batches of epoch ``start_epoch + k``: ``epoch_indices(len(files), start_epoch + k, cfg.seed,
    rank, world, cfg.shuffle)[:steps * cfg.batch_size]``. Returns (dataset, source).

    The augmentation's random state runs on from one epoch to the next inside the one pipeline, so unlike
    ``build_loader`` (seeded per epoch by the caller) a resumed run sees the same samples per epoch but not
    the same random crops as an uninterrupted one. An unreadable image is replaced by the next readable one in
    file order (``build_loader``: the next in the epoch's order)."""
    source = _Source(files, np.arange(len(files)), cfg.strict_data)
    order = _EpochOrder(len(files), cfg.seed, rank, world, cfg.shuffle, steps * cfg.batch_size, start_epoch,
                        cfg.aug_repeats)
    dataset = _pipeline(cfg, source, transforms, cfg.batch_size, bool(cfg.drop_remainder), sampler=order,
                        mix=batch_mix(cfg, len(files.classes), rank, start_epoch, steps))
    return dataset, source
