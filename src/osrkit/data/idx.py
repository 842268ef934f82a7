"""Reader for the IDX format of MNIST-family datasets (optionally gzip-compressed).

IDX: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then one
big-endian uint32 per dimension, then the payload. We read it ourselves because
torchvision cannot be used here and the format is a dozen lines.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from osrkit.errors import DataError

_UINT8 = 0x08


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"missing IDX file {path}: check --data-root") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt gzip ({exc}); delete the file and download it again") from None


def parse_idx(data: bytes, source: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Parse IDX bytes into a uint8 array, checking magic number, dimensions and length."""
    if len(data) < 4:
        raise DataError(f"{source}: too short to be an IDX file ({len(data)} bytes)")
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != _UINT8 or dims == 0:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(
            f"{source}: wrong magic number 0x{magic:08x} (expected 0x00000801 for labels or "
            f"0x00000803 for images); this is not an unsigned-byte IDX file"
        )
    if ndim is not None and dims != ndim:
        raise DataError(f"{source}: IDX file has {dims} dimensions, expected {ndim}")
    header = 4 + 4 * dims
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header; download the file again")
    shape = struct.unpack(f">{dims}I", data[4:header])
    expected = math.prod(shape)  # Python ints: numpy's int64 product wraps for huge shapes
    if len(data) - header != expected:
        raise DataError(
            f"{source}: truncated or padded IDX payload ({len(data) - header} bytes, expected "
            f"{expected} for shape {shape}); download the file again"
        )
    try:
        return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()
    except ValueError:  # an empty payload whose other dimensions multiply past numpy's limit
        raise DataError(
            f"{source}: IDX shape {shape} is too large for an array; download the file again"
        ) from None


def read_idx(path: str | os.PathLike, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (``.gz`` or raw) into a uint8 array."""
    path = Path(path)
    return parse_idx(_read_bytes(path), str(path), ndim)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip-compressed if ``path`` ends in ``.gz``)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    payload = struct.pack(">HBB", 0, _UINT8, array.ndim)
    payload += struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path
