"""Unknown sets the protocols make themselves (noise, MNIST-Noise) and the split of a
dataset into known and unknown classes."""

from __future__ import annotations

import torch

from osrkit.data.imageset import ImageSet
from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import ConfigError

NOISE_IMAGES = 10_000


def uniform_noise(n: int = NOISE_IMAGES, seed: int = 0, spec: InputSpec = MNIST_SPEC) -> ImageSet:
    """Images of ``spec``'s shape whose pixels are i.i.d. uniform in [0, 1] (as in ODIN,
    Liang et al. 2018), stored as uint8 (``round(255 u)``)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, *spec.shape, generator=g).mul_(255).round_().to(torch.uint8)
    return ImageSet(images, torch.zeros(n, dtype=torch.int64), ["noise"], "uniform noise")


def gaussian_noise(n: int = NOISE_IMAGES, seed: int = 0, spec: InputSpec = MNIST_SPEC) -> ImageSet:
    """Images of ``spec``'s shape whose pixels are i.i.d. N(0.5, 1) clipped to [0, 1] (as in
    ODIN, Liang et al. 2018), stored as uint8."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.shape, generator=g).add_(0.5).clamp_(0, 1)
    return ImageSet(
        x.mul_(255).round_().to(torch.uint8), torch.zeros(n, dtype=torch.int64), ["noise"], "Gaussian noise"
    )


def mnist_noise(mnist: ImageSet, seed: int = 0) -> ImageSet:
    """Each MNIST image with its zero-valued pixels replaced by uniform noise in [0, 1]
    (the CROSR protocol's MNIST-Noise, Yoshihashi et al. 2019), stored as uint8."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(mnist.images.shape, generator=g).mul_(255).round_().to(torch.uint8)
    images = torch.where(mnist.images == 0, noise, mnist.images)
    return ImageSet(images, mnist.labels.clone(), list(mnist.class_names), "MNIST-Noise")


def split_classes(data: ImageSet, known: tuple[int, ...]) -> tuple[ImageSet, ImageSet]:
    """(known, unknown) parts of ``data``: the known part relabelled ``0..len(known)-1`` in
    the order of ``known``, the unknown part with its original labels."""
    if len(set(known)) != len(known) or not all(0 <= k < len(data.class_names) for k in known):
        raise ConfigError(f"known classes {known} must be distinct class indices of {data.name}")
    mapping = torch.full((len(data.class_names),), -1, dtype=torch.int64)
    mapping[list(known)] = torch.arange(len(known))
    new = mapping[data.labels]
    is_known = new >= 0
    names = [data.class_names[k] for k in known]
    k = ImageSet(data.images[is_known], new[is_known], names, f"{data.name} known {list(known)}")
    u = data.subset(~is_known, name=f"{data.name} other classes")
    return k, u
