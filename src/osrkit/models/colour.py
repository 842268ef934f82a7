"""``colour_cnn``: the colour backbone for small photographs (CIFAR-10 sized, 32x32 RGB).

A VGG-style network in the family of the fast CIFAR-10 trainers (Page's ResNet-9 /
hlb-CIFAR10 and Jordan's airbench, 2024): a space-to-depth stem, then stages of
[3x3 conv, 2x2 max pool, BN, ReLU, 3x3 conv, BN, ReLU] that halve the resolution and
widen the channels, global max pooling to the penultimate features, a linear head.
Pooling right after the first convolution of a stage runs the BN, the activation and
the second convolution at a quarter of the pixels, which is what makes it cheap; the
space-to-depth stem (2x2 pixel blocks as 12 channels) does the same for the stem.
Chosen by measured accuracy per CPU-minute on 2 AVX2 cores (see BENCHMARKS.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.spec import InputSpec
from ..errors import ConfigError
from .registry import Backbone, register_backbone


class ScaledLinear(nn.Linear):
    """A bias-free linear head whose logits are scaled by a constant (1/9 here, as in
    airbench), so that the large learning rate of the SGD recipe leaves them tame."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class ColourNet(Backbone):
    """Space-to-depth stem (``widths[0]`` channels at half resolution), then one stage per
    width (each halves the resolution again), global max pool; feature width ``widths[-1]``."""

    def __init__(self, spec: InputSpec, num_classes: int, widths: tuple[int, ...] = (64, 128, 256)) -> None:
        super().__init__()
        if not widths:
            raise ConfigError("colour_cnn needs at least one width")
        scale = 2 ** (len(widths) + 1)  # the space-to-depth stem halves, and so does each stage
        if spec.height < scale or spec.width < scale:
            raise ConfigError(
                f"colour_cnn with {len(widths)} stages needs images of at least {scale}x{scale} pixels"
            )
        self.set_normalization(spec)
        stem, stages = widths[0], widths
        layers: list[nn.Module] = [
            nn.PixelUnshuffle(2),  # 2x2 pixel blocks -> 4C channels at half resolution
            nn.Conv2d(4 * spec.channels, stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem),
            nn.ReLU(inplace=True),
        ]
        cin = stem
        for w in stages:
            layers += [
                nn.Conv2d(cin, w, 3, padding=1, bias=False),
                nn.MaxPool2d(2),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
                nn.Conv2d(w, w, 3, padding=1, bias=False),
                nn.BatchNorm2d(w),
                nn.ReLU(inplace=True),
            ]
            cin = w
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self.feature_dim = cin
        self.head = ScaledLinear(cin, num_classes, 1 / 9)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalized(x))


@register_backbone(
    "colour_cnn",
    description="VGG-style colour CNN with a space-to-depth stem; default for colour images",
    recipe={
        "epochs": 6,
        "batch_size": 512,
        "optimizer": "sgd",
        "lr": 0.75,
        "momentum": 0.85,
        "weight_decay": 1.33e-3,
        "warmup": 0.23,
        "bias_lr_mult": 64.0,
        "freeze_bn_weight": True,
        "label_smoothing": 0.2,
        "rotation_degrees": 0.0,
        "hflip_prob": 0.5,
        "crop_padding": 2,
        "patience": 6,
    },
)
def colour_cnn(
    spec: InputSpec, num_classes: int, widths: tuple[int, ...] | list[int] = (64, 128, 256)
) -> ColourNet:
    """VGG-style colour CNN with a space-to-depth stem."""
    return ColourNet(spec, num_classes, tuple(int(w) for w in widths))
