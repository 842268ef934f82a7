"""What ``OpenSetRecognizer.fit`` and ``from_classifier`` do to the networks: the training
recipe, the split, building and training the networks, wrapping a user's classifier and
fitting its new head. The estimator (``osrkit.recognizer.estimator``) decides what to do
and keeps the results in its fitted attributes; these functions do it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from osrkit.data.imageset import ImageSet
from osrkit.data.lazy import LazyImageSet, describe_source, fingerprint, memory_rows, training_rows
from osrkit.data.spec import InputSpec
from osrkit.errors import DataError
from osrkit.models import ConvAutoencoder, backbone_entry, create_backbone, default_backbone, wrap_classifier
from osrkit.models.choice import as_registered, describe_backbone, rgb_spec
from osrkit.models.head import fit_linear_head, replace_head
from osrkit.recognizer.params import ResolvedParams
from osrkit.training.config import TrainConfig
from osrkit.training.loop import Checkpointer, stratified_split, train_autoencoder, train_classifier
from osrkit.training.recipe import size_recipe, warn_small_classes

log = logging.getLogger(__name__)
recipe_log = logging.getLogger("osrkit.training.recipe")  # shown at the CLI's default level


@dataclass
class FitReport:
    """What ``fit`` did: split sizes and each network's training history (``autoencoder``
    is None without one; both are None for a wrapped classifier, which is not trained)."""

    train_size: int
    val_size: int
    classifier: dict | None
    autoencoder: dict | None
    data_source: str = "memory"  # or "lazy": a folder read by DataLoader workers


@dataclass
class Split:
    """``fit``'s seeded, stratified split: the networks and the scorers are fitted on the
    training rows (a lazily read folder stays on disk), the thresholds set on the
    validation rows (decoded)."""

    images: Any
    labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor

    @classmethod
    def of(cls, train: ImageSet | LazyImageSet, config: TrainConfig) -> Split:
        """The split of ``train`` by ``config.val_size`` and ``config.seed``."""
        tr, va = stratified_split(train.labels, config.val_size, config.seed)
        return cls(training_rows(train, tr), train.labels[tr], memory_rows(train, va), train.labels[va])


def training_config(
    config: TrainConfig | dict | None,
    name: str | None,
    train: ImageSet | LazyImageSet,
    class_names: list[str],
    options: dict,
    wrapped: bool,
) -> TrainConfig:
    """``config``, or the recipe it changes some fields of (a dict) or stands for (None):
    sized to the data for a network ``fit`` trains, the backbone's defaults otherwise."""
    if config is not None and not isinstance(config, dict):
        return config
    overrides = config or {}
    if name and not wrapped:
        counts = torch.bincount(train.labels, minlength=len(class_names)).tolist()
        warn_small_classes(class_names, counts)
        recipe = size_recipe(name, len(train), len(class_names), overrides)
        recipe_log.info("%s", recipe.describe(describe_backbone(name, options)))
        return recipe.config
    return TrainConfig.for_backbone(name, **overrides) if name else TrainConfig(**overrides)


def build_networks(
    params: ResolvedParams, spec: InputSpec, name: str, options: dict
) -> tuple[nn.Module, ConvAutoencoder | None]:
    """Fresh networks: backbone ``name`` with ``options`` for ``spec``, and the autoencoder
    where ``params`` want one (seeded by the caller)."""
    classifier = create_backbone(name, spec, len(params.class_names), **options)
    if not params.wants_autoencoder(spec):
        return classifier, None
    return classifier, ConvAutoencoder(params.autoencoder_config(), spec)


def train_networks(
    classifier: nn.Module,
    autoencoder: ConvAutoencoder | None,
    train: ImageSet | LazyImageSet,
    split: Split,
    config: TrainConfig,
    class_names: list[str],
    spec: InputSpec,
    checkpoint_dir: str | os.PathLike | None,
    progress: bool,
    device: torch.device,
) -> FitReport:
    """Train ``classifier`` (then ``autoencoder``) on ``split`` in place, checkpointed in
    ``checkpoint_dir`` under the identity of the data, classes, networks and recipe."""
    ckpt = None
    if checkpoint_dir:
        identity = config.to_dict() | {
            "class_names": class_names,
            # the options the network was built with (registered defaults included)
            "backbone": {"name": classifier.backbone_name, "options": classifier.backbone_options},
            "input_spec": spec.to_dict(),
            "autoencoder": autoencoder.config.to_dict() if autoencoder else None,
            "data": fingerprint(train),
        }
        ckpt = Checkpointer(checkpoint_dir, identity)
    rows = (split.images, split.labels, split.val_images, split.val_labels)
    clf_info = train_classifier(classifier, *rows, config, ckpt, progress, device)
    ae_info = None
    if autoencoder is not None:
        ae_info = train_autoencoder(
            autoencoder, split.images, split.val_images, config, ckpt, progress, device
        )
    return FitReport(len(split.labels), len(split.val_labels), clf_info, ae_info, describe_source(train))


def fit_head(
    outputs: Callable[..., Any], head: nn.Linear, images: Any, labels: torch.Tensor, seed: int
) -> None:
    """Fit a wrapped network's new ``head`` (logistic regression) on the features
    ``outputs`` (a recognizer's ``outputs``) gives for the training split."""
    features = outputs(images, signals=frozenset()).features
    fit_linear_head(head, torch.from_numpy(features), labels, seed=seed)
    log.info("fitted a new linear head on %d known training images", len(labels))


def wrap_network(
    module: nn.Module,
    input_spec: InputSpec,
    num_classes: int,
    features: str | Callable[[torch.Tensor], torch.Tensor],
    backbone: str | None,
    options: dict,
    head: str | None,
) -> tuple[nn.Module, nn.Linear | None]:
    """``from_classifier``'s network: ``module`` wrapped (on a copy with a new last layer
    ``head`` for ``num_classes``, when named), as registered backbone ``backbone`` where
    one is named, and the new head to fit (None without one)."""
    if head is not None:
        module = replace_head(module, head, num_classes)
    net = wrap_classifier(module, input_spec, num_classes, features)
    # a network built by create_backbone records its options; a bare one is wrapped as it
    # is, which is what the backbone's options meant before any were recorded
    entry = backbone_entry(backbone) if backbone else None
    registered = getattr(module, "backbone_options", None)
    if registered is None:
        registered = entry.unrecorded_options if entry else {}
    options = registered | options
    if backbone is not None:
        net = as_registered(net, backbone, input_spec, num_classes, options)
    net.backbone_name, net.backbone_options = backbone or "", options
    return net, (net.get_submodule(f"net.{head}") if head is not None else None)


def calibration_halves(
    known: torch.Tensor, known_labels: torch.Tensor | None, reference_labels: torch.Tensor | np.ndarray | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | np.ndarray | None]:
    """``known`` split in two halves by a seeded (seed 0) permutation, for a calibration
    without reference images: (the images that set the thresholds, those the scorers are
    fitted on, their labels: ``reference_labels`` if given, else ``known_labels``'s)."""
    if len(known) < 2:
        raise DataError("calibration without reference images needs at least 2 known images")
    perm = np.random.default_rng(0).permutation(len(known))
    ref_index = torch.from_numpy(np.sort(perm[: len(known) // 2]))
    cal_index = torch.from_numpy(np.sort(perm[len(known) // 2 :]))
    if known_labels is not None and reference_labels is None:
        reference_labels = known_labels[ref_index]
    return known[cal_index], known[ref_index], reference_labels


def fit_input(
    train: ImageSet | LazyImageSet, params: ResolvedParams, wrapped: tuple[InputSpec, str | None] | None
) -> tuple[ImageSet | LazyImageSet, InputSpec, str | None]:
    """What ``fit`` trains on: the model's input spec and backbone (a wrapped classifier's
    own ``wrapped``, else the parameters', else what suits ``train``) and ``train``
    brought to that spec."""
    if wrapped is not None:
        spec, name = wrapped
    else:
        spec = params.input_spec or train.spec or InputSpec(*train.shape)
        name = params.backbone or default_backbone(spec, params.pretrained is not False)
    spec = rgb_spec(spec, name)
    if train.shape != spec.shape:
        shape = "x".join(map(str, train.shape))
        log.info("bringing %s from %s to the model's %s", train.name, shape, spec.describe())
        train = train.to_spec(spec)
    return train, spec, name
