"""Reader for image folders laid out as ``<root>/<class>/<image>`` (PNG, JPEG, BMP, GIF)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import DataError
from .imageset import ImageSet
from .preprocess import load_image, to_gray28_uint8

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


def _sort_key(path: Path) -> tuple:
    # Numeric file names sort by number (CIFAR10/test/<class>/00042.png keeps test order).
    return (
        path.parent.as_posix(),
        int(path.stem) if path.stem.isdecimal() and path.stem.isascii() else float("inf"),
        path.name,
    )


def list_images(folder: Path) -> list[Path]:
    """All image files below ``folder`` (any depth), in a stable order."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=_sort_key)


def load_images(
    paths: Iterable[str | os.PathLike], invert: bool = False, progress: bool = False
) -> np.ndarray:
    """Read and preprocess image files into a uint8 array ``(N, 28, 28)``."""
    paths = list(paths)
    out = np.empty((len(paths), 28, 28), dtype=np.uint8)
    for i, path in enumerate(tqdm(paths, desc="reading images", disable=not progress, leave=False)):
        out[i] = to_gray28_uint8(load_image(path), invert=invert)
    return out


def read_image_folder(
    root: str | os.PathLike,
    invert: bool = False,
    name: str | None = None,
    class_names: list[str] | None = None,
    progress: bool = False,
) -> ImageSet:
    """Read ``<root>/<class>/...`` into an ``ImageSet``; each top-level subfolder is a class.

    Images in deeper subfolders belong to their top-level class (so Omniglot's
    ``<alphabet>/<character>/*.png`` gives one class per alphabet). ``class_names``
    fixes the class order; by default it is the sorted subfolder names.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist; pass a folder laid out as <class>/<image>")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"image folder {root} has no class subfolders; lay it out as {root}/<class>/<image>")
    names = list(class_names) if class_names is not None else found
    missing = [c for c in names if c not in found]
    if missing:
        raise DataError(f"image folder {root} lacks the class folders {missing}")
    paths: list[Path] = []
    labels: list[int] = []
    for label, cls in enumerate(names):
        files = list_images(root / cls)
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"image folder {root} holds no images (.png, .jpg, ...) in its class folders")
    images = load_images(paths, invert=invert, progress=progress)
    log.info("read %d images in %d classes from %s", len(paths), len(names), root)
    return ImageSet(
        torch.from_numpy(images),
        torch.tensor(labels, dtype=torch.int64),
        names,
        name or root.name,
        [str(p) for p in paths],
    )
