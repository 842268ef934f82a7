"""Batched data augmentation on tensors: random crop with padding, random rotation and
random horizontal flip.

Done on whole batches with ``affine_grid``/``grid_sample`` (torchvision's per-image
transforms are unavailable here, and per-sample Python would dominate training time).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from osrkit.errors import ConfigError


@dataclass(frozen=True)
class Augmentation:
    """Random rotation by up to ``rotation_degrees``, horizontal flip with ``hflip_prob``
    and a random crop of the image padded by ``crop_padding`` zero pixels on every side
    (a shift by up to that many pixels). Each is off when set to 0.

    ``crop_mode``: the padding is zeros or the image reflected (airbench's translation).
    ``alternate_flip``: each image's flip is drawn once, from its row index, and inverted on
    every odd epoch, so that every image is seen both ways within two epochs (Jordan 2024);
    the caller passes the rows and the epoch.

    Digits keep rotation without flips (flips change what a digit is; see BENCHMARKS.md);
    photographs use crop and flip, the usual CIFAR augmentation (He et al. 2016).
    """

    rotation_degrees: float = 10.0
    hflip_prob: float = 0.0
    crop_padding: int = 0
    crop_mode: str = "zeros"
    alternate_flip: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.rotation_degrees <= 180.0:
            raise ConfigError(f"rotation must be within [0, 180] degrees, got {self.rotation_degrees}")
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ConfigError(f"horizontal-flip probability must be within [0, 1], got {self.hflip_prob}")
        if not isinstance(self.crop_padding, int) or not 0 <= self.crop_padding <= 64:
            raise ConfigError(f"crop padding must be an integer within [0, 64], got {self.crop_padding!r}")
        if self.crop_mode not in CROP_MODES:
            raise ConfigError(f"crop mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}")

    @property
    def enabled(self) -> bool:
        return self.rotation_degrees > 0 or self.hflip_prob > 0 or self.crop_padding > 0

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        total: int | None = None,
        offset: int = 0,
        rows: torch.Tensor | None = None,
        epoch: int = 0,
    ) -> torch.Tensor:
        """Augment a batch ``(B, C, H, W)`` of floats; returns a new tensor.

        ``rows`` (the batch's row indices in the dataset) and ``epoch``: what
        ``alternate_flip`` flips by; without ``rows`` the flips are drawn as random ones.

        ``x`` may be rows ``offset:offset + B`` of a batch of ``total`` rows (one rank's
        part, see ``osrkit.training.distributed``): the random draws are made for the whole batch
        and those rows take theirs, so the parts of all ranks are augmented as the whole
        batch would be in one process."""
        if not self.enabled:
            return x
        b = x.shape[0]
        total = total or b
        if self.hflip_prob > 0:
            flip = (torch.rand(total, generator=generator) < self.hflip_prob)[offset : offset + b]
            if self.alternate_flip and rows is not None:
                flip = alternating_flips(rows, epoch)
            x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
        if self.crop_padding > 0:
            x = random_crop(x, self.crop_padding, generator, total, offset, self.crop_mode)
        if self.rotation_degrees > 0:
            angle = (torch.rand(total, generator=generator) * 2 - 1)[offset : offset + b] * math.radians(
                self.rotation_degrees
            )
            cos, sin = angle.cos(), angle.sin()
            zero = torch.zeros_like(cos)
            theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
            grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return x


CROP_MODES = ("zeros", "reflect")


def alternating_flips(rows: torch.Tensor, epoch: int) -> torch.Tensor:
    """Whether to flip each of ``rows`` (dataset row indices) in ``epoch``: a fixed
    pseudo-random bit per row (the top bit of a multiplicative hash, Knuth's), inverted on
    odd epochs."""
    first = ((rows.to(torch.int64) * 2654435761) & 0xFFFFFFFF) >> 31
    return (first ^ (epoch % 2)).bool()


def random_crop(
    x: torch.Tensor,
    padding: int,
    generator: torch.Generator | None = None,
    total: int | None = None,
    offset: int = 0,
    mode: str = "zeros",
) -> torch.Tensor:
    """Each image of ``x`` ``(B, C, H, W)`` padded by ``padding`` (zeros, or the image
    reflected with ``mode="reflect"``) and cropped back to ``H x W`` at a random offset, all
    in one gather (no per-image Python). ``total`` and ``offset``: as in
    ``Augmentation.__call__``."""
    b, c, h, w = x.shape
    total, rows = total or b, slice(offset, offset + b)
    pad = (padding, padding, padding, padding)
    padded = F.pad(x, pad, mode="reflect") if mode == "reflect" else F.pad(x, pad)
    dy = torch.randint(0, 2 * padding + 1, (total, 1), generator=generator)[rows]
    dx = torch.randint(0, 2 * padding + 1, (total, 1), generator=generator)[rows]
    rows = (torch.arange(h).unsqueeze(0) + dy).view(b, 1, h, 1)
    cols = (torch.arange(w).unsqueeze(0) + dx).view(b, 1, 1, w)
    return padded[torch.arange(b).view(b, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]
