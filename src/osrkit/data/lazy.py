"""Image folders read lazily: the files are decoded batch by batch in DataLoader worker
processes, so memory stays flat however many images the folder holds.

``open_image_folder`` reads a folder into memory when its decoded images fit the memory
budget (the fast path) and returns a ``LazyImageSet`` otherwise. Both give the same
uint8 images (the same decoder, ``to_spec_array``), in the same order, with the same
labels, so training on either is the same training.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from osrkit.data.batches import Batch, BatchSource, TensorBatches
from osrkit.data.folder import decode_file, folder_images, infer_spec, load_images
from osrkit.data.imageset import ImageSet, sample_index
from osrkit.data.spec import InputSpec
from osrkit.data.split import data_fingerprint
from osrkit.errors import DataError
from osrkit.hardware import local_world_size, usable_cores

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.25  # default budget: this share of the machine's memory, split over its ranks


def default_memory_budget() -> int:
    """Bytes of decoded training images one process may hold: a quarter of this
    machine's physical memory, divided among the ranks torchrun starts on it (each rank
    holds its own copy of in-memory data)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        total = 8 * 2**30
    return int(total * MEMORY_SHARE / local_world_size())


def default_workers() -> int:
    """DataLoader worker processes per rank: the cores left to it beside the training
    process, at least 1 and at most 4."""
    return max(1, min(4, usable_cores() // local_world_size() - 1))


class _BatchDecoder(Dataset):
    """Decodes a whole batch of files per item (a list of rows), in a worker process.

    A file that cannot be read comes back as its one-line message instead of an
    exception: a worker's exception would reach the main process wrapped in a
    multi-line traceback text, and the worker would be left to the loader's shutdown."""

    def __init__(self, paths: list[str], spec: InputSpec, invert: bool | None) -> None:
        # one bytes array, not a list of str objects: a forked worker touching the
        # objects' reference counts would copy their pages, once per worker
        self.paths = np.array([os.fsencode(p) for p in paths])
        self.spec, self.invert = spec, invert

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: list[int]) -> tuple[torch.Tensor, str]:
        out = np.empty((len(rows), *self.spec.shape), dtype=np.uint8)
        try:
            for i, row in enumerate(rows):
                path = os.fsdecode(self.paths[row])
                out[i] = decode_file(path, self.spec, self.invert)
        except DataError as exc:
            return torch.empty(0, dtype=torch.uint8), str(exc)
        return torch.from_numpy(out), ""


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)  # the workers decode; the cores' math belongs to training


@dataclass
class LazyImageSet:
    """An image folder's files, labels and class names, decoded only when a batch is
    asked for (``batches``, ``float_chunks``, ``load``); the counterpart of ``ImageSet``
    for folders larger than memory. ``workers``: DataLoader worker processes (default
    ``default_workers()``)."""

    paths: list[str] = field(repr=False)
    labels: torch.Tensor = field(repr=False)
    class_names: list[str] = field(repr=False)
    spec: InputSpec
    name: str = "images"
    invert: bool | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise DataError(f"{self.name}: {len(self.paths)} images but {len(self.labels)} labels")
        self.labels = self.labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.spec.shape

    @property
    def nbytes(self) -> int:
        """Bytes the decoded images would take in memory."""
        return len(self) * math.prod(self.spec.shape)

    def subset(self, index: torch.Tensor | np.ndarray | slice, name: str | None = None) -> LazyImageSet:
        """The images at ``index`` (positions or a slice), still undecoded."""
        rows = range(len(self))[index] if isinstance(index, slice) else np.asarray(index).tolist()
        return replace(
            self, paths=[self.paths[i] for i in rows], labels=self.labels[list(rows)], name=name or self.name
        )

    def take(self, n: int | None, seed: int = 0) -> LazyImageSet:
        """A seeded random sample of at most ``n`` images: the sample ``ImageSet.take``
        draws from the same folder."""
        index = sample_index(len(self), n, seed, self.name)
        return self if index is None else self.subset(index)

    def to_spec(self, spec: InputSpec) -> LazyImageSet:
        """The same files, decoded into ``spec``'s channels and size."""
        return self if spec == self.spec else replace(self, spec=spec)

    def load(self, progress: bool = False) -> ImageSet:
        """Every image decoded into memory (for a bounded part, such as the validation split)."""
        images = load_images(self.paths, self.invert, progress, self.spec)
        return ImageSet(
            torch.from_numpy(images), self.labels, list(self.class_names), self.name, self.paths, self.spec
        )

    def batches(self, parts: Iterable[Iterable[int]]) -> Iterator[torch.Tensor]:
        """The uint8 images of each list of rows in ``parts``, decoded in worker processes,
        in order; an unreadable file is one ``DataError`` line naming it."""
        workers = default_workers() if self.workers is None else self.workers
        loader = DataLoader(
            _BatchDecoder(self.paths, self.spec, self.invert),
            sampler=(torch.as_tensor(p).tolist() for p in parts),
            batch_size=None,
            num_workers=workers,
            worker_init_fn=_one_thread if workers else None,
            prefetch_factor=4 if workers else None,
            # the loader seeds its workers from this, not from torch's global generator,
            # whose draws (dropout) must stay those of in-memory training
            generator=torch.Generator().manual_seed(0),
        )
        for images, error in loader:
            if error:
                raise DataError(error)
            yield images

    def float_chunks(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Float batches in [0, 1] of at most ``batch_size`` images, in order."""
        parts = (range(i, min(i + batch_size, len(self))) for i in range(0, len(self), batch_size))
        return (images.float().div_(255.0) for images in self.batches(parts))

    def fingerprint(self) -> str:
        """A cheap identity: the size, and a hash of labels, file names and sampled file sizes."""
        h = hashlib.sha1(usedforsecurity=False)
        h.update(self.labels.numpy().tobytes())
        h.update("\n".join(self.paths).encode())
        for p in self.paths[:: max(1, len(self) // 512)]:
            h.update(str(os.stat(p).st_size).encode())
        return f"{len(self)}:lazy:{h.hexdigest()}"


class LazyBatches(BatchSource):
    """The training loop's batches from a ``LazyImageSet`` (see ``osrkit.data.batches``)."""

    def __init__(self, data: LazyImageSet, with_labels: bool = True) -> None:
        self.data, self.with_labels = data, with_labels

    def __len__(self) -> int:
        return len(self.data)

    def fetch(self, parts: Iterable[torch.Tensor]) -> Iterator[Batch]:
        taken: deque[torch.Tensor] = deque()

        def record() -> Iterator[torch.Tensor]:  # the loader reads ahead; labels follow in order
            for idx in parts:
                taken.append(idx)
                yield idx

        for images in self.data.batches(record()):
            idx = taken.popleft()
            yield images, self.data.labels[idx] if self.with_labels else None


def open_image_folder(
    root: str | os.PathLike,
    spec: InputSpec | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
    invert: bool | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> ImageSet | LazyImageSet:
    """An image folder ``<root>/<class>/...`` (a seeded ``sample`` of it, as ``take``) in
    memory when its decoded images fit ``memory_budget`` bytes (default
    ``default_memory_budget()``; 0: always lazy), else a ``LazyImageSet``; the choice is
    logged with the sizes that made it. The folder is listed once."""
    root = Path(root)
    paths, labels, names = folder_images(root)
    spec = spec or infer_spec(paths)
    budget = default_memory_budget() if memory_budget is None else memory_budget
    lazy = LazyImageSet([str(p) for p in paths], torch.tensor(labels), names, spec, root.name, invert)
    lazy = lazy.take(sample, seed)
    gib = 2**30
    if lazy.nbytes <= budget:
        log.debug(
            "training data %s: %d images, %.2f GiB decoded, within the %.2f GiB memory budget: "
            "read into memory",
            root,
            len(lazy),
            lazy.nbytes / gib,
            budget / gib,
        )
        return lazy.load(progress)
    log.debug(
        "training data %s: %d images, %.2f GiB decoded, over the %.2f GiB memory budget: read lazily "
        "by DataLoader workers",
        root,
        len(lazy),
        lazy.nbytes / gib,
        budget / gib,
    )
    return lazy


def describe_source(data: object) -> str:
    """``lazy`` or ``memory``: how a training set is read."""
    return "lazy" if isinstance(data, LazyImageSet) else "memory"


def training_rows(data: ImageSet | LazyImageSet, index: np.ndarray) -> torch.Tensor | LazyImageSet:
    """Rows ``index`` of a training set as the training loop takes them: uint8 images of
    an in-memory set, a still undecoded subset of a lazy one."""
    return data.subset(index) if isinstance(data, LazyImageSet) else data.images[index]


def memory_rows(data: ImageSet | LazyImageSet, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of a training set as uint8 images in memory (decoded when lazy)."""
    return data.subset(index).load().images if isinstance(data, LazyImageSet) else data.images[index]


def fingerprint(data: ImageSet | LazyImageSet) -> str:
    """The identity of a training set that checkpoints are tied to."""

    return (
        data.fingerprint() if isinstance(data, LazyImageSet) else data_fingerprint(data.images, data.labels)
    )


def batch_source(images: torch.Tensor | BatchSource | object, labels: torch.Tensor | None) -> BatchSource:
    """The batch source of the training images: a ``BatchSource`` as it is, a lazily
    read image set through its DataLoader (labels only when ``labels`` is given), else
    in-memory tensors."""
    if isinstance(images, BatchSource):
        return images
    if isinstance(images, LazyImageSet):
        return LazyBatches(images, with_labels=labels is not None)
    return TensorBatches(images, labels)
