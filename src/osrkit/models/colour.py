"""``colour_cnn``: the colour backbone for small photographs (CIFAR-10 sized, 32x32 RGB).

A VGG-style network in the family of the fast CIFAR-10 trainers (Page's ResNet-9 /
hlb-CIFAR10 and Jordan's airbench, 2024): a stem, then stages of [3x3 conv, 2x2 max pool,
BN, ReLU, 3x3 conv, BN, ReLU] that halve the resolution and widen the channels, global max
pooling to the penultimate features, a linear head. Pooling right after the first
convolution of a stage runs the BN, the activation and the second convolution at a
quarter of the pixels, which is what makes it cheap.

Two stems (the ``stem`` option):
- ``"patch"`` (the default): a 2x2 convolution of 8 filters per input channel at full
  resolution (airbench's stem, trained here rather than set to a whitening basis:
  whitening gained no accuracy, and a data-dependent initialisation would have to travel
  with the model).
- ``"space_to_depth"`` (the network of folders saved before the option existed): 2x2
  pixel blocks as 4C channels at half resolution, then a 3x3 convolution: cheaper to
  train, less accurate.

``flip_tta``: the features are the mean of those of the image and its mirror image, in
the network itself (so every scorer, the ONNX graph and the service see the same); the
recipe trains on mirrored images, so a mirror image is as good a view as the original.
It costs a second forward pass at inference. Turn it off for images whose mirror image
means something else (text, digits).
Stem, widths and flips were chosen by closed-set accuracy per CPU-minute on CIFAR-10
(10 classes; the figures are in BENCHMARKS.md). The defaults above are ``create_backbone``'s (the
registered options); ``ColourNet`` and ``colour_cnn`` called directly keep the earlier
network's, which is what a folder that records no stem holds. A model folder records the
stem, the widths and the flips.
"""

from __future__ import annotations

import torch
from torch import nn

from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.models.registry import Backbone, register_backbone

STEMS = ("patch", "space_to_depth")
DEFAULT_WIDTHS = {"patch": (32, 96, 192), "space_to_depth": (64, 128, 256)}


class ScaledLinear(nn.Linear):
    """A bias-free linear head whose logits are scaled by a constant (1/9 here, as in
    airbench), so that the large learning rate of the SGD recipe leaves them tame."""

    def __init__(self, in_features: int, out_features: int, scale: float) -> None:
        super().__init__(in_features, out_features, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * self.scale


class ColourNet(Backbone):
    """A stem (see the module docstring), then one stage per width (each halves the
    resolution), global max pool; feature width ``widths[-1]``."""

    def __init__(
        self,
        spec: InputSpec,
        num_classes: int,
        widths: tuple[int, ...] | list[int] | None = None,
        stem: str = "space_to_depth",
        flip_tta: bool = False,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ConfigError(f"colour_cnn stem must be one of {', '.join(STEMS)}, got {stem!r}")
        widths = tuple(int(w) for w in widths) if widths is not None else DEFAULT_WIDTHS[stem]
        if not widths:
            raise ConfigError("colour_cnn needs at least one width")
        # the space-to-depth stem halves the resolution; the 2x2 patch stem takes one pixel
        least = 2 ** (len(widths) + 1) if stem == "space_to_depth" else 2 ** len(widths) + 1
        if spec.height < least or spec.width < least:
            raise ConfigError(
                f"colour_cnn with {len(widths)} stages needs images of at least {least}x{least} pixels"
            )
        self.set_normalization(spec)
        self.flip_tta = bool(flip_tta)
        # recorded in the model folder, so that it builds this network whatever the defaults
        self.resolved_options = {"stem": stem, "widths": list(widths), "flip_tta": self.flip_tta}
        if stem == "patch":
            first = 8 * spec.channels
            layers: list[nn.Module] = [nn.Conv2d(spec.channels, first, 2, bias=False)]
        else:
            first = widths[0]
            layers = [nn.PixelUnshuffle(2), nn.Conv2d(4 * spec.channels, first, 3, padding=1, bias=False)]
        layers += [nn.BatchNorm2d(first), nn.ReLU(inplace=True)]
        cin = first
        for w in widths:
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
        x = self.normalized(x)
        if self.flip_tta and not self.training:
            return (self.body(x) + self.body(x.flip(3))) / 2
        return self.body(x)


@register_backbone(
    "colour_cnn",
    description="VGG-style colour CNN (patch stem, flip-averaged features); default for colour images",
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
    # what a new network gets; a folder saved before these options existed records none and means
    # the space-to-depth network without flips
    options={"stem": "patch", "flip_tta": True},
    unrecorded_options={"stem": "space_to_depth", "flip_tta": False},
)
def colour_cnn(
    spec: InputSpec,
    num_classes: int,
    widths: tuple[int, ...] | list[int] | None = None,
    stem: str = "space_to_depth",
    flip_tta: bool = False,
) -> ColourNet:
    """VGG-style colour CNN (``stem``: ``patch`` or ``space_to_depth``)."""
    return ColourNet(spec, num_classes, widths, stem, flip_tta)
