"""CIFAR-10 readers: the python-batch layout and the PNG image-folder layout."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from osrkit.data.download import verify_md5
from osrkit.data.folder import read_image_folder
from osrkit.data.imageset import ImageSet
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC, InputSpec
from osrkit.errors import DataError

log = logging.getLogger(__name__)

TEST_BATCH_MD5 = "40351d587109b95175f43aff81a1287e"  # cifar-10-batches-py/test_batch, as published

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches without running arbitrary code.

    The CIFAR python batches are pickles by format; only the numpy globals needed to
    rebuild an ndarray are allowed, anything else is refused.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # protocol-5 pickles written by recent numpy rebuild arrays from a buffer
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 (pickle API)
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR batch")


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a CIFAR-10 python batch: ``(N, 32, 32, 3)`` uint8 RGB images and labels."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing CIFAR-10 batch {path}") from None
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"])
    except MemoryError:
        raise DataError(f"{path}: CIFAR-10 batch too large for this memory; download it again") from None
    except Exception as exc:
        # Unpickling arbitrary bytes fails in many ways (UnpicklingError, EOFError,
        # OverflowError for values out of uint8, IndexError, ...): all say the file is damaged.
        cause = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'unreadable'}"
        raise DataError(f"{path}: not a valid CIFAR-10 python batch ({cause}); download it again") from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise DataError(
            f"{path}: unexpected CIFAR-10 batch shapes: images {data.shape}, labels {labels.shape} "
            f"(expected (N, 3072) and (N,)); download it again"
        )
    data = _integers(data, 255, "pixels", path).astype(np.uint8, copy=False)
    labels = _integers(labels, len(CLASSES) - 1, "labels", path).astype(np.int64, copy=False)
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _integers(values: np.ndarray, high: int, what: str, path: Path) -> np.ndarray:
    """``values`` when they are integers in ``0..high``: a cast would wrap or truncate
    anything else silently (300 to 44, 3.7 to 3)."""
    if values.dtype.kind not in "iu":
        found = f"{values.dtype} values"
    elif values.size and (values.min() < 0 or values.max() > high):
        found = f"values {values.min()}..{values.max()}"
    else:
        return values
    raise DataError(
        f"{path}: CIFAR-10 {what} must be integers in 0..{high}, found {found}; download it again"
    )


TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _from_batches(files: list[Path], spec: InputSpec | None, name: str) -> ImageSet:
    parts = [read_cifar_batch(f) for f in files]
    rgb = np.concatenate([p[0] for p in parts]).transpose(0, 3, 1, 2)
    labels = np.concatenate([p[1] for p in parts])
    images = torch.from_numpy(np.ascontiguousarray(rgb))
    data = ImageSet(images, torch.from_numpy(labels), list(CLASSES), name, spec=CIFAR10_SPEC)
    return data.to_spec(spec) if spec is not None else data


def read_cifar10(
    root: Path, split: str = "test", spec: InputSpec | None = None, progress: bool = False
) -> ImageSet:
    """CIFAR-10 in colour, 3x32x32 (or brought to ``spec``), from the python batches
    (``cifar-10-batches-py/test_batch`` or ``data_batch_1..5``) when present, else from the
    image folders ``CIFAR10/<split>/<class>/*`` (PNG for test, a JPEG copy for train)."""
    batches = root / "cifar-10-batches-py"
    files = [batches / "test_batch"] if split == "test" else [batches / b for b in TRAIN_BATCHES]
    folder = root / "CIFAR10" / split
    name = "CIFAR-10" if split == "test" else "CIFAR-10 train"
    if all(f.is_file() for f in files):
        if split == "test":
            verify_md5(files[0], TEST_BATCH_MD5)
        return _from_batches(files, spec, name)
    if folder.is_dir():
        return read_image_folder(
            folder, name=name, class_names=list(CLASSES), spec=spec or CIFAR10_SPEC, progress=progress
        )
    md5 = f" (md5 {TEST_BATCH_MD5})" if split == "test" else ""
    raise DataError(
        f"CIFAR-10 {split} set not found under {root}: expected {', '.join(f.name for f in files)}{md5} in "
        f"{batches} or image folders {folder}/<class>/*; rerun with --download or point --data-root at it"
    )


def read_cifar10_test(root: Path, spec: InputSpec | None = MNIST_SPEC) -> ImageSet:
    """CIFAR-10 test set (by default as the digits baseline's 28x28 grayscale)."""
    return read_cifar10(root, "test", spec)
