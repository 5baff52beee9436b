"""The images of a split, listed from the dataset's own layout (nothing is copied or reorganised).

- ``folder`` / ``imagenet``: ``data_dir/<split>/<class>/<image>`` (one folder per class; images may sit in
  sub-folders of a class folder). A symlink that leads back into a folder holding it is refused.
- ``tiny_imagenet``: Tiny ImageNet's own layout: ``train/<wnid>/images/*.JPEG``,
  ``val/images/*.JPEG`` labelled by ``val/val_annotations.txt``, classes from ``wnids.txt``, readable names
  from ``words.txt``.
- ``digits``: prepared once (``digits.prepare_digits``), then read as ``folder``.

Each split becomes a ``FileList`` (paths, labels, class names).
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..meta import IMAGE_EXTENSIONS
from .digits import prepare_digits

__all__ = ["FileList", "scan", "default_data_dir"]


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
