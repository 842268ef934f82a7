"""The networks: a CNN classifier with penultimate features, and a convolutional autoencoder."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ClassifierConfig:
    """Shape of the CNN: channels of its three stages, feature width, dropout."""

    num_classes: int = 10
    channels: tuple[int, int, int] = (16, 32, 64)
    feature_dim: int = 128
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self) | {"channels": list(self.channels)}


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Classifier(nn.Module):
    """CNN for 1x28x28 inputs: 28x28 and 14x14 stages of two 3x3 convolutions each, one
    7x7 stage, then a fully connected feature layer (the penultimate features) and the
    linear class head."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3 = config.channels
        self.body = nn.Sequential(
            *_conv(1, c1),
            *_conv(c1, c1),
            nn.MaxPool2d(2),
            *_conv(c1, c2),
            *_conv(c2, c2),
            nn.MaxPool2d(2),
            *_conv(c2, c3),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(c3 * 3 * 3, config.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)``."""
        return self.body(x)

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and penultimate features in one pass."""
        f = self.features(x)
        return self.head(self.dropout(f)), f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of the autoencoder: channels of its two stride-2 stages and the code width."""

    channels: tuple[int, int] = (32, 64)
    latent_dim: int = 32

    def to_dict(self) -> dict:
        return asdict(self) | {"channels": list(self.channels)}


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder 1x28x28 -> ``latent_dim`` -> 1x28x28 (sigmoid output).

    The narrow code keeps it from learning the identity, so inputs unlike the known
    training images reconstruct poorly.
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig()) -> None:
        super().__init__()
        self.config = config
        c1, c2 = config.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(c2 * 7 * 7, config.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, c2 * 7 * 7),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (c2, 7, 7)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared error ``(B,)`` between ``x`` and its reconstruction."""
        return (self(x) - x).pow(2).flatten(1).mean(1)
