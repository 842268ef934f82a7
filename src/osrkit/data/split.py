"""The seeded validation split of a training set, and a cheap identity of its data."""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from osrkit.errors import ConfigError

log = logging.getLogger(__name__)


VAL_FRACTION = 0.2
VAL_MIN_PER_CLASS = 10
VAL_MAX = 5000


def auto_val_size(n_images: int, n_classes: int) -> int:
    """The validation split's size when none is given: ``VAL_FRACTION`` of the training
    images, raised to ``VAL_MIN_PER_CLASS`` per class where the data allows (never more
    than half), capped at ``VAL_MAX`` (calibration needs no more; 60,000 MNIST images and
    30,000 CIFAR-10 split images both give 5,000)."""
    size = min(VAL_MAX, round(VAL_FRACTION * n_images))
    size = max(size, min(VAL_MIN_PER_CLASS * n_classes, n_images // 2))
    return max(size, n_classes)


def stratified_split(labels: torch.Tensor, val_size: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into (train, validation), each class kept in proportion.
    ``val_size=None`` sizes the validation split with ``auto_val_size``."""
    n = len(labels)
    y = labels.numpy()
    present = np.unique(y)
    counts = np.bincount(y)
    if counts[present].min() < 2:
        rare = [int(c) for c in present if counts[c] < 2]
        raise ConfigError(f"classes {rare} have a single training image; each class needs at least 2")
    k = len(present)
    chosen = val_size is not None
    size = val_size if chosen else auto_val_size(n, k)
    if size >= n or size < k or n - size < k:
        raise ConfigError(
            f"val-size {size} cannot split {n} training images of {k} classes with every class on "
            f"both sides; use --val-size {auto_val_size(n, k)} (any value from {k} to {n - k} works) "
            "or leave it unset to size it from the data"
        )
    how = "--val-size" if chosen else f"auto: {VAL_FRACTION:.0%}, at least {VAL_MIN_PER_CLASS} per class"
    log.info("validation split: %d of %d known training images (%s)", size, n, how)
    train, val = train_test_split(np.arange(n), test_size=size, random_state=seed, stratify=y)
    return np.sort(train), np.sort(val)


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A cheap identity of a training set: its size and a hash of labels and sampled pixels."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(labels.numpy().tobytes())
    h.update(images[:: max(1, len(images) // 512)].numpy().tobytes())
    return f"{len(images)}:{h.hexdigest()}"
