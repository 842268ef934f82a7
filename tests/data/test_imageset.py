"""ImageSet (osrkit.data.imageset): validation, subsets, seeded samples, float view, counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osrkit.data.imageset import ImageSet
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC, InputSpec
from osrkit.errors import DataError

CLASSES = ["a", "b", "c"]


def make_set(n=10, with_paths=True):
    """Image i is filled with value i and has label i % 3 and path 'img<i>.png'."""
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1).expand(n, 28, 28).contiguous()
    labels = torch.arange(n) % 3
    paths = [f"img{i}.png" for i in range(n)] if with_paths else None
    return ImageSet(images, labels, list(CLASSES), "toy", paths)


def ids(data):
    """The image ids (fill values) of a set made by make_set."""
    return data.images[:, 0, 0, 0].tolist()


def assert_aligned(data):
    for i, p, label in zip(ids(data), data.paths, data.labels.tolist()):
        assert p == f"img{i}.png"
        assert label == i % 3


def test_valid_set():
    data = make_set()
    assert len(data) == 10
    assert data.labels.dtype == torch.int64
    assert "toy" in repr(data)
    assert "n=10" in repr(data)


def test_labels_converted_to_int64():
    data = ImageSet(
        torch.zeros(3, 28, 28, dtype=torch.uint8), torch.tensor([0, 1, 2], dtype=torch.int32), CLASSES
    )
    assert data.labels.dtype == torch.int64


@pytest.mark.parametrize("dtype", [torch.float32, torch.int64, torch.int8, torch.bool])
def test_non_uint8_images_rejected(dtype):
    with pytest.raises(DataError, match="uint8"):
        ImageSet(torch.zeros(3, 28, 28, dtype=dtype), torch.zeros(3, dtype=torch.int64), CLASSES, "bad")


@pytest.mark.parametrize("shape", [(3, 2, 28, 28), (3, 4, 28, 28), (28, 28), (3, 1, 1, 28, 28)])
def test_wrong_shape_rejected(shape):
    """Only (N, H, W) or (N, C, H, W) with C 1 (grayscale) or 3 (RGB) are images."""
    with pytest.raises(DataError, match="shape"):
        ImageSet(torch.zeros(shape, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), CLASSES)


def test_grayscale_nhw_stored_with_one_channel():
    images = torch.arange(3, dtype=torch.uint8).view(3, 1, 1).expand(3, 28, 28).contiguous()
    data = ImageSet(images, torch.zeros(3, dtype=torch.int64), CLASSES)
    assert tuple(data.images.shape) == (3, 1, 28, 28)
    assert data.shape == (1, 28, 28)
    assert torch.equal(data.images[:, 0], images)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (3, 3, 32, 32), (3, 3, 20, 40)])
def test_nchw_accepted(shape):
    data = ImageSet(torch.zeros(shape, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), CLASSES)
    assert tuple(data.images.shape) == shape
    assert data.shape == shape[1:]


@pytest.mark.parametrize("labels", [torch.zeros(2, dtype=torch.int64), torch.zeros(4), torch.zeros(3, 1)])
def test_label_count_mismatch_rejected(labels):
    with pytest.raises(DataError, match="labels"):
        ImageSet(torch.zeros(3, 28, 28, dtype=torch.uint8), labels, CLASSES, "bad")


def test_subset_tensor_keeps_paths_aligned():
    data = make_set()
    sub = data.subset(torch.tensor([7, 2, 9]))
    assert ids(sub) == [7, 2, 9]
    assert sub.paths == ["img7.png", "img2.png", "img9.png"]
    assert_aligned(sub)
    assert sub.class_names == CLASSES
    assert sub.class_names is not data.class_names
    assert sub.name == "toy"
    assert len(data) == 10  # original unchanged


def test_subset_ndarray_keeps_paths_aligned():
    data = make_set()
    sub = data.subset(np.array([0, 5, 5, 3]), name="picked")
    assert ids(sub) == [0, 5, 5, 3]
    assert sub.paths == ["img0.png", "img5.png", "img5.png", "img3.png"]
    assert_aligned(sub)
    assert sub.name == "picked"


@pytest.mark.parametrize("index", [slice(2, 8, 3), slice(None, 3), slice(-2, None), slice(4, 4)])
def test_subset_slice_keeps_paths_aligned(index):
    data = make_set()
    sub = data.subset(index)
    assert ids(sub) == list(range(10))[index]
    assert sub.paths == [f"img{i}.png" for i in list(range(10))[index]]
    assert_aligned(sub)


def test_subset_without_paths():
    sub = make_set(with_paths=False).subset(torch.tensor([1, 2]))
    assert sub.paths is None
    assert ids(sub) == [1, 2]


def test_take_seeded_and_reproducible():
    data = make_set(50)
    a = data.take(10, seed=3)
    b = data.take(10, seed=3)
    c = data.take(10, seed=4)
    assert len(a) == 10
    assert ids(a) == ids(b)
    assert ids(a) != ids(c)
    assert ids(a) == sorted(set(ids(a)))  # distinct and in original order
    assert_aligned(a)
    assert a.paths == b.paths


def test_take_default_seed_is_fixed():
    data = make_set(50)
    assert ids(data.take(7)) == ids(data.take(7, seed=0))


def test_take_all():
    data = make_set()
    assert len(data.take(None)) == 10
    assert ids(data.take(None)) == list(range(10))
    assert ids(data.take(10)) == list(range(10))
    assert ids(data.take(1000)) == list(range(10))


@pytest.mark.parametrize("n", [0, -1])
def test_take_non_positive_rejected(n):
    with pytest.raises(DataError, match="positive"):
        make_set().take(n)


def test_as_float():
    images = torch.tensor([[0, 255], [51, 102]], dtype=torch.uint8).repeat(2, 14, 14)
    data = ImageSet(images, torch.zeros(2, dtype=torch.int64), CLASSES)
    x = data.as_float()
    assert tuple(x.shape) == (2, 1, 28, 28)
    assert x.dtype == torch.float32
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    assert torch.allclose(x[:, 0], images.float() / 255.0)
    assert float(x[0, 0, 1, 0]) == pytest.approx(0.2)
    assert data.images.dtype == torch.uint8  # the stored images are not modified
    assert int(data.images[0, 0, 0, 1]) == 255


def test_as_float_colour():
    images = torch.zeros(2, 3, 8, 6, dtype=torch.uint8)
    images[:, 0] = 255
    images[:, 2] = 51
    x = ImageSet(images, torch.zeros(2, dtype=torch.int64), CLASSES).as_float()
    assert tuple(x.shape) == (2, 3, 8, 6)
    assert torch.equal(x[:, 0], torch.ones(2, 8, 6))
    assert torch.equal(x[:, 1], torch.zeros(2, 8, 6))
    assert float(x[1, 2, 7, 5]) == pytest.approx(0.2)


def test_class_counts():
    data = make_set(10)  # labels 0,1,2,0,1,2,0,1,2,0
    assert data.class_counts() == {"a": 4, "b": 3, "c": 3}
    zeros = ImageSet(torch.zeros(2, 28, 28, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), CLASSES)
    assert zeros.class_counts() == {"a": 2, "b": 0, "c": 0}  # absent classes count 0
    assert list(zeros.class_counts()) == CLASSES


def test_subset_boolean_mask_selects_positions_and_paths():
    s = make_set(6)
    mask = torch.tensor([True, False, True, False, False, True])
    sub = s.subset(mask)
    assert sub.labels.tolist() == s.labels[[0, 2, 5]].tolist()
    assert sub.paths == [s.paths[0], s.paths[2], s.paths[5]]
    assert s.subset(mask.numpy()).paths == sub.paths


def test_paths_length_mismatch_rejected():
    with pytest.raises(DataError, match="paths"):
        ImageSet(torch.zeros(3, 28, 28, dtype=torch.uint8), torch.zeros(3), ["a"], paths=["x", "y"])


def test_to_spec_converts_channels_and_size_and_keeps_labels():
    gray = make_set(4)
    assert gray.to_spec(MNIST_SPEC) is gray  # already in that spec
    rgb = gray.to_spec(InputSpec(3, 32, 32))
    assert tuple(rgb.images.shape) == (4, 3, 32, 32)
    assert rgb.spec == InputSpec(3, 32, 32)
    assert rgb.labels.tolist() == gray.labels.tolist()
    assert rgb.paths == gray.paths
    # a uniform gray image stays uniform and equal in every channel
    assert rgb.images[2].unique().tolist() == [2]
    assert gray.images.shape == (4, 1, 28, 28)  # the original is unchanged


def test_spec_dropped_when_it_does_not_match_the_images():
    images = torch.zeros(2, 28, 28, dtype=torch.uint8)
    labels = torch.zeros(2, dtype=torch.int64)
    assert ImageSet(images, labels, CLASSES, spec=MNIST_SPEC).spec == MNIST_SPEC
    assert ImageSet(images, labels, CLASSES, spec=CIFAR10_SPEC).spec is None
    assert ImageSet(images, labels, CLASSES, spec=MNIST_SPEC).subset(slice(0, 1)).spec == MNIST_SPEC


def test_to_spec_of_the_same_shape_takes_the_new_spec():
    """Normalisation asked for on a same-sized set was once dropped: the set kept its old
    spec, and a model fitted on it had no normalisation."""

    data = ImageSet(
        torch.zeros(4, 1, 28, 28, dtype=torch.uint8), torch.zeros(4, dtype=torch.int64), ["a"], "s"
    )
    data = data.to_spec(InputSpec(1, 32, 32)).to_spec(MNIST_SPEC)
    assert data.spec == MNIST_SPEC
    normalising = InputSpec(1, 28, 28, mean=(0.5,), std=(0.5,))
    again = data.to_spec(normalising)
    assert again.spec == normalising and torch.equal(again.images, data.images)
