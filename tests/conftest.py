"""Shared fixtures: synthetic datasets the tests write themselves, and the real shared data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit import ImageSet, OpenSetRecognizer, TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

try:  # property-based tests (tests/test_readers_property*.py); the dev extra installs it
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover
    pass
else:
    # ci (the default): derandomize, so every run tries the same examples and a failure is
    # never a coin toss on an unrelated change; no example database (nothing written into
    # the checkout); no deadline, since a shared CPU makes example timings noisy.
    # HYPOTHESIS_PROFILE=thorough: fresh random examples, 25x as many, for manual runs
    # (a failure prints the @reproduce_failure line to replay it).
    _common = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    settings.register_profile("ci", max_examples=40, derandomize=True, **_common)
    settings.register_profile("thorough", max_examples=1000, print_blob=True, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets beside the checkout; tests that need them skip when absent."""
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip("real datasets not found at ../shared/data")
    return SHARED_DATA


def synthetic_digits(n: int, num_classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Light-on-dark 28x28 images: class k is a bright 6x6 block at its own place, jittered."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    rng.shuffle(labels)
    images = (rng.random((n, 28, 28)) * 30).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = 3 + 7 * (k // 4), 3 + 7 * (k % 4)
        dr, dc = rng.integers(-1, 2, size=2)
        images[i, r + dr : r + dr + 6, c + dc : c + dc + 6] = 200 + rng.integers(0, 56)
    return images, labels.astype(np.int64)


def synthetic_unknowns(n: int, seed: int = 1) -> np.ndarray:
    """Mid-gray textured images, unlike the synthetic digits."""
    rng = np.random.default_rng(seed)
    return (80 + rng.random((n, 28, 28)) * 120).astype(np.uint8)


def synthetic_set(n: int, seed: int = 0, name: str = "synthetic") -> ImageSet:
    images, labels = synthetic_digits(n, seed=seed)
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), [str(k) for k in range(10)], name)


def write_folder(
    root: Path, images: np.ndarray, labels: np.ndarray, class_names: list[str], rgb: bool = False
) -> Path:
    """Write images as ``root/<class>/<i>.png`` (grayscale or RGB)."""
    for i, (img, k) in enumerate(zip(images, labels)):
        folder = root / class_names[k]
        folder.mkdir(parents=True, exist_ok=True)
        pil = Image.fromarray(img, "L")
        (pil.convert("RGB") if rgb else pil).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def synthetic_folders(tmp_path_factory) -> dict[str, Path]:
    """Image folders: ``train`` and ``known`` (10 classes), ``unknown`` (1 class, RGB)."""
    root = tmp_path_factory.mktemp("folders")
    names = [f"c{k}" for k in range(10)]
    tr_x, tr_y = synthetic_digits(1200, seed=0)
    te_x, te_y = synthetic_digits(300, seed=2)
    un = synthetic_unknowns(200)
    return {
        "train": write_folder(root / "train", tr_x, tr_y, names),
        "known": write_folder(root / "known", te_x, te_y, names),
        "unknown": write_folder(root / "unknown", un, np.zeros(len(un), int), ["noise"], rgb=True),
    }


FAST = TrainConfig(epochs=2, ae_epochs=2, batch_size=64, val_size=200, lr=3e-3, ae_lr=3e-3)


@pytest.fixture(scope="session")
def fitted() -> OpenSetRecognizer:
    """A recognizer fitted on 1,200 synthetic digits (a few seconds), with every scorer
    and the seed's decision rule."""
    return OpenSetRecognizer(decision_scorer="combined", scorers="all").fit(synthetic_set(1200), FAST)
