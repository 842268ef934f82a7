"""The seeded validation split of a training set, and a cheap identity of its data."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from .errors import ConfigError


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of indices into (train, validation), each class kept in proportion."""
    n = len(labels)
    y = labels.numpy()
    present = np.unique(y)
    if val_size >= n:
        raise ConfigError(f"val-size {val_size} must be smaller than the {n} training images")
    if val_size < len(present) or n - val_size < len(present):
        raise ConfigError(
            f"cannot split {n} images of {len(present)} classes into {n - val_size} for training and "
            f"{val_size} for validation with every class in both; use more data or change --val-size"
        )
    counts = np.bincount(y)
    if counts[present].min() < 2:
        rare = [int(c) for c in present if counts[c] < 2]
        raise ConfigError(f"classes {rare} have a single training image; each class needs at least 2")
    train, val = train_test_split(np.arange(n), test_size=val_size, random_state=seed, stratify=y)
    return np.sort(train), np.sort(val)


def data_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A cheap identity of a training set: its size and a hash of labels and sampled pixels."""
    h = hashlib.sha1(usedforsecurity=False)
    h.update(labels.numpy().tobytes())
    h.update(images[:: max(1, len(images) // 512)].numpy().tobytes())
    return f"{len(images)}:{h.hexdigest()}"
