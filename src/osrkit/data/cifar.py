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
from .preprocess import to_gray28_uint8

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


def rgb_to_gray28(rgb: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 RGB -> ``(N, 28, 28)`` uint8 via the shared preprocessing."""
    from PIL import Image

    return np.stack([to_gray28_uint8(Image.fromarray(img, "RGB")) for img in rgb])


def read_cifar10_test(root: Path) -> ImageSet:
    """CIFAR-10 test set as 28x28 grayscale, from ``cifar-10-batches-py/test_batch`` or
    ``CIFAR10/test/<class>/*.png``, whichever exists (the batch is preferred)."""
    batch = root / "cifar-10-batches-py" / "test_batch"
    folder = root / "CIFAR10" / "test"
    if batch.is_file():
        verify_md5(batch, TEST_BATCH_MD5)
        rgb, labels = read_cifar_batch(batch)
        images = torch.from_numpy(rgb_to_gray28(rgb))
        return ImageSet(images, torch.from_numpy(labels), list(CLASSES), "CIFAR-10")
    if folder.is_dir():
        return read_image_folder(folder, name="CIFAR-10", class_names=list(CLASSES))
    raise DataError(
        f"CIFAR-10 test set not found under {root}: expected {batch} (md5 "
        f"{TEST_BATCH_MD5}) or PNG folders {folder}/<class>/*.png; "
        "rerun with --download or point --data-root at it"
    )
