"""Your own trained classifier as a backbone: logits from it, features from a named layer
(a forward hook) or a callable. Nothing is trained; ``OpenSetRecognizer.from_classifier``
uses this."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.models.registry import Backbone

FeatureFn = Callable[[torch.Tensor], torch.Tensor]


class ExternalClassifier(Backbone):
    """Wraps a trained classifier ``net`` (``net(x)`` -> logits ``(N, K)``).

    features: the name of a submodule of ``net`` (as in ``net.named_modules()``) whose
        output is the penultimate representation, caught by a forward hook in the same
        pass; 4-D outputs ``(N, C, H, W)`` are averaged over H and W. Or a callable
        ``features(x) -> (N, D)`` on the normalised input (a second pass, unless it
        shares work with ``net`` itself).
    The spec's normalisation is applied before ``net``.
    """

    splittable = False

    def __init__(self, net: nn.Module, spec: InputSpec, features: str | FeatureFn) -> None:
        super().__init__()
        if not isinstance(net, nn.Module):
            raise ConfigError(f"the classifier must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.set_normalization(spec)
        self.feature_fn: FeatureFn | None = None
        self.feature_layer: str | None = None
        if isinstance(features, str):
            modules = dict(net.named_modules())
            if features not in modules or not features:
                names = [n for n in modules if n][:12]
                raise ConfigError(
                    f"the classifier has no layer {features!r}; its layers include {', '.join(names)}"
                )
            self.feature_layer = features
        elif callable(features):
            self.feature_fn = features
        else:
            raise ConfigError("features must be a layer name or a callable x -> (N, D) features")
        self.feature_dim = 0  # set by probe()

    def forward_with_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.normalized(x)
        if self.feature_fn is not None:
            logits, features = self.net(x), self.feature_fn(x)
        else:
            # The hook lives for this one pass only: the user's network is left as it was.
            caught: list[torch.Tensor] = []
            layer = self.net.get_submodule(self.feature_layer)
            handle = layer.register_forward_hook(lambda module, args, output: caught.append(output))
            try:
                logits = self.net(x)
            finally:
                handle.remove()
            if not caught:
                raise ConfigError(
                    f"layer {self.feature_layer!r} did not run in the classifier's forward pass"
                )
            features = caught[-1]
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ConfigError("the classifier must return logits of shape (N, num_classes)")
        if features.ndim == 4:
            features = features.mean(dim=(2, 3))
        return logits, features.flatten(1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_features(x)[0]

    @torch.no_grad()
    def probe(self, spec: InputSpec, num_classes: int) -> ExternalClassifier:
        """Run two blank images through the network: check the logits' width and learn
        the feature width, with one clear line when either is wrong."""
        was_training = self.training
        self.eval()
        try:
            device = next((p.device for p in self.parameters()), torch.device("cpu"))
            logits, features = self.forward_with_features(torch.zeros(2, *spec.shape, device=device))
        except ConfigError:
            raise
        except Exception as exc:  # the user's network may raise anything on a wrong input
            raise ConfigError(
                f"the classifier failed on a {spec.describe()} input ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); check the input spec"
            ) from None
        finally:
            self.train(was_training)
        if logits.shape[1] != num_classes:
            raise ConfigError(
                f"the classifier gives {logits.shape[1]} logits but {num_classes} class names were given"
            )
        self.feature_dim = int(features.shape[1])
        return self


def wrap_classifier(
    net: nn.Module, spec: InputSpec, num_classes: int, features: str | FeatureFn
) -> ExternalClassifier:
    """``net`` as a backbone, checked on a blank input (see ``ExternalClassifier``)."""
    return ExternalClassifier(net, spec, features).probe(spec, num_classes)
