"""An ``OpenSetRecognizer``'s parameters, checked and resolved.

``OpenSetRecognizer.__init__`` stores its parameters as given, as scikit-learn's
estimator contract asks (``get_params`` returns them, ``clone`` rebuilds from them).
``resolve_params`` checks them, a bad one in one line (``ConfigError``), and works out
what ``fit``, ``calibrate`` and the loaders use: the class names, the backbone and its
options with the seed's ``classifier_config`` folded in, the autoencoder (the seed's
``autoencoder_config`` folded in) and the device. It is called at the start of each of
them, never by the constructor.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.hardware import resolve_device
from osrkit.models import (
    AutoencoderConfig,
    ClassifierConfig,
    autoencoder_fits,
    backbone_entry,
    check_autoencoder_spec,
    default_backbone,
)
from osrkit.models.choice import network_options
from osrkit.scorers import scorer_class
from osrkit.scorers.calibration import check_accept_rate
from osrkit.scorers.selection import check_scorer_choice

DIGIT_NAMES = tuple(str(i) for i in range(10))  # the classes when none are named


@dataclass(frozen=True)
class ResolvedParams:
    """The parameters as ``fit`` uses them (see ``resolve_params``)."""

    class_names: list[str]
    accept_rate: float
    decision_scorer: str | None
    backbone: str | None
    backbone_options: dict
    pretrained: bool | None
    input_spec: InputSpec | None
    autoencoder: bool | AutoencoderConfig | None
    device: torch.device

    def wants_autoencoder(self, spec: InputSpec) -> bool:
        """Whether an autoencoder goes with a model for ``spec`` (``wants_autoencoder``)."""
        return wants_autoencoder(self.autoencoder, self.backbone, self.pretrained, spec)

    def autoencoder_config(self) -> AutoencoderConfig:
        """The autoencoder's configuration: the one asked for, else the default."""
        return self.autoencoder if isinstance(self.autoencoder, AutoencoderConfig) else AutoencoderConfig()


def resolve_params(params: Mapping[str, Any]) -> ResolvedParams:
    """Check an ``OpenSetRecognizer``'s parameters (``get_params()``) and resolve them,
    before any data is read: an unknown scorer or backbone, an accept rate outside
    (0, 1], weights asked of a network without any, an autoencoder the input spec cannot
    take or a device this machine lacks is one line. No network is built."""
    names = params["class_names"]
    class_names = list(names) if names is not None else list(DIGIT_NAMES)
    accept_rate = check_accept_rate(params["accept_rate"])
    decision = params["decision_scorer"]
    if decision is not None:
        scorer_class(decision)  # an unknown name: one line, before any training
    check_scorer_choice(params["scorers"])
    backbone, options = params["backbone"], params["backbone_options"]
    classifier_config: ClassifierConfig | None = params["classifier_config"]
    if classifier_config is not None:
        if classifier_config.num_classes != len(class_names):
            raise ConfigError("classifier num_classes differs from the number of class names")
        backbone = backbone or "small_cnn"
        options = classifier_config.options() | (options or {})
    if backbone is not None:
        backbone_entry(backbone)  # an unknown name fails here, before any data is read
    options = dict(options or {})
    pretrained = params["pretrained"]
    if pretrained not in (None, True, False):
        raise ConfigError(f"pretrained must be True, False or None, got {pretrained!r}")
    if backbone is not None:
        network_options(backbone, options, pretrained)  # pretrained=True without weights: one line
    autoencoder = params["autoencoder"]
    if params["autoencoder_config"] is not None and autoencoder is None:
        autoencoder = params["autoencoder_config"]
    spec = params["input_spec"]
    if spec is not None and wants_autoencoder(autoencoder, backbone, pretrained, spec):
        check_autoencoder_spec(spec)  # an asked-for autoencoder that cannot be: one line
    device = resolve_device(params["device"])
    return ResolvedParams(
        class_names, accept_rate, decision, backbone, options, pretrained, spec, autoencoder, device
    )


def wants_autoencoder(
    autoencoder: bool | AutoencoderConfig | None,
    backbone: str | None,
    pretrained: bool | None,
    spec: InputSpec,
) -> bool:
    """Whether an autoencoder goes with a model for ``spec``: as asked (``autoencoder``),
    else the backbone's default where the spec allows one (sides divisible by 4)."""
    if autoencoder is None:
        name = backbone or default_backbone(spec, pretrained is not False)
        return backbone_entry(name).autoencoder and autoencoder_fits(spec)
    return bool(autoencoder)


def warn_legacy_configs(classifier_config: object, autoencoder_config: object, stacklevel: int) -> None:
    """A ``DeprecationWarning`` for each of the seed's positional network configurations
    given, naming the keyword that replaces it."""
    if classifier_config is not None:
        warnings.warn(
            "OpenSetRecognizer(classifier_config=...) is deprecated and will be removed in the next "
            "release; use backbone='small_cnn', backbone_options=classifier_config.options()",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )
    if autoencoder_config is not None:
        warnings.warn(
            "OpenSetRecognizer(autoencoder_config=...) is deprecated and will be removed in the next "
            "release; use autoencoder=AutoencoderConfig(...)",
            DeprecationWarning,
            stacklevel=stacklevel + 1,
        )


def check_several_classes(name: str, class_names: Sequence[str]) -> None:
    """One line when the training data ``name`` holds a single class: a recognizer learns
    to tell at least 2 known classes apart (``fit``, and ``osrkit run`` before it loads its
    test data)."""
    if len(class_names) < 2:
        raise ConfigError(
            f"{name} holds one class ({class_names[0]!r}); a recognizer learns to tell at least 2 "
            "known classes apart, so add the other known classes' folders"
        )
