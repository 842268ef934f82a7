"""``ImageSet``: a labelled set of images held in memory as uint8 ``(N, C, H, W)``."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from osrkit.data.spec import InputSpec
from osrkit.data.transforms import convert_array
from osrkit.errors import DataError


def sample_index(size: int, n: int | None, seed: int, name: str) -> torch.Tensor | None:
    """Sorted indices of a seeded random sample of at most ``n`` of ``size`` items, or None
    for all of them: the one sampling rule of in-memory and lazily read sets."""
    if n is None or n >= size:
        return None
    if n <= 0:
        raise DataError(f"{name}: sample size must be positive, got {n}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=g)[:n].sort().values


@dataclass
class ImageSet:
    """Images ``(N, C, H, W)`` uint8 (C = 1 or 3), labels ``(N,)`` int64 and the class names.

    Grayscale images may be given as ``(N, H, W)``; they are stored with C = 1. A label
    indexes ``class_names``; unknown-class sets may carry their own labels (for example
    CIFAR-10 classes) that the recognizer never sees.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    class_names: list[str] = field(repr=False)
    name: str = "images"
    paths: list[str] | None = field(default=None, repr=False)
    # The input spec the images were read into, when a reader knows it (its resize mode
    # and normalisation); ``fit`` adopts it as the model's.
    spec: InputSpec | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype == torch.uint8 and self.images.ndim == 3:
            self.images = self.images.unsqueeze(1)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] not in (1, 3):
            raise DataError(
                f"{self.name}: images must be a uint8 tensor of shape (N, C, H, W) with C 1 or 3, "
                f"or (N, H, W), got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but {tuple(self.labels.shape)} labels"
            )
        if self.paths is not None and len(self.paths) != self.images.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {len(self.paths)} paths")
        self.labels = self.labels.to(torch.int64)
        if self.spec is not None and self.spec.shape != self.shape:
            self.spec = None

    def __repr__(self) -> str:
        return f"ImageSet(name={self.name!r}, n={len(self)}, classes={len(self.class_names)})"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: torch.Tensor | np.ndarray | slice, name: str | None = None) -> ImageSet:
        """Return the images at ``index`` (positions, a boolean mask, or a slice)."""
        if isinstance(index, np.ndarray):
            index = torch.from_numpy(index)
        if isinstance(index, torch.Tensor) and index.dtype == torch.bool:
            index = index.nonzero().flatten()
        paths = None
        if self.paths is not None:
            idx = range(len(self))[index] if isinstance(index, slice) else index.tolist()
            paths = [self.paths[i] for i in idx]
        return ImageSet(
            self.images[index],
            self.labels[index],
            list(self.class_names),
            name or self.name,
            paths,
            self.spec,
        )

    def take(self, n: int | None, seed: int = 0) -> ImageSet:
        """A seeded random sample of at most ``n`` images (all of them when ``n`` is None)."""
        index = sample_index(len(self), n, seed, self.name)
        return self if index is None else self.subset(index)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def to_spec(self, spec: InputSpec) -> ImageSet:
        """The same images in ``spec``'s channels and size (self when they already are);
        converted image by image through Pillow, as image files are."""
        if self.shape == spec.shape:  # same pixels; a set that carries a spec takes the new one
            return self if self.spec in (None, spec) else replace(self, spec=spec)
        images = convert_array(self.images, spec)
        return ImageSet(images, self.labels, list(self.class_names), self.name, self.paths, spec)

    def as_float(self) -> torch.Tensor:
        """Images as a float tensor ``(N, C, H, W)`` in [0, 1]."""
        return self.images.float().div_(255.0)

    def class_counts(self) -> dict[str, int]:
        """How many images each class has."""
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return {name: int(c) for name, c in zip(self.class_names, counts)}
