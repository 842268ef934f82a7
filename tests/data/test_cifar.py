"""CIFAR-10 readers (osrkit.data.cifar): python batches, the PNG folder and the real test set."""

from __future__ import annotations

import datetime
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit.data.catalog import load_cifar10, load_dataset
from osrkit.data.cifar import CLASSES, read_cifar10_test, read_cifar_batch
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC
from osrkit.errors import ChecksumError, DataError

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TEST_BATCH_MD5 = "40351d587109b95175f43aff81a1287e"


def synthetic_rows(n):
    """Rows whose R plane is 10+i, G plane 100+i, B plane 200+i (i = image index)."""
    rows = np.empty((n, 3072), dtype=np.uint8)
    for i in range(n):
        rows[i, :1024] = 10 + i
        rows[i, 1024:2048] = 100 + i
        rows[i, 2048:] = 200 + i
    rows[0, 1] = 1  # R of pixel (row 0, col 1) of image 0
    rows[0, 1024 + 32] = 2  # G of pixel (row 1, col 0)
    rows[0, 2048 + 33] = 3  # B of pixel (row 1, col 1)
    return rows


def write_batch(root, obj, protocol=4):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "test_batch"
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def test_read_cifar_batch_layout(tmp_path):
    rows = synthetic_rows(4)
    path = write_batch(tmp_path, {b"batch_label": b"testing", b"data": rows, b"labels": [3, 8, 8, 0]})
    images, labels = read_cifar_batch(path)
    assert images.shape == (4, 32, 32, 3)
    assert images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert labels.tolist() == [3, 8, 8, 0]
    for i in range(4):
        assert images[i, 31, 31].tolist() == [10 + i, 100 + i, 200 + i]
    assert images[0, 0, 1, 0] == 1
    assert images[0, 1, 0, 1] == 2
    assert images[0, 1, 1, 2] == 3
    # channel planes reshape to the image row by row
    np.testing.assert_array_equal(images[2, :, :, 1].reshape(-1), rows[2, 1024:2048])


class Py2Pickler(pickle._Pickler):
    """Writes bytes (and str) as Python 2 ``str`` opcodes, like the official CIFAR batches."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("latin1")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def test_read_cifar_batch_python2_pickle(tmp_path):
    # The official test_batch is a Python 2 protocol-2 pickle naming numpy.core.multiarray.
    rows = synthetic_rows(3)
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(
        {b"batch_label": b"testing batch 1 of 1", b"labels": [6, 9, 9], b"data": rows}
    )
    raw = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in raw
    path = tmp_path / "test_batch"
    path.write_bytes(raw)
    images, labels = read_cifar_batch(path)
    assert labels.tolist() == [6, 9, 9]
    np.testing.assert_array_equal(images.transpose(0, 3, 1, 2).reshape(3, 3072), rows)


class _RunsCommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _OpensFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("evil", [_RunsCommand, _OpensFile])
def test_pickle_with_code_refused(tmp_path, evil):
    marker = tmp_path / "pwned"
    path = write_batch(tmp_path, {b"data": evil(marker), b"labels": [0]})
    with pytest.raises(DataError, match="refusing"):
        read_cifar_batch(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        datetime.datetime(2020, 1, 1),
        {b"data": datetime.date(2020, 1, 1), b"labels": [0]},
        {b"data": synthetic_rows(1), b"labels": [np.int64(3)]},  # numpy scalar global
        {b"data": synthetic_rows(1), b"labels": [0], b"extra": frozenset({1, 2})},
    ],
)
def test_pickle_with_other_globals_refused(tmp_path, payload):
    path = write_batch(tmp_path, payload, protocol=2)
    with pytest.raises(DataError, match="not a valid CIFAR-10"):
        read_cifar_batch(path)


@pytest.mark.parametrize(
    "payload", [{1, 2, 3}, [1, 2], {b"labels": [0]}, {b"data": synthetic_rows(2), b"labels": [0]}]
)
def test_batch_of_wrong_structure(tmp_path, payload):
    path = write_batch(tmp_path, payload)
    with pytest.raises(DataError):
        read_cifar_batch(path)


def test_batch_of_wrong_row_length(tmp_path):
    path = write_batch(tmp_path, {b"data": np.zeros((2, 1000), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match="shape"):
        read_cifar_batch(path)


def test_truncated_pickle(tmp_path):
    good = pickle.dumps({b"data": synthetic_rows(2), b"labels": [1, 2]}, protocol=4)
    path = tmp_path / "test_batch"
    for cut in [0, 1, 10, 60, len(good) // 2, len(good) - 40, len(good) - 1]:
        path.write_bytes(good[:cut])
        with pytest.raises(DataError):
            read_cifar_batch(path)


def test_truncated_pickle_every_cut_in_header_and_tail(tmp_path):
    good = pickle.dumps({b"data": synthetic_rows(1), b"labels": [4]}, protocol=4)
    path = tmp_path / "test_batch"
    for cut in [*range(0, 200), *range(len(good) - 200, len(good))]:
        path.write_bytes(good[:cut])
        with pytest.raises(DataError):
            read_cifar_batch(path)


def test_missing_batch(tmp_path):
    with pytest.raises(DataError, match="missing"):
        read_cifar_batch(tmp_path / "test_batch")


def write_png_layout(root, per_class):
    """``root/CIFAR10/test/<class>/<NNNNN>.png``; class k's images have R=G=B=20*k+j."""
    index = 0
    expected = []
    for k, cls in enumerate(CLASSES):
        folder = root / "CIFAR10" / "test" / cls
        folder.mkdir(parents=True)
        for j in range(per_class[k]):
            value = 20 * k + j
            Image.new("RGB", (32, 32), (value, value, value)).save(folder / f"{index:05d}.png")
            expected.append((k, value))
            index += 1
    return expected


def test_read_cifar10_test_png_folder(tmp_path):
    per_class = [1, 2] * 5
    expected = write_png_layout(tmp_path, per_class)
    data = read_cifar10_test(tmp_path)  # by default the seed's 1x28x28 grayscale
    assert len(data) == sum(per_class)
    assert tuple(data.images.shape) == (len(expected), 1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.class_names == CLASSES
    assert data.labels.tolist() == [k for k, _ in expected]
    assert data.images[:, 0, 0, 0].tolist() == [v for _, v in expected]  # gray stays gray
    assert data.class_counts() == dict(zip(CLASSES, per_class))


def test_read_cifar10_test_png_folder_in_colour(tmp_path):
    per_class = [1, 2] * 5
    expected = write_png_layout(tmp_path, per_class)
    for spec_arg in [{"spec": None}, {"spec": CIFAR10_SPEC}]:
        data = read_cifar10_test(tmp_path, **spec_arg)
        assert tuple(data.images.shape) == (len(expected), 3, 32, 32)
        assert data.labels.tolist() == [k for k, _ in expected]
        assert data.images[:, :, 5, 7].tolist() == [[v, v, v] for _, v in expected]
    data = load_cifar10(root=tmp_path)  # the default is colour
    assert tuple(data.images.shape) == (len(expected), 3, 32, 32)
    assert data.spec == CIFAR10_SPEC


def test_read_cifar10_test_png_folder_missing_class(tmp_path):
    write_png_layout(tmp_path, [1] * 10)
    for f in (tmp_path / "CIFAR10" / "test" / "truck").iterdir():
        f.unlink()
    (tmp_path / "CIFAR10" / "test" / "truck").rmdir()
    with pytest.raises(DataError, match="truck"):
        read_cifar10_test(tmp_path)


def test_read_cifar10_test_nothing_there(tmp_path):
    with pytest.raises(DataError) as info:
        read_cifar10_test(tmp_path)
    message = str(info.value)
    assert TEST_BATCH_MD5 in message
    assert "test_batch" in message
    assert "--download" in message


def test_read_cifar10_test_wrong_md5(tmp_path):
    write_batch(tmp_path, {b"data": synthetic_rows(3), b"labels": [0, 1, 2]})
    write_png_layout(tmp_path, [1] * 10)  # the batch is preferred even when the folder exists
    with pytest.raises(ChecksumError) as info:
        read_cifar10_test(tmp_path)
    assert TEST_BATCH_MD5 in str(info.value)


@pytest.mark.parametrize("split", ["val", "TEST", ""])
def test_load_cifar10_unknown_split(tmp_path, split):
    with pytest.raises(DataError, match="train and test splits"):
        load_cifar10(split, root=tmp_path)


def write_colour_batches(root, names, n=2):
    """Python batches ``names`` whose image i of batch b has R=10+10*b+i, G=100+i, B=200+i."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for b, name in enumerate(names):
        rows = np.empty((n, 3072), dtype=np.uint8)
        for i in range(n):
            rows[i, :1024], rows[i, 1024:2048], rows[i, 2048:] = 10 + 10 * b + i, 100 + i, 200 + i
        labels = [(b + i) % 10 for i in range(n)]
        (folder / name).write_bytes(pickle.dumps({b"data": rows, b"labels": labels}, protocol=4))


def test_load_cifar10_train_split_from_batches(tmp_path):
    names = [f"data_batch_{i}" for i in range(1, 6)]
    write_colour_batches(tmp_path, names)
    data = load_cifar10("train", root=tmp_path)
    assert tuple(data.images.shape) == (10, 3, 32, 32)
    assert data.class_names == CLASSES
    assert data.labels.tolist() == [(b + i) % 10 for b in range(5) for i in range(2)]
    assert data.images[:, :, 31, 31].tolist() == [
        [10 + 10 * b + i, 100 + i, 200 + i] for b in range(5) for i in range(2)
    ]
    gray = load_cifar10("train", root=tmp_path, spec=MNIST_SPEC)
    assert tuple(gray.images.shape) == (10, 1, 28, 28)
    luma = round(0.299 * 10 + 0.587 * 100 + 0.114 * 200)  # image 0: (10, 100, 200)
    assert abs(int(gray.images[0, 0, 14, 14]) - luma) <= 1
    # load_dataset: cifar10:train in colour by default, the seed's grayscale with MNIST_SPEC
    assert load_dataset("cifar10:train", root=tmp_path).images.shape == (10, 3, 32, 32)
    assert load_dataset("cifar10:train", root=tmp_path, input_spec=MNIST_SPEC).images.shape == (10, 1, 28, 28)


def test_load_cifar10_train_split_incomplete(tmp_path):
    write_colour_batches(tmp_path, ["data_batch_1", "data_batch_2"])
    with pytest.raises(DataError, match="data_batch_5"):
        load_cifar10("train", root=tmp_path)


def test_load_cifar10_real():
    folder = SHARED_DATA / "CIFAR10" / "test"
    if not folder.is_dir():
        pytest.skip(f"real CIFAR-10 PNG folder not found at {folder}")
    data = load_cifar10(root=SHARED_DATA)
    assert len(data) == 10000
    assert tuple(data.images.shape) == (10000, 3, 32, 32)
    assert data.images.dtype == torch.uint8
    assert data.class_names == CLASSES
    assert data.class_counts() == dict.fromkeys(CLASSES, 1000)
    # per-channel means of the CIFAR-10 test set: 0.494, 0.485, 0.450
    means = data.as_float().mean(dim=(0, 2, 3)).tolist()
    assert means == pytest.approx([0.494, 0.485, 0.450], abs=0.01)
    gray = load_dataset("cifar10", root=SHARED_DATA, input_spec=MNIST_SPEC)
    assert tuple(gray.images.shape) == (10000, 1, 28, 28)
    assert abs(float(gray.as_float().mean()) - 0.48) < 0.02
    names = [Path(p).name for p in data.paths]
    first = names.index("00000.png")
    assert data.class_names[int(data.labels[first])] == "cat"
    assert Path(data.paths[first]).parent.name == "cat"
    for idx, cls in [("00001.png", "ship"), ("00003.png", "airplane")]:
        assert data.class_names[int(data.labels[names.index(idx)])] == cls
