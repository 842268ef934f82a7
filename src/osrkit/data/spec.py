"""``InputSpec``: what a model expects as input, saved with it and applied on every path.

Like timm's ``pretrained_cfg`` (``input_size``, ``mean``, ``std``, ``interpolation``), the
spec travels with the model: ``config.json`` and the ONNX metadata hold it, and every
way of giving images (files, PIL images, arrays, tensors, ``ImageSet``) is brought to it
before a network sees them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from osrkit.errors import ConfigError

RESIZE_MODES = ("stretch", "shorter_side_crop")
MAX_SIDE = 4096  # larger inputs would not fit a CPU training budget; refuse them early


@dataclass(frozen=True)
class InputSpec:
    """Channels (1 = grayscale, 3 = RGB), height and width of the network input.

    resize: how an image of another size is brought to ``height x width``: ``stretch``
        (antialiased bilinear resize to exactly that size, the aspect ratio is not kept)
        or ``shorter_side_crop`` (the shorter side is resized to fit, then the centre is
        cropped, as ImageNet classifiers expect).
    mean, std: per-channel normalisation ``(x - mean) / std`` of the [0, 1] pixels,
        applied inside the model (so the ONNX graph does it too); ``None`` = none.
    invert: image FILES (and PIL images) are inverted when read, for a model trained on
        light strokes on a dark background (MNIST) that is given dark-on-light scans.
        Arrays and tensors are taken as already in the model's convention.
    """

    channels: int = 1
    height: int = 28
    width: int = 28
    resize: str = "stretch"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    invert: bool = False

    def __post_init__(self) -> None:
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels!r}")
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SIDE:
                raise ConfigError(f"image {name} must be an integer in [1, {MAX_SIDE}], got {value!r}")
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both mean and std for normalisation, or neither")
        if self.mean is not None:
            mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))
            if len(mean) != self.channels or len(std) != self.channels:
                raise ConfigError(f"mean and std need one value per channel ({self.channels})")
            if not all(math.isfinite(v) for v in mean) or not all(math.isfinite(s) and s > 0 for s in std):
                raise ConfigError(f"mean must be finite and std positive, got mean {mean}, std {std}")
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(channels, height, width)``."""
        return (self.channels, self.height, self.width)

    @property
    def pixels(self) -> int:
        """Values per image, ``channels * height * width``."""
        return self.channels * self.height * self.width

    @property
    def mode(self) -> str:
        """The Pillow mode images are converted to: ``L`` or ``RGB``."""
        return "L" if self.channels == 1 else "RGB"

    @property
    def normalizes(self) -> bool:
        return self.mean is not None

    def with_size(self, height: int, width: int | None = None) -> InputSpec:
        return replace(self, height=height, width=height if width is None else width)

    def describe(self) -> str:
        kind = "grayscale" if self.channels == 1 else "RGB"
        return f"{self.channels}x{self.height}x{self.width} {kind} ({self.resize})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "channels": self.channels,
            "height": self.height,
            "width": self.width,
            "resize": self.resize,
            "mean": list(self.mean) if self.mean is not None else None,
            "std": list(self.std) if self.std is not None else None,
            "invert": self.invert,
            "scale": "uint8 / 255 -> [0, 1]",
            "grayscale": "ITU-R 601-2 luma (Pillow convert('L'))",
            "interpolation": "bilinear, antialiased (Pillow resize)",
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InputSpec:
        """The spec ``to_dict`` wrote (a model folder's ``config.json``, ONNX metadata);
        anything else is one ``ConfigError`` line."""
        try:
            return cls(
                channels=_whole(d["channels"]),
                height=_whole(d["height"]),
                width=_whole(d["width"]),
                resize=str(d.get("resize", "stretch")),
                mean=_floats(d.get("mean")),
                std=_floats(d.get("std")),
                invert=bool(d.get("invert", False)),
            )
        except (LookupError, TypeError, ValueError, ArithmeticError) as exc:
            raise ConfigError(f"not an input spec ({exc}): {_short(d)}") from None

    @classmethod
    def from_legacy(cls, preprocessing: dict[str, Any] | None) -> InputSpec:
        """The spec of a model folder of format 1 or 2 (its ``preprocessing`` entry was
        always 1x28x28 grayscale, stretched, not normalised)."""
        p = preprocessing or {}
        try:
            height, width = p.get("size", [28, 28])
            return cls(channels=_whole(p.get("channels", 1)), height=_whole(height), width=_whole(width))
        except (LookupError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"not a format-1 or 2 preprocessing entry ({exc}): {_short(p)}") from None


def _whole(value: Any) -> int:
    """An integer as JSON holds one: ``true``, ``28.7`` and ``"28"`` are not (``int()``
    would take them as 1, 28 and 28)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _floats(value: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if value is None else tuple(float(v) for v in value)


MNIST_SPEC = InputSpec(1, 28, 28)
CIFAR10_SPEC = InputSpec(3, 32, 32)
# ImageNet-trained classifiers (torchvision's and timm's convention): 224 px, centre crop.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SPEC = InputSpec(3, 224, 224, "shorter_side_crop", IMAGENET_MEAN, IMAGENET_STD)
