"""``OpenSetRecognizer``: classifier backbone + optional autoencoder + calibrated scorers.

Follows scikit-learn's habits (``fit`` returns self, fitted attributes end in ``_``,
inputs are checked against the input spec ``fit`` saw, ``predict`` returns a class index
or -1 for unknown) and Hugging Face's ``save_pretrained``/``from_pretrained`` folder
layout (see ``osrkit.recognizer.persistence``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from osrkit.data.imageset import ImageSet
from osrkit.data.inputs import ImagesLike, as_input_tensor
from osrkit.data.lazy import LazyImageSet, describe_source, fingerprint, memory_rows, training_rows
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError, DataError
from osrkit.hardware import resolve_device
from osrkit.models import (
    AutoencoderConfig,
    Backbone,
    ClassifierConfig,
    ConvAutoencoder,
    autoencoder_fits,
    backbone_entry,
    check_autoencoder_spec,
    create_backbone,
    default_backbone,
    wrap_classifier,
)
from osrkit.models.choice import as_registered, describe_backbone, network_options, rgb_spec
from osrkit.models.head import fit_linear_head, replace_head
from osrkit.recognizer.engine import FastPaths, InferenceEngine
from osrkit.recognizer.inference import UNKNOWN, RecognizerInference, sharded_outputs
from osrkit.recognizer.persistence import config_dict, load_pretrained, save_pretrained
from osrkit.scorers import Scorer, needs_of, scorer_class
from osrkit.scorers.calibration import check_accept_rate
from osrkit.scorers.selection import (
    ScorerChoice,
    check_scorer_choice,
    choose_scorers,
    default_decision_scorer,
    fit_scorers,
    model_signals,
)
from osrkit.training.config import TrainConfig
from osrkit.training.loop import Checkpointer, stratified_split, train_autoencoder, train_classifier
from osrkit.training.recipe import size_recipe, warn_small_classes

log = logging.getLogger(__name__)
recipe_log = logging.getLogger("osrkit.training.recipe")  # shown at the CLI's default level


__all__ = [
    "UNKNOWN",
    "FitReport",
    "ImagesLike",
    "OpenSetRecognizer",
    "as_input_tensor",
    "default_decision_scorer",
]


@dataclass
class FitReport:
    """What ``fit`` did: split sizes and each network's training history (``autoencoder``
    is None without one; both are None for a wrapped classifier, which is not trained)."""

    train_size: int
    val_size: int
    classifier: dict | None
    autoencoder: dict | None
    data_source: str = "memory"  # or "lazy": a folder read by DataLoader workers


class OpenSetRecognizer(RecognizerInference):
    """Classifies known classes and rejects unknown inputs.

    Parameters
    ----------
    class_names: names of the known classes.
    accept_rate: fraction of known validation inputs each threshold accepts.
    decision_scorer: which scorer ``predict`` uses (default: ``default_decision_scorer``).
    scorers: the scorers to fit: registered names or unfitted ``Scorer`` instances
        (``osrkit.scorers.create_scorer("knn", k=10)``), or ``"all"`` (every scorer the model
        can compute); default: ``osrkit.scorers.selection.DEFAULT_SCORERS``. The decision scorer and
        a fusion's members are always added.
    backbone: a registered backbone name (``osrkit.list_backbones()``); default: the one
        that suits the input spec (``default_backbone``).
    backbone_options: options of that backbone (e.g. ``{"widths": [32, 64, 128]}``).
    pretrained: start from ImageNet weights. None (default): where the backbone has them
        (the default for colour images, ``efficientnet_lite0``, does); False: train from
        scratch (colour images then get ``colour_cnn``); True: require them.
    input_spec: the input the networks take; default: chosen by ``fit`` from the training
        data (MNIST 1x28x28, CIFAR-10 3x32x32, an image folder from its images).
    autoencoder: train the autoencoder (True/False, or an ``AutoencoderConfig``); default:
        the backbone's default (on for the digit network, off for the colour one).
    fast_paths: CPU inference fast paths (default: all that this CPU supports, unless
        ``OSRKIT_FAST=0``); ``FastPaths.off()`` is the plain float32 reference path.
    device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    classifier_config: the seed's way to size the digit network (implies ``small_cnn``).
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        accept_rate: float = 0.95,
        decision_scorer: str | None = None,
        classifier_config: ClassifierConfig | None = None,
        autoencoder_config: AutoencoderConfig | None = None,
        fast_paths: FastPaths | None = None,
        *,
        backbone: str | None = None,
        backbone_options: dict | None = None,
        input_spec: InputSpec | None = None,
        autoencoder: bool | AutoencoderConfig | None = None,
        device: str | torch.device = "auto",
        scorers: ScorerChoice = None,
        pretrained: bool | None = None,
    ) -> None:
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(10)]
        self.accept_rate = check_accept_rate(accept_rate)
        if decision_scorer is not None:
            scorer_class(decision_scorer)  # an unknown name: one line, before any training
        self.decision_scorer = decision_scorer
        self.scorers = check_scorer_choice(scorers)
        if classifier_config is not None:
            if classifier_config.num_classes != len(self.class_names):
                raise ConfigError("classifier num_classes differs from the number of class names")
            backbone = backbone or "small_cnn"
            backbone_options = classifier_config.options() | (backbone_options or {})
        if backbone is not None:
            backbone_entry(backbone)  # an unknown name fails here, before any data is read
        self.backbone = backbone
        self.backbone_options = dict(backbone_options or {})
        if pretrained not in (None, True, False):
            raise ConfigError(f"pretrained must be True, False or None, got {pretrained!r}")
        self.pretrained = pretrained
        if backbone is not None:
            # pretrained=True on a network without weights: one line now
            network_options(backbone, self.backbone_options, pretrained)
        self.input_spec = input_spec
        if autoencoder_config is not None and autoencoder is None:
            autoencoder = autoencoder_config
        self.autoencoder = autoencoder
        if input_spec is not None and self._wants_autoencoder(input_spec):
            check_autoencoder_spec(input_spec)  # an asked-for autoencoder that cannot be: one line now
        self.device = resolve_device(device)
        self.classifier_: Backbone | None = None
        self.autoencoder_: ConvAutoencoder | None = None
        self.input_spec_: InputSpec | None = None
        self.pretrained_ = False  # True for a wrapped classifier: fit trains nothing
        self.scorers_: dict[str, Scorer] = {}
        self.thresholds_: dict[str, float] = {}
        self.train_config_: TrainConfig | None = None
        self.fit_report_: FitReport | None = None
        self._fast_paths = fast_paths or FastPaths.default()
        self._engine: InferenceEngine | None = None
        self._head_to_fit: nn.Linear | None = None  # from_classifier(head=...), fitted by fit
        self._engine_version: tuple = ()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_classifier(
        cls,
        module: nn.Module,
        input_spec: InputSpec,
        class_names: Sequence[str],
        features: str | Callable[[torch.Tensor], torch.Tensor],
        *,
        backbone: str | None = None,
        backbone_options: dict | None = None,
        accept_rate: float = 0.95,
        decision_scorer: str | None = None,
        fast_paths: FastPaths | None = None,
        device: str | torch.device = "auto",
        scorers: ScorerChoice = None,
        head: str | None = None,
    ) -> OpenSetRecognizer:
        """Wrap your own trained classifier (``module(x)`` -> logits over ``class_names``).

        ``input_spec`` says what ``module`` takes (size, channels, normalisation);
        ``features`` names the layer whose output is the penultimate representation (a
        forward hook catches it in the same pass), or is a callable ``x -> (N, D)``.
        ``fit(train)`` then fits the feature scorers on known training images and
        calibrates the thresholds on known validation images; it trains nothing.

        ``backbone``: the registered backbone whose factory builds this same architecture
        (e.g. ``efficientnet_lite0``); needed by ``save_pretrained``, which records the
        architecture by that name and its options and stores the weights as safetensors,
        so loading never unpickles code (register your own with ``register_backbone``).

        ``head``: the name of the network's last linear layer, when it is for other classes
        than ``class_names`` (an ImageNet network's 1,000): a new linear layer takes its
        place (on a copy of ``module``) and ``fit`` fits it on the known training images'
        features (logistic regression, ``osrkit.models.head``); nothing else is trained.
        """
        # A named feature layer is an option of the backbone, so a model folder can rebuild
        # the wrapper; with a callable, the registered factory must make the features itself.
        layer = {"features": features} if isinstance(features, str) else {}
        model = cls(
            class_names,
            accept_rate,
            decision_scorer,
            fast_paths=fast_paths,
            backbone=backbone,
            backbone_options=dict(backbone_options or {}) | layer,
            input_spec=input_spec,
            autoencoder=False,
            device=device,
            scorers=scorers,
        )
        if head is not None:
            module = replace_head(module, head, len(model.class_names))
        net = wrap_classifier(module, input_spec, len(model.class_names), features)
        # a network built by create_backbone records its options; a bare one is wrapped as it
        # is, which is what the backbone's options meant before any were recorded
        entry = backbone_entry(backbone) if backbone else None
        registered = getattr(module, "backbone_options", None)
        if registered is None:
            registered = entry.unrecorded_options if entry else {}
        options = registered | model.backbone_options
        if backbone is not None:
            net = as_registered(net, backbone, input_spec, len(model.class_names), options)
        net.backbone_name, net.backbone_options = backbone or "", options
        model._head_to_fit = net.get_submodule(f"net.{head}") if head is not None else None
        model.classifier_ = net.eval().to(model.device)
        model.input_spec_ = input_spec
        model.pretrained_ = True
        return model

    def _wants_autoencoder(self, spec: InputSpec) -> bool:
        """Whether an autoencoder goes with a model for ``spec``: as asked, else the
        backbone's default where the spec allows one (sides divisible by 4)."""
        if self.autoencoder is None:
            name = self.backbone or default_backbone(spec, self.pretrained is not False)
            return backbone_entry(name).autoencoder and autoencoder_fits(spec)
        return bool(self.autoencoder)

    # ---------------------------------------------------------------- fitting
    def _build_networks(self, spec: InputSpec, name: str, options: dict) -> None:
        """Fresh networks ``name`` with ``options`` for ``spec`` (seeded by the caller)."""
        self.classifier_ = create_backbone(name, spec, len(self.class_names), **options)
        self.autoencoder_ = None
        if self._wants_autoencoder(spec):
            ae = self.autoencoder if isinstance(self.autoencoder, AutoencoderConfig) else AutoencoderConfig()
            self.autoencoder_ = ConvAutoencoder(ae, spec)
        self._engine = None

    def fit(
        self,
        train: ImageSet | LazyImageSet,
        config: TrainConfig | dict | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> OpenSetRecognizer:
        """Train the networks from scratch on ``train`` (known classes only) and calibrate
        thresholds on a seeded, stratified validation split of it. Returns self.

        ``config``: the training recipe (default: the backbone's, ``TrainConfig.for_backbone``;
        a dict changes some of its fields).
        ``config.seed`` fixes the split, the initial weights, shuffling, augmentation and
        dropout (it seeds torch's global generator, as ``torch.manual_seed`` does). For a
        wrapped classifier (``from_classifier``) nothing is trained: the split only
        separates the images the scorers are fitted on from those that set thresholds.
        """
        if len(train.class_names) < 2 and not self.pretrained_:
            raise ConfigError(
                f"{train.name} holds one class ({train.class_names[0]!r}); a recognizer learns to tell "
                "at least 2 known classes apart, so add the other known classes' folders"
            )
        if train.class_names != self.class_names:
            raise ConfigError(
                f"training classes {train.class_names} differ from the recognizer's {self.class_names}"
            )
        spec = (
            self.input_spec_
            if self.pretrained_
            else (self.input_spec or train.spec or InputSpec(*train.shape))
        )
        name = (
            self.backbone_name_
            if self.pretrained_
            else (self.backbone or default_backbone(spec, self.pretrained is not False))
        )
        spec = rgb_spec(spec, name)
        if train.shape != spec.shape:
            log.info(
                "bringing %s from %s to the model's %s",
                train.name,
                "x".join(map(str, train.shape)),
                spec.describe(),
            )
            train = train.to_spec(spec)
        # the options of the networks fit builds (a wrapped classifier builds none)
        options = {} if self.pretrained_ else network_options(name, self.backbone_options, self.pretrained)
        if config is None or isinstance(config, dict):
            overrides = config or {}
            if name and not self.pretrained_:
                counts = torch.bincount(train.labels, minlength=len(self.class_names)).tolist()
                warn_small_classes(self.class_names, counts)
                recipe = size_recipe(name, len(train), len(self.class_names), overrides)
                config = recipe.config
                recipe_log.info("%s", recipe.describe(describe_backbone(name, options)))
            else:
                config = TrainConfig.for_backbone(name, **overrides) if name else TrainConfig(**overrides)
        signals = model_signals(False if self.pretrained_ else self._wants_autoencoder(spec), spec)
        if self.decision_scorer is None:
            declared = backbone_entry(name).decision_scorer if name else None
            self.decision_scorer = declared or default_decision_scorer(signals)
        choose_scorers(self.scorers, self.decision_scorer, signals)  # one line now, before any training
        tr, va = stratified_split(train.labels, config.val_size, config.seed)
        # a lazily read folder stays on disk for training; its validation split is decoded
        images, labels = training_rows(train, tr), train.labels[tr]
        val_images, val_labels = memory_rows(train, va), train.labels[va]
        self.input_spec_ = spec
        if self.pretrained_:
            if self._head_to_fit is not None:
                self._fit_head(images, labels, config.seed)
            self.train_config_ = config
            self.fit_report_ = FitReport(len(tr), len(va), None, None)
        else:
            torch.manual_seed(config.seed)
            self._build_networks(spec, name, options)
            ckpt = None
            if checkpoint_dir:
                identity = config.to_dict() | {
                    "class_names": self.class_names,
                    # the options the network was built with (registered defaults included)
                    "backbone": {"name": self.backbone_name_, "options": self.classifier_.backbone_options},
                    "input_spec": spec.to_dict(),
                    "autoencoder": self.autoencoder_.config.to_dict() if self.autoencoder_ else None,
                    "data": fingerprint(train),
                }
                ckpt = Checkpointer(checkpoint_dir, identity)
            clf_info = train_classifier(
                self.classifier_, images, labels, val_images, val_labels, config, ckpt, progress, self.device
            )
            ae_info = None
            if self.autoencoder_ is not None:
                ae_info = train_autoencoder(
                    self.autoencoder_, images, val_images, config, ckpt, progress, self.device
                )
            self._engine = None
            self.train_config_ = config
            self.fit_report_ = FitReport(len(tr), len(va), clf_info, ae_info, describe_source(train))
        self.calibrate(val_images, reference=images, reference_labels=labels)
        return self

    def _fit_head(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> None:
        """Fit the wrapped network's new head on the features of the training split."""
        features = self.outputs(images, signals=frozenset()).features
        fit_linear_head(self._head_to_fit, torch.from_numpy(features), labels, seed=seed)
        self._head_to_fit, self._engine = None, None  # the engine copied the old head
        log.info("fitted a new linear head on %d known training images", len(labels))

    def calibrate(
        self,
        known: ImagesLike,
        accept_rate: float | None = None,
        reference: ImagesLike | None = None,
        reference_labels: torch.Tensor | np.ndarray | None = None,
    ) -> OpenSetRecognizer:
        """Fit the chosen scorers (``scorers``) and set their thresholds, on known-class
        images only.

        ``known``: known VALIDATION images; every threshold and the fusions' calibration
        come from them. ``reference``: known TRAINING images (those the networks were
        trained on), on which the scorers with parameters (``mahalanobis``, ``knn``,
        ``class_reconstruction``) are fitted, never on ``known``: a kNN bank holding the
        calibration images would score them at distance 0. ``reference_labels``: their
        classes (default: ``reference.labels`` for an ``ImageSet``, else the classifier's
        predictions). ``fit`` passes its training split.

        Without ``reference``, ``known`` is split in two halves by a seeded (seed 0)
        random permutation: the first fits the scorers with parameters (labelled by
        ``known.labels`` for an ``ImageSet``, else by the classifier's predictions), the
        second sets the thresholds.
        """
        self._check_networks()
        if accept_rate is not None:
            self.accept_rate = check_accept_rate(accept_rate)
        if self.decision_scorer is None:
            self.decision_scorer = default_decision_scorer(self.signals())
        chosen = choose_scorers(self.scorers, self.decision_scorer, self.signals())
        known_labels = known.labels if isinstance(known, ImageSet) else None
        known = self._as_input(known)
        if reference is None:
            if len(known) < 2:
                raise DataError("calibration without reference images needs at least 2 known images")
            perm = np.random.default_rng(0).permutation(len(known))
            ref_index, cal_index = np.sort(perm[: len(known) // 2]), np.sort(perm[len(known) // 2 :])
            reference, known = known[torch.from_numpy(ref_index)], known[torch.from_numpy(cal_index)]
            if known_labels is not None and reference_labels is None:
                reference_labels = known_labels[torch.from_numpy(ref_index)]
        elif reference_labels is None and isinstance(reference, ImageSet):
            reference_labels = reference.labels
        if isinstance(reference_labels, torch.Tensor):
            reference_labels = reference_labels.numpy()
        needs = needs_of(chosen)  # only the signals the chosen scorers read
        # Under torchrun each rank scores its part and every rank receives all outputs
        # (all_gather), then fits the same scorers on them: a lazily read training set is
        # on no rank whole, and a single process's fit is reproduced on every rank.
        reference_outputs = sharded_outputs(self, reference, needs)
        outputs = sharded_outputs(self, known, needs)
        self.scorers_, self.thresholds_ = fit_scorers(
            chosen,
            reference_outputs,
            reference_labels,
            outputs,
            self.accept_rate,
            self.linear_head() if any(s.needs_head for s in chosen) else None,
        )
        log.info(
            "fitted scorers on %d known training images, calibrated on %d known images: %s",
            len(reference_outputs),
            len(outputs),
            self.thresholds_,
        )
        return self

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The class layer ``(W, b)`` with ``logits = features @ W.T + b``, for scorers
        that read it (ViM, ReAct): probed in float64 from the backbone's ``classify`` (so a
        scaled or otherwise wrapped linear head counts as it computes); None for a wrapped
        network, whose scorers fit it to the logits by least squares."""
        net = self.classifier_
        if not getattr(net, "splittable", False) or not hasattr(net, "feature_dim"):
            return None
        head = copy.deepcopy(net.head).cpu().double().eval()
        with torch.no_grad():
            bias = head(torch.zeros(1, net.feature_dim, dtype=torch.float64))[0]
            weight = (head(torch.eye(net.feature_dim, dtype=torch.float64)) - bias).T.contiguous()
        return weight, bias

    # ---------------------------------------------------------------- persistence
    def config_dict(self) -> dict:
        """The JSON config saved beside the weights (see ``osrkit.recognizer.persistence``)."""
        return config_dict(self)

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the model folder ``path`` atomically: ``config.json`` (input spec, backbone,
        scorers, thresholds), the networks' safetensors weights and ``scorers.safetensors``."""
        return save_pretrained(self, path, overwrite)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        fast_paths: FastPaths | None = None,
        device: str | torch.device = "auto",
    ) -> OpenSetRecognizer:
        """Load a folder written by ``save_pretrained`` (no pickle involved); folders of
        format versions 1 and 2 load too and give the same scores."""
        return load_pretrained(cls, path, fast_paths, device)
