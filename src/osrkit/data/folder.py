"""Reader for image folders laid out as ``<root>/<class>/<image>`` (PNG, JPEG, BMP, GIF)."""

from __future__ import annotations

import logging
import os
import statistics
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from osrkit.data.imageset import ImageSet
from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.data.transforms import flatten_mode, load_image, to_spec_array
from osrkit.errors import DataError

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


def expand_image_paths(items: Iterable[str | os.PathLike]) -> list[Path]:
    """Image paths, with each folder replaced by the images below it (``list_images``);
    a missing path or a folder without images is one line naming it."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = list_images(path)
            if not found:
                suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
                raise DataError(f"folder {path} holds no images ({suffixes}); check the path")
            out.extend(found)
        elif path.exists() or path.is_symlink():  # a broken link or loop: the reader names why
            out.append(path)
        elif str(item).endswith(("/", os.sep)):
            raise DataError(f"folder {path} does not exist; check the path")
        else:
            raise DataError(f"image {path} does not exist; check the path")
    return out


SAMPLE_FOR_SPEC = 200  # images decoded to choose a folder's input spec
MAX_INFERRED_SIDE = 64  # larger photos are brought down to this by default (CPU budget)


def infer_spec(paths: list[Path], seed: int = 0) -> InputSpec:
    """The input spec an image folder suggests, from a seeded sample of its images.

    Channels: 3 when any sampled image has colour (R, G and B differ somewhere), else 1.
    Size: the images' own size when they all share one no larger than 64 pixels
    (stretched, i.e. unchanged); otherwise a square of the median shorter side, within
    [16, 64] (16: the smallest the colour backbone takes) and rounded down to a multiple
    of 4 (the autoencoder halves it twice), with the shorter side resized and the centre
    cropped. ``--image-size`` overrides it.
    """
    if not paths:
        raise DataError("no images to choose an input spec from")
    rng = np.random.default_rng(seed)
    sample = [
        paths[i] for i in sorted(rng.choice(len(paths), min(len(paths), SAMPLE_FOR_SPEC), replace=False))
    ]
    colour, sizes = False, []
    for path in sample:
        img = load_image(path)
        sizes.append(img.size)
        if not colour and Image.getmodebase(img.mode) != "L":  # a colour mode: are its channels equal?
            rgb = np.asarray(_named(path, flatten_mode, img, "RGB"), dtype=np.int16)
            colour = bool((rgb[..., 0] != rgb[..., 1]).any() or (rgb[..., 1] != rgb[..., 2]).any())
    channels = 3 if colour else 1
    w, h = sizes[0]
    if all(s == (w, h) for s in sizes) and max(w, h) <= MAX_INFERRED_SIDE:
        spec = InputSpec(channels, h, w)
    else:
        side = int(statistics.median(min(s) for s in sizes))
        side = max(16, min(MAX_INFERRED_SIDE, side) // 4 * 4)
        spec = InputSpec(channels, side, side, "shorter_side_crop")
    log.debug("input spec chosen from %d sampled images: %s", len(sample), spec.describe())
    return spec


def decode_file(path: str | os.PathLike, spec: InputSpec, invert: bool | None) -> np.ndarray:
    """One image file as uint8 ``(C, H, W)`` in ``spec`` (both folder readers use it)."""
    return _named(path, to_spec_array, load_image(path), spec, invert)


def _named(path: str | os.PathLike, convert: Callable[..., Any], *args: Any) -> Any:
    """``convert(*args)`` on an image decoded from ``path``, its one-line errors naming the file."""
    try:
        return convert(*args)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def load_images(
    paths: Iterable[str | os.PathLike],
    invert: bool | None = None,
    progress: bool = False,
    spec: InputSpec = MNIST_SPEC,
) -> np.ndarray:
    """Read image files into a uint8 array ``(N, C, H, W)`` per ``spec`` (default 1x28x28).

    Decoding runs in a few threads (Pillow releases the GIL while it decodes)."""
    paths = [Path(p) for p in paths]
    out = np.empty((len(paths), *spec.shape), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        decoded = pool.map(decode_file, paths, [spec] * len(paths), [invert] * len(paths), chunksize=64)
        bar = tqdm(decoded, total=len(paths), desc="reading images", disable=not progress, leave=False)
        for i, arr in enumerate(bar):
            out[i] = arr
    return out


def folder_images(
    root: str | os.PathLike, class_names: list[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """The image files of an image folder ``<root>/<class>/...``, their labels and the class
    names (default: the sorted subfolder names); one line naming what is wrong otherwise.

    Images in deeper subfolders belong to their top-level class (so Omniglot's
    ``<alphabet>/<character>/*.png`` gives one class per alphabet).
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
        if not files:
            raise DataError(
                f"class folder {root / cls} holds no images (.png, .jpg, ...); add images or remove it"
            )
        paths += files
        labels += [label] * len(files)
    return paths, labels, names


def read_image_folder(
    root: str | os.PathLike,
    invert: bool | None = None,
    name: str | None = None,
    class_names: list[str] | None = None,
    progress: bool = False,
    spec: InputSpec | None = None,
) -> ImageSet:
    """Read ``<root>/<class>/...`` into an ``ImageSet``; each top-level subfolder is a class
    (see ``folder_images``). ``class_names`` fixes the class order; by default it is the
    sorted subfolder names. ``spec``: the channels and size to read into (default: chosen
    from the images, see ``infer_spec``).
    """
    root = Path(root)
    paths, labels, names = folder_images(root, class_names)
    spec = spec or infer_spec(paths)
    images = load_images(paths, invert=invert, progress=progress, spec=spec)
    log.debug("read %d images in %d classes from %s", len(paths), len(names), root)
    return ImageSet(
        torch.from_numpy(images),
        torch.tensor(labels, dtype=torch.int64),
        names,
        name or root.name,
        [str(p) for p in paths],
        spec,
    )
