"""Batched data augmentation on tensors: random rotation and random horizontal flip.

Done on whole batches with ``affine_grid``/``grid_sample`` (torchvision's per-image
transforms are unavailable here, and per-sample Python would dominate training time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import ConfigError


@dataclass(frozen=True)
class Augmentation:
    """Random rotation by up to ``rotation_degrees`` and horizontal flip with ``hflip_prob``.

    Either is off when set to 0.
    """

    rotation_degrees: float = 10.0
    hflip_prob: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ConfigError(f"rotation must be within [0, 180] degrees, got {self.rotation_degrees}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ConfigError(f"horizontal-flip probability must be within [0, 1], got {self.hflip_prob}")

    @property
    def enabled(self) -> bool:
        return self.rotation_degrees > 0 or self.hflip_prob > 0

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a batch ``(B, C, H, W)`` of floats; returns a new tensor."""
        if not self.enabled:
            return x
        b = x.shape[0]
        if self.hflip_prob > 0:
            flip = torch.rand(b, generator=generator) < self.hflip_prob
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        if self.rotation_degrees > 0:
            angle = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(self.rotation_degrees)
            cos, sin = angle.cos(), angle.sin()
            zero = torch.zeros_like(cos)
            theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return x
