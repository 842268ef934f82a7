"""IDX reader/writer (osrkit.data.idx) and the MNIST-family loader on the real files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from osrkit.data.catalog import load_idx_dataset
from osrkit.data.idx import parse_idx, read_idx, write_idx
from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared_root(*parts):
    """The shared data folder, skipping the test when the needed files are absent."""
    folder = SHARED_DATA.joinpath(*parts)
    if not folder.is_dir():
        pytest.skip(f"real datasets not found at {folder}")
    return SHARED_DATA


def idx_bytes(array):
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def sample_images():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)


@pytest.mark.parametrize("name", ["imgs-idx3-ubyte", "imgs-idx3-ubyte.gz"])
def test_roundtrip_images(tmp_path, name):
    images = sample_images()
    path = write_idx(tmp_path / name, images)
    assert path == tmp_path / name
    raw = path.read_bytes()
    if name.endswith(".gz"):
        assert raw[:2] == b"\x1f\x8b"  # really gzip-compressed
        raw = gzip.decompress(raw)
    assert raw[:4] == b"\x00\x00\x08\x03"
    assert raw == idx_bytes(images)
    back = read_idx(path)
    assert back.dtype == np.uint8
    assert back.shape == (5, 28, 28)
    np.testing.assert_array_equal(back, images)
    np.testing.assert_array_equal(read_idx(path, ndim=3), images)


@pytest.mark.parametrize("name", ["labels-idx1-ubyte", "labels-idx1-ubyte.gz"])
def test_roundtrip_labels(tmp_path, name):
    labels = np.array([7, 2, 1, 0, 4, 1, 4, 9, 5, 9], dtype=np.uint8)
    path = write_idx(tmp_path / name, labels)
    raw = path.read_bytes()
    if name.endswith(".gz"):
        raw = gzip.decompress(raw)
    assert raw[:4] == b"\x00\x00\x08\x01"
    assert struct.unpack(">I", raw[4:8]) == (10,)
    back = read_idx(path, ndim=1)
    assert back.shape == (10,)
    np.testing.assert_array_equal(back, labels)


def test_read_returns_writable_copy(tmp_path):
    path = write_idx(tmp_path / "a.gz", sample_images())
    back = read_idx(path)
    back[0, 0, 0] = 1  # np.frombuffer would be read-only; the reader must copy
    assert back.flags.writeable


@pytest.mark.parametrize(
    "magic", [b"\x00\x00\x09\x03", b"\x00\x00\x08\x00", b"\x01\x00\x08\x03", b"\x1f\x8b\x08\x00"]
)
def test_wrong_magic(tmp_path, magic):
    good = idx_bytes(sample_images())
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(magic + good[4:])
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


def test_wrong_magic_gz(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + idx_bytes(sample_images())[4:]))
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


@pytest.mark.parametrize("cut", [1, 100, 28 * 28])
def test_truncated_payload_gz(tmp_path, cut):
    data = idx_bytes(sample_images())
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data[:-cut]))  # a valid gzip of a truncated IDX
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_truncated_payload_raw(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8))[:-3])
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(sample_images())[:9])  # 3 dims announced, only one complete
    with pytest.raises(DataError, match="truncated"):
        read_idx(path)


def test_too_short(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"\x00\x00")
    with pytest.raises(DataError):
        read_idx(path)


def test_padded_payload(tmp_path):
    path = tmp_path / "padded"
    path.write_bytes(idx_bytes(np.arange(10, dtype=np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="padded"):
        read_idx(path)


def test_random_bytes_gz(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


@pytest.mark.parametrize("keep", [0.5, -1, -4, -8])
def test_gzip_cut(tmp_path, keep):
    compressed = gzip.compress(idx_bytes(sample_images()))
    end = int(len(compressed) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[:end])
    with pytest.raises(DataError, match="gzip"):
        read_idx(path)


def test_wrong_ndim(tmp_path):
    path = write_idx(tmp_path / "labels.gz", np.arange(10, dtype=np.uint8))
    with pytest.raises(DataError, match="1 dimensions, expected 3"):
        read_idx(path, ndim=3)
    images = write_idx(tmp_path / "images.gz", sample_images())
    with pytest.raises(DataError, match="dimensions"):
        read_idx(images, ndim=1)


@pytest.mark.parametrize("name", ["missing-idx3-ubyte", "missing-idx3-ubyte.gz"])
def test_missing_file(tmp_path, name):
    with pytest.raises(DataError, match="missing"):
        read_idx(tmp_path / name)


def test_parse_idx_source_in_message():
    with pytest.raises(DataError, match="my-source"):
        parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x05abc", source="my-source")


# ---- real data -------------------------------------------------------------------------


def counts(imageset):
    return torch.bincount(imageset.labels, minlength=10).tolist()


def test_mnist_train_real():
    root = shared_root("MNIST", "raw")
    data = load_idx_dataset("mnist", "train", root=root)
    assert tuple(data.images.shape) == (60000, 1, 28, 28)
    assert data.spec == MNIST_SPEC
    assert data.images.dtype == torch.uint8
    assert data.labels.dtype == torch.int64
    assert counts(data) == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert data.class_names == [str(d) for d in range(10)]
    assert int(data.images.max()) == 255


def test_mnist_test_real():
    root = shared_root("MNIST", "raw")
    data = load_idx_dataset("mnist", "test", root=root)
    assert tuple(data.images.shape) == (10000, 1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert counts(data) == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.parametrize(
    ("name", "folder"), [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST"), ("notmnist", "notMNIST")]
)
def test_other_test_sets_real(name, folder):
    root = shared_root(folder, "raw")
    data = load_idx_dataset(name, "test", root=root)
    assert tuple(data.images.shape) == (10000, 1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert counts(data) == [1000] * 10
    assert len(data.class_names) == 10


def test_mnist_test_real_brought_to_a_colour_spec():
    root = shared_root("MNIST", "raw")
    gray = load_idx_dataset("mnist", "test", root=root)
    rgb = load_idx_dataset("mnist", "test", root=root, spec=InputSpec(3, 28, 28))
    assert tuple(rgb.images.shape) == (10000, 3, 28, 28)
    assert rgb.labels.tolist() == gray.labels.tolist()
    for c in range(3):  # grayscale repeated in every channel, pixels unchanged
        assert torch.equal(rgb.images[:100, c], gray.images[:100, 0])
