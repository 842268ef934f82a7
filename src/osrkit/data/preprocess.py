"""Turn any image into the 1x28x28 grayscale input the models expect."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError

SIZE = 28


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file with Pillow, raising ``DataError`` when it cannot be read."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img
    except FileNotFoundError:
        raise DataError(f"image {path} does not exist") from None
    except Image.DecompressionBombError:
        raise DataError(f"{path}: image is too large to decode safely (over Pillow's pixel limit)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(
            f"{path}: not a readable image ({exc.__class__.__name__}); supply a PNG or JPEG file"
        ) from None


def to_gray28_uint8(image: Image.Image, size: int = SIZE, invert: bool = False) -> np.ndarray:
    """Grayscale (ITU-R 601 luma) and antialiased resize to ``size x size``, as uint8.

    Pillow's ``convert("L")`` computes L = 0.299 R + 0.587 G + 0.114 B (ITU-R 601-2);
    its ``resize`` with a bilinear filter widens the kernel when shrinking, which
    antialiases. Transparent pixels are composited on black (MNIST's background).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        hi = arr.max() if arr.size else 1.0
        scale = 255.0 / (65535.0 if image.mode.startswith("I;16") else max(hi, 1.0))
        image = Image.fromarray(np.clip(arr * scale, 0, 255).astype(np.uint8), "L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    gray = image.convert("L")
    if gray.size != (size, size):
        gray = gray.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
    arr = np.asarray(gray, dtype=np.uint8)
    return 255 - arr if invert else arr


def preprocess_image(image: Image.Image | str | os.PathLike, invert: bool = False) -> torch.Tensor:
    """Any image (or image path) -> float tensor ``(1, 28, 28)`` in [0, 1].

    RGB becomes grayscale with ITU-R 601 luma weights, then an antialiased resize
    to 28x28. ``invert=True`` flips dark-on-light images to MNIST's light-on-dark.
    """
    if not isinstance(image, Image.Image):
        image = load_image(image)
    if image.width <= 0 or image.height <= 0:
        raise DataError("image has zero width or height")
    arr = to_gray28_uint8(image, invert=invert)
    return torch.from_numpy(arr.copy()).float().div_(255.0).unsqueeze(0)
