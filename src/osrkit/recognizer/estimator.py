"""``OpenSetRecognizer``: classifier backbone + optional autoencoder + calibrated scorers.

Keeps scikit-learn's estimator contract (the constructor stores its parameters, which
``resolve_params`` in ``osrkit.recognizer.params`` checks at fit time; ``fit`` returns
self and never changes a parameter; fitted attributes end in ``_``; ``predict`` returns a
class index or -1 for unknown) and Hugging Face's ``save_pretrained``/``from_pretrained``
folder layout (``osrkit.recognizer.persistence``). Training the networks is in
``osrkit.recognizer.fitting``, running them in ``osrkit.recognizer.inference``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn

from osrkit.data.imageset import ImageSet
from osrkit.data.inputs import ImagesLike, as_input_tensor
from osrkit.data.lazy import LazyImageSet
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.models import AutoencoderConfig, ClassifierConfig, backbone_entry
from osrkit.models.choice import network_options
from osrkit.recognizer.engine import FastPaths
from osrkit.recognizer.fitting import (
    FitReport,
    Split,
    build_networks,
    calibration_halves,
    fit_head,
    fit_input,
    train_networks,
    training_config,
    wrap_network,
)
from osrkit.recognizer.health import ModelHealth, assess_fit
from osrkit.recognizer.inference import UNKNOWN, RecognizerInference, sharded_outputs
from osrkit.recognizer.params import (
    ResolvedParams,
    check_several_classes,
    resolve_params,
    warn_legacy_configs,
)
from osrkit.recognizer.persistence import config_dict, load_pretrained, save_pretrained
from osrkit.scorers import ModelOutputs, needs_of, scorer_class
from osrkit.scorers.calibration import check_accept_rate
from osrkit.scorers.selection import (
    ScorerChoice,
    choose_scorers,
    default_decision_scorer,
    fit_scorers,
    model_signals,
)
from osrkit.training.config import TrainConfig

log = logging.getLogger(__name__)


__all__ = ["UNKNOWN", "FitReport", "ImagesLike", "OpenSetRecognizer"]
__all__ += ["as_input_tensor", "default_decision_scorer"]  # importable from here since before they moved


class OpenSetRecognizer(RecognizerInference, BaseEstimator):
    """Classifies known classes and rejects unknown inputs.

    A scikit-learn estimator: the constructor only stores its parameters (``get_params``,
    ``set_params``, ``sklearn.base.clone``); ``fit``, ``calibrate`` and the loaders check
    them and keep what they decide in fitted attributes, never in a parameter:
    ``class_names_``, ``accept_rate_``, ``decision_scorer_``, ``device_``, ``classifier_``,
    ``autoencoder_``, ``input_spec_``, ``scorers_``, ``thresholds_``, ``fit_report_``,
    ``health_`` (``osrkit.recognizer.health``: whether the model learned, said plainly)...

    Parameters
    ----------
    class_names: names of the known classes (default: the ten digits ``"0"`` to ``"9"``).
    accept_rate: fraction of known validation inputs each threshold accepts.
    decision_scorer: which scorer ``predict`` uses (default: the backbone's declared one,
        else ``default_decision_scorer``).
    classifier_config: deprecated, the seed's way to size the digit network: use
        ``backbone="small_cnn", backbone_options=classifier_config.options()``.
    autoencoder_config: deprecated: use ``autoencoder=AutoencoderConfig(...)``.
    fast_paths: CPU inference fast paths (default None: all that this CPU supports, unless
        ``OSRKIT_FAST=0``); ``FastPaths.off()`` is the plain float32 reference path.
        Setting it on a fitted model changes how it runs from the next call.
    scorers: the scorers to fit: registered names or unfitted ``Scorer`` instances
        (``osrkit.scorers.create_scorer("knn", k=10)``), or ``"all"`` (every scorer the model
        can compute); default: ``osrkit.scorers.selection.DEFAULT_SCORERS``. The decision scorer and
        a fusion's members are always added.
    backbone: a registered backbone name (``osrkit.list_backbones()``); default: the one
        that suits the input spec (``default_backbone``).
    backbone_options: options of that backbone (e.g. ``{"widths": [32, 64, 128]}``).
    input_spec: the input the networks take; default: chosen by ``fit`` from the training
        data (MNIST 1x28x28, CIFAR-10 3x32x32, an image folder from its images).
    autoencoder: train the autoencoder (True/False, or an ``AutoencoderConfig``); default:
        the backbone's default (on for the digit network, off for the colour one).
    device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    pretrained: start from ImageNet weights. None (default): where the backbone has them
        (the default for colour images, ``efficientnet_lite0``, does); False: train from
        scratch (colour images then get ``colour_cnn``); True: require them.
    """

    # fitted attributes besides RecognizerInference's: class-level defaults until set
    class_names_: list[str] | None = None
    accept_rate_: float | None = None
    pretrained_: bool = False  # True for a wrapped classifier: fit trains nothing
    train_config_: TrainConfig | None = None
    fit_report_: FitReport | None = None
    health_: ModelHealth | None = None  # set by fit, saved in the model folder
    _head_to_fit: nn.Linear | None = None  # from_classifier(head=...), fitted by fit

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
        self.class_names = class_names
        self.accept_rate = accept_rate
        self.decision_scorer = decision_scorer
        self.classifier_config = classifier_config
        self.autoencoder_config = autoencoder_config
        self.fast_paths = fast_paths
        self.backbone = backbone
        self.backbone_options = backbone_options
        self.input_spec = input_spec
        self.autoencoder = autoencoder
        self.device = device
        self.scorers = scorers
        self.pretrained = pretrained
        # Warned here, where users write the call, rather than in fit: a warning is no
        # derived state, and fit folds the configurations in (resolve_params).
        warn_legacy_configs(classifier_config, autoencoder_config, stacklevel=2)

    def check_params(self) -> ResolvedParams:
        """The parameters checked, a bad one in one line (``ConfigError``), and resolved as
        ``fit`` uses them; nothing is fitted or changed (see ``resolve_params``)."""
        return resolve_params(self.get_params(deep=False))

    def __sklearn_clone__(self) -> OpenSetRecognizer:
        """An unfitted copy with deep copies of the same parameters (``sklearn.base.clone``).

        Done here rather than by scikit-learn's default, which would take the ``Scorer``
        instances in ``scorers`` for estimators (they have ``get_params``) and call theirs
        with a ``deep`` argument it lacks; fit makes fresh scorers of their hyper-parameters."""
        params = {name: copy.deepcopy(value) for name, value in self.get_params(deep=False).items()}
        return type(self)(**params)

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
        params = model.check_params()
        num_classes = len(params.class_names)
        net, head_layer = wrap_network(
            module, input_spec, num_classes, features, backbone, params.backbone_options, head
        )
        model.class_names_, model.device_ = params.class_names, params.device
        model.classifier_ = net.eval().to(params.device)
        model.input_spec_, model.pretrained_, model._head_to_fit = input_spec, True, head_layer
        return model

    # ---------------------------------------------------------------- fitting
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
        The parameters are checked first, before any data is read; none is changed.
        ``health_`` then holds what the checks of ``osrkit.recognizer.health`` found (whether
        the classifier learned), each failed one also a warning line in the log.
        """
        params = self.check_params()
        wrapped = self.pretrained_
        if not wrapped:
            check_several_classes(train.name, train.class_names)
        if train.class_names != params.class_names:
            raise ConfigError(
                f"training classes {train.class_names} differ from the recognizer's {params.class_names}"
            )
        train, spec, name = fit_input(
            train, params, (self.input_spec_, self.backbone_name_) if wrapped else None
        )
        # the options of the networks fit builds (a wrapped classifier builds none)
        options = {} if wrapped else network_options(name, params.backbone_options, params.pretrained)
        config = training_config(config, name, train, params.class_names, options, wrapped)
        signals = model_signals(False if wrapped else params.wants_autoencoder(spec), spec)
        declared = backbone_entry(name).decision_scorer if name else None
        decision = params.decision_scorer or declared or default_decision_scorer(signals)
        choose_scorers(self.scorers, decision, signals)  # one line now, before any training
        split = Split.of(train, config)
        self.class_names_, self.input_spec_ = params.class_names, spec
        if wrapped:
            if self._head_to_fit is not None:
                fit_head(self.outputs, self._head_to_fit, split.images, split.labels, config.seed)
                self._head_to_fit, self._engine = None, None  # the engine copied the old head
            self.fit_report_ = FitReport(len(split.labels), len(split.val_labels), None, None)
        else:
            torch.manual_seed(config.seed)
            self.device_ = params.device
            self.classifier_, self.autoencoder_ = build_networks(params, spec, name, options)
            self.fit_report_ = train_networks(
                self.classifier_,
                self.autoencoder_,
                train,
                split,
                config,
                params.class_names,
                spec,
                checkpoint_dir,
                progress,
                params.device,
            )
            self._engine = None
        self.train_config_ = config
        val = self._calibrate(split.val_images, None, split.images, split.labels, decision)
        report, trained = self.fit_report_, None if wrapped else config
        self.health_ = assess_fit(val.predictions, split.val_labels, params.class_names, report, trained)
        self.health_.log_warnings()
        return self

    def calibrate(
        self,
        known: ImagesLike,
        accept_rate: float | None = None,
        reference: ImagesLike | None = None,
        reference_labels: torch.Tensor | np.ndarray | None = None,
        decision_scorer: str | None = None,
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

        ``accept_rate`` (default: the ``accept_rate`` parameter) and ``decision_scorer``
        (default: the parameter, else the decision scorer fitted before, else the default
        rule) set ``accept_rate_`` and ``decision_scorer_``; the parameters stay as they are.
        """
        self._calibrate(known, accept_rate, reference, reference_labels, decision_scorer)
        return self

    def _calibrate(
        self,
        known: ImagesLike,
        accept_rate: float | None,
        reference: ImagesLike | None,
        reference_labels: torch.Tensor | np.ndarray | None,
        decision_scorer: str | None,
    ) -> ModelOutputs:
        """``calibrate``, returning the outputs of the images that set the thresholds."""
        self._check_networks()
        params = self.check_params()
        rate = params.accept_rate if accept_rate is None else check_accept_rate(accept_rate)
        if decision_scorer is not None:
            scorer_class(decision_scorer)  # an unknown name: one line
        decision = (
            decision_scorer
            or params.decision_scorer
            or self.decision_scorer_
            or default_decision_scorer(self.signals())
        )
        chosen = choose_scorers(self.scorers, decision, self.signals())
        known_labels = known.labels if isinstance(known, ImageSet) else None
        known = self._as_input(known)
        if reference is None:
            known, reference, reference_labels = calibration_halves(known, known_labels, reference_labels)
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
            rate,
            self.linear_head() if any(s.needs_head for s in chosen) else None,
        )
        self.accept_rate_, self.decision_scorer_ = rate, decision
        fitted = f"fitted scorers {', '.join(self.scorers_)} on {len(reference_outputs)} known images"
        log.info("%s; thresholds accept %.0f%% of %d others", fitted, 100 * rate, len(outputs))
        log.debug("thresholds: %s", self.thresholds_)
        return outputs

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
