"""The networks: backbones (registered by name) and the autoencoder.

Importing this package registers every backbone that ships with osrkit.
"""

from . import colour, pretrained, small_cnn  # noqa: F401  (each registers its backbones)
from .autoencoder import AutoencoderConfig, ConvAutoencoder, autoencoder_fits, check_autoencoder_spec
from .external import ExternalClassifier, wrap_classifier
from .registry import (
    Backbone,
    BackboneEntry,
    Normalize,
    backbone_entry,
    create_backbone,
    default_backbone,
    list_backbones,
    register_backbone,
)
from .small_cnn import Classifier, ClassifierConfig

__all__ = [
    "AutoencoderConfig",
    "Backbone",
    "BackboneEntry",
    "Classifier",
    "ClassifierConfig",
    "ConvAutoencoder",
    "ExternalClassifier",
    "Normalize",
    "autoencoder_fits",
    "check_autoencoder_spec",
    "backbone_entry",
    "create_backbone",
    "default_backbone",
    "list_backbones",
    "register_backbone",
    "wrap_classifier",
]
