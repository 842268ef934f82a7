"""Image folders read lazily in DataLoader workers give what the in-memory reader gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from osrkit.cli import main
from osrkit.data.folder import SAMPLE_FOR_SPEC, folder_images, read_image_folder
from osrkit.data.lazy import LazyBatches, LazyImageSet, open_image_folder
from osrkit.data.spec import MNIST_SPEC
from osrkit.errors import DataError
from osrkit.jobs.pipeline import JobData
from osrkit.models import Classifier, ClassifierConfig
from osrkit.training.config import TrainConfig
from osrkit.training.loop import train_classifier
from tests.conftest import synthetic_digits, write_folder

NAMES = [f"c{k}" for k in range(10)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    x, y = synthetic_digits(240, seed=3)
    return write_folder(tmp_path_factory.mktemp("lazy") / "train", x, y, NAMES)


def test_lazy_source_yields_the_in_memory_images_and_labels(folder):
    memory = read_image_folder(folder)
    lazy = open_image_folder(folder, memory_budget=0)
    assert isinstance(lazy, LazyImageSet) and isinstance(open_image_folder(folder), type(memory))
    assert lazy.paths == memory.paths and lazy.class_names == memory.class_names
    torch.testing.assert_close(lazy.labels, memory.labels, rtol=0, atol=0)
    # batches in a shuffled order, decoded by a worker process
    order = torch.randperm(len(memory), generator=torch.Generator().manual_seed(0)).split(50)
    lazy.workers = 1
    for idx, (images, labels) in zip(order, LazyBatches(lazy).fetch(order), strict=True):
        torch.testing.assert_close(images, memory.images[idx], rtol=0, atol=0)
        torch.testing.assert_close(labels, memory.labels[idx], rtol=0, atol=0)
    torch.testing.assert_close(lazy.load().images, memory.images, rtol=0, atol=0)
    # the same seeded sample as the in-memory set's
    assert lazy.take(30, seed=4).paths == memory.take(30, seed=4).paths


def test_training_on_the_lazy_source_is_training_in_memory(folder):
    memory = read_image_folder(folder)
    lazy = open_image_folder(folder, memory_budget=0)
    lazy.workers = 1
    cfg = TrainConfig(epochs=1, batch_size=32, val_size=40, rotation_degrees=10.0)
    nets = []
    for images in (memory.images[:200], lazy.subset(slice(0, 200))):
        torch.manual_seed(0)
        net = Classifier(ClassifierConfig(channels=(8, 8, 16), feature_dim=16))
        train_classifier(net, images, memory.labels[:200], memory.images[200:], memory.labels[200:], cfg)
        nets.append(net.state_dict())
    for key, value in nets[0].items():
        torch.testing.assert_close(nets[1][key], value, rtol=0, atol=0)


def test_data_spec_says_which_path_is_taken(folder):
    assert isinstance(JobData(train=str(folder)).load("train", spec=None), type(read_image_folder(folder)))
    lazy = JobData(train=str(folder), memory_budget=0, max_train=100).load("train")
    assert isinstance(lazy, LazyImageSet) and len(lazy) == 100


def test_corrupt_image_in_a_lazy_folder_is_the_in_memory_one_line_error(tmp_path, capsys):
    x, y = synthetic_digits(300, seed=1)
    root = write_folder(tmp_path / "train", x, y, NAMES)
    paths = folder_images(root)[0]
    # a file outside the sample that chooses the input spec, so the workers meet it
    sampled = set(np.random.default_rng(0).choice(len(paths), SAMPLE_FOR_SPEC, replace=False).tolist())
    bad = paths[min(set(range(len(paths))) - sampled)]
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)  # a PNG header, then nothing decodable
    with pytest.raises(DataError) as memory_error:
        read_image_folder(root, spec=MNIST_SPEC)
    lazy = open_image_folder(root, spec=MNIST_SPEC, memory_budget=0)
    lazy.workers = 1
    with pytest.raises(DataError) as lazy_error:
        list(lazy.batches(torch.arange(len(lazy)).split(64)))
    assert str(lazy_error.value) == str(memory_error.value)
    assert str(bad) in str(lazy_error.value) and "\n" not in str(lazy_error.value)
    # the command: one line, exit 2, no traceback, no worker left waiting
    args = ["train", "--out", str(tmp_path / "m"), "--train", str(root), "--memory-budget", "0"]
    code = main([*args, "--val-size", "20", "--epochs", "1", "--ae-epochs", "1", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == f"osrkit: error: {memory_error.value}"
    assert not (tmp_path / "m").exists()


def test_a_sample_that_fits_the_budget_is_read_into_memory(folder):
    """--max-train is applied before the budget is checked: 100 of the 240 images fit a
    budget the whole folder exceeds (the whole folder decided before, and went lazy)."""
    budget = 100 * 28 * 28  # bytes: the sample's decoded size, not the folder's
    sample = open_image_folder(folder, MNIST_SPEC, memory_budget=budget, sample=100, seed=5)
    expected = read_image_folder(folder, spec=MNIST_SPEC).take(100, seed=5)
    assert not isinstance(sample, LazyImageSet) and sample.paths == expected.paths
    torch.testing.assert_close(sample.images, expected.images, rtol=0, atol=0)
    assert isinstance(open_image_folder(folder, MNIST_SPEC, memory_budget=budget), LazyImageSet)
