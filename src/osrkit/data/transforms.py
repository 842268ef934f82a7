"""Pixels: decoding image files and bytes with Pillow (upright, size-checked) and bringing
one image to a model's ``InputSpec``. Every image in osrkit (training data, test data,
``predict``, the service, the ONNX backend) is decoded here; ``osrkit.data.inputs`` turns
any collection of images into a model's input tensor.
"""

from __future__ import annotations

import errno
import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import DataError

log = logging.getLogger(__name__)


class ImageTooLarge(DataError):
    """An image too large to decode: its header claims more pixels than the limit, or its
    decoding ran out of memory. ``size`` says how large, as text (``"13000x13000"``,
    ``"more than 178,956,970"``), or None when memory ran out."""

    def __init__(self, message: str, size: str | None = None) -> None:
        super().__init__(message)
        self.size = size


def _unreadable(
    path: Path, exc: BaseException, on_disk: bool = True, accepted: Sequence[str] | None = None
) -> DataError:
    """A one-line error naming why ``path`` (a file, or the name of bytes in memory) could
    not be read; ``accepted``: the formats it was opened as, if not every one Pillow reads."""
    text = str(exc).lower()
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:
        cause = "a symbolic-link loop"
    elif isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM):
        cause = "permission denied"
    elif isinstance(exc, IsADirectoryError):
        cause = "a folder, not an image file"
    elif "truncated" in text or "broken data stream" in text or "premature end" in text:
        cause = "truncated or corrupt image data"
    elif isinstance(exc, UnidentifiedImageError) and accepted:
        cause = f"not a {format_names(accepted)} file"
    elif isinstance(exc, UnidentifiedImageError):
        cause = (
            "empty file"
            if on_disk and path.is_file() and path.stat().st_size == 0
            else "not an image Pillow can read"
        )
    else:
        cause = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    return DataError(f"{path}: not a readable image ({cause}); supply a PNG or JPEG file")


def format_names(formats: Sequence[str]) -> str:
    """``("PNG", "JPEG", "WEBP")`` as ``"PNG, JPEG or WebP"``."""
    names = [{"WEBP": "WebP"}.get(f, f) for f in formats]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open and decode an image file with Pillow, raising a one-line ``DataError`` that
    names the cause (missing, truncated, not an image, too large, a link loop)."""
    return _decode(Path(path), Path(path))


def decode_image_bytes(data: bytes, name: str = "image", max_pixels: int | None = None) -> Image.Image:
    """Decode an image held in memory (an upload), with ``load_image``'s one-line errors
    naming it ``name``; ``max_pixels`` as in ``open_image``."""
    if not data:
        raise DataError(f"{name}: empty file; supply a PNG or JPEG file")
    return _decode(io.BytesIO(data), Path(name), max_pixels)


def open_image(
    source: Path | io.BytesIO,
    path: Path,
    max_pixels: int | None = None,
    formats: Sequence[str] | None = None,
) -> Image.Image:
    """``source`` opened lazily (Pillow reads the header, decodes nothing), named ``path``
    in errors. More than ``max_pixels`` pixels (default Pillow's ``MAX_IMAGE_PIXELS``, where
    it warns of a decompression bomb) is an ``ImageTooLarge`` before decoding: Pillow itself
    only warns up to twice that, and a few hundred bytes can claim a canvas of that size.
    ``formats``: the only formats to open (default: every one Pillow reads)."""
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        image = Image.open(source, formats=formats)
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Image.DecompressionBombError:
        raise ImageTooLarge(
            f"{path}: image is too large to decode safely (over Pillow's pixel limit); resize it first",
            f"more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,}",  # where Pillow refuses
        ) from None
    except Exception as exc:  # as in load_opened
        raise _unreadable(path, exc, isinstance(source, Path), formats) from None
    if limit and image.width * image.height > limit:
        image.close()
        raise ImageTooLarge(
            f"{path}: image is {image.width}x{image.height} pixels, over the {limit:,} osrkit "
            "decodes; resize it first",
            f"{image.width}x{image.height}",
        )
    return image


def load_opened(image: Image.Image, path: Path, on_disk: bool = True) -> Image.Image:
    """Decode an image ``open_image`` opened, turned upright; one-line errors naming ``path``."""
    try:
        image.load()
        image = upright(image)
    except MemoryError:
        raise ImageTooLarge(f"{path}: image is too large to decode in this memory; resize it first") from None
    except Exception as exc:
        # Pillow's format plugins meet malformed data with many exception types
        # (NotImplementedError, struct.error, EOFError, IndexError, ...): for every one of
        # them the file is not an image we can read, which is what the user needs to know.
        raise _unreadable(path, exc, on_disk) from None
    if image.width <= 0 or image.height <= 0:
        raise DataError(f"{path}: image has zero width or height; supply a PNG or JPEG file")
    return image


def _decode(source: Path | io.BytesIO, path: Path, max_pixels: int | None = None) -> Image.Image:
    """Open (``open_image``: the size checked in the header) and decode (``load_opened``)."""
    with open_image(source, path, max_pixels) as img:
        return load_opened(img, path, isinstance(source, Path))


EXIF_ORIENTATION = 0x0112


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says (cameras and phones store photos
    sideways with a tag saying how to turn them); unchanged without such a tag."""
    try:
        turned = image.getexif().get(EXIF_ORIENTATION, 1) not in (1, None)
    except Exception:  # an unreadable EXIF block says nothing about the pixels
        return image
    return ImageOps.exif_transpose(image) if turned else image


def flatten_mode(image: Image.Image, mode: str) -> Image.Image:
    """``image`` in Pillow mode ``mode`` (``L`` or ``RGB``): 16-bit and float images are
    scaled to 8 bits (NaN and -inf as 0, +inf as the largest finite value), transparent
    pixels composited on black (MNIST's background), CIELab through RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        finite = np.isfinite(arr)
        hi = float(arr[finite].max()) if finite.any() else 1.0
        arr = np.where(finite, arr, np.where(arr > 0, hi, 0.0))
        scale = 255.0 / (65535.0 if image.mode.startswith("I;16") else max(hi, 1.0))
        image = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    elif image.mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image = image.convert("LA")
    elif image.mode == "LAB":  # Pillow converts CIELab to RGB only (to L through RGB fails)
        image = image.convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode == mode:
        return image
    try:
        return image.convert(mode)
    except ValueError:  # a mode Pillow holds but cannot convert
        raise DataError(
            f"images of Pillow mode {image.mode} cannot be converted to {mode}; save the image as RGB"
        ) from None


def _resize(image: Image.Image, spec: InputSpec) -> Image.Image:
    """Antialiased bilinear resize per ``spec.resize`` (Pillow widens the kernel when
    shrinking, which antialiases)."""
    w, h = spec.width, spec.height
    if image.size == (w, h):
        return image
    if spec.resize == "shorter_side_crop":
        scale = max(w / image.width, h / image.height)
        size = (max(w, round(image.width * scale)), max(h, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)
        left, top = (size[0] - w) // 2, (size[1] - h) // 2
        return image.crop((left, top, left + w, top + h))
    return image.resize((w, h), Image.Resampling.BILINEAR, reducing_gap=None)


def to_spec_array(image: Image.Image, spec: InputSpec = MNIST_SPEC, invert: bool | None = None) -> np.ndarray:
    """A PIL image as uint8 ``(C, H, W)`` in ``spec``'s channels and size.

    Grayscale uses Pillow's ITU-R 601-2 luma (L = 0.299 R + 0.587 G + 0.114 B); a
    grayscale image given to an RGB spec repeats its channel. ``invert`` (default:
    ``spec.invert``) turns dark-on-light into light-on-dark.
    """
    if image.width <= 0 or image.height <= 0:
        raise DataError("image has zero width or height")
    image = _resize(flatten_mode(upright(image), spec.mode), spec)
    arr = np.asarray(image, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    if spec.invert if invert is None else invert:
        arr = 255 - arr
    return np.require(arr, requirements=["C", "W"])  # contiguous and writable (torch.from_numpy)


def to_gray28_uint8(image: Image.Image, size: int = 28, invert: bool = False) -> np.ndarray:
    """Grayscale ``size x size`` uint8 ``(H, W)``: the digits baseline's preprocessing, kept for callers."""
    return to_spec_array(image, InputSpec(1, size, size), invert)[0]


def preprocess_image(
    image: Image.Image | str | os.PathLike, spec: InputSpec = MNIST_SPEC, invert: bool | None = None
) -> torch.Tensor:
    """Any image (or image path) -> float tensor ``(C, H, W)`` in [0, 1] per ``spec``
    (default: the digits baseline's 1x28x28 grayscale)."""
    if isinstance(spec, bool):  # the digits baseline's signature was preprocess_image(image, invert)
        spec, invert = MNIST_SPEC, spec
    if not isinstance(image, Image.Image):
        image = load_image(image)
    return torch.from_numpy(to_spec_array(image, spec, invert)).float().div_(255.0)


def chw_to_pil(image: np.ndarray) -> Image.Image:
    """A uint8 ``(C, H, W)`` array as a PIL image: mode ``L`` for one channel, else ``RGB``."""
    return (
        Image.fromarray(image[0], "L")
        if image.shape[0] == 1
        else Image.fromarray(image.transpose(1, 2, 0), "RGB")
    )


def convert_array(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` brought to ``spec`` through Pillow, image by image, as
    files are (so a CIFAR-10 array and the same images as PNGs give the same pixels)."""
    if tuple(x.shape[1:]) == spec.shape:
        return x
    out = np.empty((len(x), *spec.shape), dtype=np.uint8)
    for i, img in enumerate(x.numpy()):
        out[i] = to_spec_array(chw_to_pil(img), spec, invert=False)
    return torch.from_numpy(out)
