"""The convolutional autoencoder whose reconstruction error flags unfamiliar inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import ConfigError


@dataclass(frozen=True)
class AutoencoderConfig:
    """Shape of the autoencoder: channels of its two stride-2 stages and the code width."""

    channels: tuple[int, int] = (32, 64)
    latent_dim: int = 32

    def to_dict(self) -> dict:
        return asdict(self) | {"channels": list(self.channels)}

    @classmethod
    def from_dict(cls, d: dict) -> AutoencoderConfig:
        return cls(tuple(d["channels"]), int(d["latent_dim"]))


def autoencoder_fits(spec: InputSpec) -> bool:
    """Whether the autoencoder can take ``spec`` (two stride-2 stages: sides divisible by 4)."""
    return spec.height % 4 == 0 and spec.width % 4 == 0


def check_autoencoder_spec(spec: InputSpec) -> None:
    """One line saying why the autoencoder cannot take ``spec``, and what to do."""
    if not autoencoder_fits(spec):
        raise ConfigError(
            f"the autoencoder needs height and width divisible by 4, got {spec.height}x{spec.width}; "
            "choose another --image-size or train without it (--no-autoencoder)"
        )


class ConvAutoencoder(nn.Module):
    """Convolutional autoencoder ``C x H x W -> latent_dim -> C x H x W`` (sigmoid output,
    pixels in [0, 1]); two stride-2 stages, so H and W must be divisible by 4. For 1x28x28
    digits this is the digits baseline's network.

    The narrow code keeps it from learning the identity, so inputs unlike the known
    training images reconstruct poorly.
    """

    def __init__(self, config: AutoencoderConfig = AutoencoderConfig(), spec: InputSpec = MNIST_SPEC) -> None:
        super().__init__()
        check_autoencoder_spec(spec)
        self.config = config
        c1, c2 = config.channels
        h, w, c = spec.height // 4, spec.width // 4, spec.channels
        self.encoder = nn.Sequential(
            nn.Conv2d(c, c1, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
            nn.Linear(c2 * h * w, config.latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(config.latent_dim, c2 * h * w),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (c2, h, w)),
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def reconstruction_error(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared error ``(B,)`` between ``x`` and its reconstruction."""
        return (self(x) - x).pow(2).flatten(1).mean(1)
