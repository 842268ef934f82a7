"""Which network a recognizer builds, with what options: ``pretrained`` applied to a
backbone's options, a grayscale spec brought to RGB for a network that takes only RGB,
the one-line description the recipe log uses, and a wrapped network rebuilt as its
registered backbone."""

from __future__ import annotations

import dataclasses
import logging

from torch import nn

from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.models.registry import backbone_entry, create_backbone

log = logging.getLogger(__name__)


def network_options(name: str, options: dict, pretrained: bool | None) -> dict:
    """``options`` of backbone ``name`` with ``pretrained`` as asked (None: as registered);
    one line when weights are required of a network that has none."""
    if pretrained is None:
        return options
    if "pretrained" not in backbone_entry(name).options:
        if pretrained:
            raise ConfigError(
                f"backbone {name!r} has no pretrained weights; use one that has "
                "(efficientnet_lite0, _lite1, _lite2) or leave pretrained unset"
            )
        return options
    return options | {"pretrained": pretrained}


def rgb_spec(spec: InputSpec, name: str) -> InputSpec:
    """``spec``, in RGB for a backbone that takes only RGB (a log line says so)."""
    channels = backbone_entry(name).channels if name else None
    if channels in (None, spec.channels):
        return spec
    log.warning("%s takes RGB images: the grayscale images are repeated into 3 channels", name)
    stats = {k: None if v is None else tuple(v) * 3 for k, v in (("mean", spec.mean), ("std", spec.std))}
    return dataclasses.replace(spec, channels=3, **stats)


def describe_backbone(name: str, options: dict) -> str:
    """``name``, with how it starts and its working resolution where it has them."""
    options = backbone_entry(name).options | options
    if "pretrained" not in options:
        return name
    how = "ImageNet-pretrained, fine-tuned" if options["pretrained"] else "from scratch"
    at = f" at {options['resolution']} px" if options.get("resolution") else ""
    return f"{name} ({how}{at})"


def as_registered(
    net: nn.Module, backbone: str, spec: InputSpec, num_classes: int, options: dict
) -> nn.Module:
    """The wrapped ``net`` as the registered ``backbone`` builds it, holding its weights, so
    a model scores now as it will once saved and loaded; ``net`` itself where the
    registered network does not take its weights (``save_pretrained`` then says so)."""
    try:
        rebuilt = create_backbone(backbone, spec, num_classes, for_loading=True, **options)
        rebuilt.load_state_dict(net.state_dict())
    except (ConfigError, RuntimeError):
        return net
    return rebuilt
