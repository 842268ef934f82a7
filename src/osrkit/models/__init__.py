"""The networks: backbones (registered by name) and the autoencoder.

Importing this package registers every backbone that ships with osrkit.
"""

from osrkit.models import colour, pretrained, small_cnn  # noqa: F401  (each registers its backbones)
from osrkit.models.autoencoder import (
    AutoencoderConfig,
    ConvAutoencoder,
    autoencoder_fits,
    check_autoencoder_spec,
)
from osrkit.models.external import ExternalClassifier, wrap_classifier
from osrkit.models.pretrained import imagenet_network
from osrkit.models.registry import (
    BACKBONES,
    Backbone,
    BackboneEntry,
    Normalize,
    backbone_entry,
    create_backbone,
    default_backbone,
    list_backbones,
    register_backbone,
)
from osrkit.models.small_cnn import Classifier, ClassifierConfig

__all__ = [
    "BACKBONES",
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
    "imagenet_network",
    "list_backbones",
    "register_backbone",
    "wrap_classifier",
]
