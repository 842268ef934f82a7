"""Any images to a model's input tensor: paths, folders, PIL images, arrays, tensors and
``ImageSet``s, checked against the model's ``InputSpec`` (pixels are decoded and resized by
``osrkit.data.transforms``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from osrkit.data.folder import expand_image_paths
from osrkit.data.imageset import ImageSet
from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.data.transforms import convert_array, preprocess_image
from osrkit.errors import DataError

log = logging.getLogger(__name__)

ImagesLike = torch.Tensor | np.ndarray | Image.Image | str | os.PathLike | Sequence


def _as_tensor(x: ImagesLike, spec: InputSpec, invert: bool | None) -> torch.Tensor:
    if isinstance(x, ImageSet):
        return x.to_spec(spec).as_float()
    if isinstance(x, Image.Image):
        return preprocess_image(x, spec, invert).unsqueeze(0)
    if isinstance(x, (str, os.PathLike)):
        x = [x]
    if isinstance(x, (list, tuple)):
        if not x:
            raise DataError("no images given")
        items = [
            item
            for part in x
            for item in (expand_image_paths([part]) if isinstance(part, (str, os.PathLike)) else [part])
        ]
        return torch.stack([preprocess_image(item, spec, invert) for item in items])
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise DataError("cannot read images from an object array; pass numbers or a list of paths")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"cannot read images from a {type(x).__name__}; pass a tensor, array, "
            "ImageSet, PIL image, path or list of paths"
        )
    return x


def check_array_shape(x: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """``x`` as ``(N, C, H, W)``: ``(H, W)`` and ``(N, H, W)`` are accepted for grayscale
    specs. A 3-channel array for a grayscale spec is converted to luma (and a 1-channel
    array for an RGB spec repeated), with a log line saying so; any other shape is
    refused in one line naming the shape expected."""
    c, h, w = spec.shape
    if x.ndim == 2 and c == 1:
        x = x.unsqueeze(0)
    if x.ndim == 3 and (c == 1 or tuple(x.shape) != spec.shape):
        x = x.unsqueeze(1)
    elif x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or tuple(x.shape[2:]) != (h, w) or x.shape[1] not in (1, 3):
        raise DataError(
            f"images must have shape (N, {c}, {h}, {w}) for this model ({spec.describe()}), got "
            f"{tuple(x.shape)}; pass files or PIL images to have them resized"
        )
    if x.shape[1] != c:
        log.warning("converting %d-channel images to the model's %d channel(s)", x.shape[1], c)
        if x.dtype == torch.uint8:  # through Pillow, as files and ImageSets are converted
            return convert_array(x.contiguous(), spec)
        if c == 1:  # float images: ITU-R 601-2 luma, the weights of Pillow's convert("L")
            weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
            return (x.to(torch.float64) * weights).sum(1, keepdim=True).to(x.dtype)
        return x.expand(-1, 3, -1, -1)
    return x


def as_input_tensor(
    x: ImagesLike | ImageSet, spec: InputSpec = MNIST_SPEC, invert: bool | None = None
) -> torch.Tensor:
    """Coerce images to a float tensor ``(N, C, H, W)`` in [0, 1] per ``spec``.

    Accepts an ``ImageSet`` (converted to the spec); a path, PIL image, or a list of
    either (any size, grayscale or colour; decoded, converted and resized); or a uint8
    (0..255) or float (0..1) array/tensor already of the spec's height and width (see
    ``check_array_shape``). ``invert`` applies to files and PIL images only.
    """
    x = _as_tensor(x, spec, invert)
    x = check_array_shape(x, spec)
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise DataError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise DataError("images contain NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"float images must lie in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    return x.contiguous()
