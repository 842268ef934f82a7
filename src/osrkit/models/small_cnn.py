"""``small_cnn``: the digits baseline's network, with its layer sizes derived from the input spec."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import ConfigError
from osrkit.models.registry import Backbone, register_backbone


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of ``small_cnn``: channels of its three stages, feature width, dropout."""

    num_classes: int = 10
    channels: tuple[int, int, int] = (16, 32, 64)
    feature_dim: int = 128
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self) | {"channels": list(self.channels)}

    def options(self) -> dict:
        """The ``create_backbone`` options (everything but the class count)."""
        return {k: v for k, v in self.to_dict().items() if k != "num_classes"}


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Classifier(Backbone):
    """CNN: two stages of two 3x3 convolutions at full and half resolution, one stage at a
    quarter, each followed by 2x2 max pooling, then a fully connected feature layer (the
    penultimate features) and the linear class head. For 1x28x28 digits this is the
    digits baseline's network (28 -> 14 -> 7 -> 3)."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig(), spec: InputSpec = MNIST_SPEC) -> None:
        super().__init__()
        if min(spec.height, spec.width) < 8:
            raise ConfigError(
                f"small_cnn needs images of at least 8x8 pixels, got {spec.height}x{spec.width}"
            )
        self.config = config
        self.feature_dim = config.feature_dim
        c1, c2, c3 = config.channels
        self.set_normalization(spec)
        self.body = nn.Sequential(
            *_conv(spec.channels, c1),
            *_conv(c1, c1),
            nn.MaxPool2d(2),
            *_conv(c1, c2),
            *_conv(c2, c2),
            nn.MaxPool2d(2),
            *_conv(c2, c3),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c3 * (spec.height // 8) * (spec.width // 8), config.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` (the digits baseline's name)."""
        return self.forward_features(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalized(x))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))


@register_backbone(
    "small_cnn",
    description="the seed's digit CNN (3 conv stages, 128-d features); default for small grayscale images",
    autoencoder=True,
)
def small_cnn(
    spec: InputSpec,
    num_classes: int,
    channels: tuple[int, int, int] | list[int] = (16, 32, 64),
    feature_dim: int = 128,
    dropout: float = 0.3,
) -> Classifier:
    """The digits baseline's CNN, sized from the spec."""
    config = ClassifierConfig(num_classes, tuple(channels), int(feature_dim), float(dropout))
    return Classifier(config, spec)
