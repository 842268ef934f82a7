"""Where the training loop's batches come from.

In memory (the default, and the fast path): index the uint8 tensor, no DataLoader and
no per-sample Python. A folder too large for memory (``osrkit.data.lazy``): the same
index lists go to a ``DataLoader`` whose worker processes decode each batch's files.
Either way the loop receives uint8 ``(B, C, H, W)`` batches and labels in the order of
the index lists, and augments them itself, so both sources train alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch

Batch = tuple[torch.Tensor, torch.Tensor | None]


class BatchSource:
    """Uint8 image batches (and labels) for lists of row indices."""

    def __len__(self) -> int:
        raise NotImplementedError

    def fetch(self, parts: Iterable[torch.Tensor]) -> Iterator[Batch]:
        """The rows of each index tensor of ``parts``, in order."""
        raise NotImplementedError


class TensorBatches(BatchSource):
    """Batches sliced from in-memory tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def fetch(self, parts: Iterable[torch.Tensor]) -> Iterator[Batch]:
        for idx in parts:
            yield self.images[idx], None if self.labels is None else self.labels[idx]
