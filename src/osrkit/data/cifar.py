"""CIFAR-10 readers: the python-batch layout and the PNG image-folder layout."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from .download import verify_md5
from .folder import read_image_folder
from .imageset import ImageSet
from .spec import CIFAR10_SPEC, MNIST_SPEC, InputSpec

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
        batch = _NumpyOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise DataError(f"missing CIFAR-10 batch {path}") from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: not a valid CIFAR-10 python batch ({exc}); download it again") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{path}: unexpected CIFAR-10 batch shape {data.shape}")
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


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
    """CIFAR-10 test set (by default as the seed's 28x28 grayscale)."""
    return read_cifar10(root, "test", spec)
