"""The training recipe sized from the data.

A backbone registers its recipe for a large folder (``register_backbone(recipe=...)``).
On a small one, that recipe's batch (512 for ``colour_cnn``) leaves one or two optimizer
steps an epoch, and the network learns nothing. ``size_recipe`` keeps the registered
recipe where the data is large and, where it is small,

- shrinks the batch so that an epoch has at least ``MIN_BATCHES_PER_EPOCH`` steps (a power
  of two, at least ``MIN_BATCH``), scaling the learning rate with it: linearly for SGD
  (Goyal et al., "Accurate, Large Minibatch SGD", 2017), by the square root for AdamW
  (Malladi et al., "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms",
  NeurIPS 2022);
- adds epochs until the run has at least ``MIN_STEPS`` optimizer steps, at most
  ``MAX_EPOCH_FACTOR`` times the registered epochs.

What the user sets (``--batch-size``, ``--epochs``, ``--lr``) is kept as given. A class
with fewer than ``SMALL_CLASS`` training images gets a warning: it still trains.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from osrkit.data.split import auto_val_size
from osrkit.training.config import TrainConfig

log = logging.getLogger(__name__)

MIN_BATCHES_PER_EPOCH = 16
MIN_BATCH = 16
MIN_STEPS = 150
MAX_EPOCH_FACTOR = 5
SMALL_CLASS = 20


@dataclass(frozen=True)
class SizedRecipe:
    """A recipe and how it was sized: ``config``, the training images it was sized for
    (the training split, without the validation images) and what changed."""

    config: TrainConfig
    train_images: int
    changes: tuple[str, ...]

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.train_images / self.config.batch_size)

    def describe(self, backbone: str) -> str:
        """One line for the log: the backbone, epochs, steps and batch, and why."""
        c = self.config
        sized = f"; sized from the data: {', '.join(self.changes)}" if self.changes else ""
        return (
            f"recipe: {backbone}, {c.epochs} epochs x {self.steps_per_epoch} steps of {c.batch_size} "
            f"images ({c.optimizer}, peak lr {c.lr:.3g}) on {self.train_images} training images{sized}"
        )


def _power_of_two_at_most(n: int) -> int:
    return 1 << max(0, int(n).bit_length() - 1)


def size_recipe(backbone: str, n_images: int, n_classes: int, overrides: dict | None = None) -> SizedRecipe:
    """The registered recipe of ``backbone`` sized for ``n_images`` training images of
    ``n_classes`` classes (before the validation split), with ``overrides`` (TrainConfig
    fields the user set) kept as given."""
    overrides = dict(overrides or {})
    base = TrainConfig.for_backbone(backbone, **overrides)
    val = base.val_size if base.val_size is not None else auto_val_size(n_images, n_classes)
    n_train = max(1, n_images - val)
    sized: dict = {}
    changes: list[str] = []
    batch = base.batch_size
    if "batch_size" not in overrides:
        fits = max(MIN_BATCH, _power_of_two_at_most(n_train // MIN_BATCHES_PER_EPOCH))
        if fits < batch:
            sized["batch_size"] = batch = fits
            changes.append(f"batch {base.batch_size} -> {batch}")
            if "lr" not in overrides:
                ratio = batch / base.batch_size
                sized["lr"] = base.lr * (ratio if base.optimizer == "sgd" else math.sqrt(ratio))
    if "epochs" not in overrides:
        steps = math.ceil(n_train / batch)
        epochs = min(max(base.epochs, math.ceil(MIN_STEPS / steps)), MAX_EPOCH_FACTOR * base.epochs)
        if epochs != base.epochs:
            sized["epochs"] = epochs
            changes.append(f"epochs {base.epochs} -> {epochs}")
    config = TrainConfig.for_backbone(backbone, **(overrides | sized))
    return SizedRecipe(config, n_train, tuple(changes))


def warn_small_classes(class_names: Sequence[str], counts: Sequence[int]) -> None:
    """One warning line naming the classes with fewer than ``SMALL_CLASS`` images."""
    small = [f"{name} ({n})" for name, n in zip(class_names, counts) if n < SMALL_CLASS]
    if small:
        log.warning(
            "few training images in %s: under %d a class, the model and its thresholds are unreliable; "
            "add images where you can (training goes on)",
            ", ".join(small),
            SMALL_CLASS,
        )
