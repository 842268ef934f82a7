"""``ImageSet``: a labelled set of 28x28 grayscale images held in memory as uint8."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import DataError


@dataclass
class ImageSet:
    """Images ``(N, 28, 28)`` uint8, labels ``(N,)`` int64 and the class names.

    A label indexes ``class_names``; unknown-class sets may carry their own
    labels (for example CIFAR-10 classes) that the recognizer never sees.
    """

    images: torch.Tensor = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    class_names: list[str] = field(repr=False)
    name: str = "images"
    paths: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 3:
            raise DataError(
                f"{self.name}: images must be a uint8 tensor of shape (N, H, W), "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.name}: {self.images.shape[0]} images but {tuple(self.labels.shape)} labels"
            )
        if self.paths is not None and len(self.paths) != self.images.shape[0]:
            raise DataError(f"{self.name}: {self.images.shape[0]} images but {len(self.paths)} paths")
        self.labels = self.labels.to(torch.int64)

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
            self.images[index], self.labels[index], list(self.class_names), name or self.name, paths
        )

    def take(self, n: int | None, seed: int = 0) -> ImageSet:
        """A seeded random sample of at most ``n`` images (all of them when ``n`` is None)."""
        if n is None or n >= len(self):
            return self
        if n <= 0:
            raise DataError(f"{self.name}: sample size must be positive, got {n}")
        g = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(self), generator=g)[:n].sort().values
        return self.subset(index)

    def as_float(self) -> torch.Tensor:
        """Images as a float tensor ``(N, 1, 28, 28)`` in [0, 1]."""
        return self.images.unsqueeze(1).float().div_(255.0)

    def class_counts(self) -> dict[str, int]:
        """How many images each class has."""
        counts = torch.bincount(self.labels, minlength=len(self.class_names)).tolist()
        return {name: int(c) for name, c in zip(self.class_names, counts)}
