"""A new linear head for a wrapped network whose own head is for other classes (an
ImageNet network's 1,000, say): ``replace_head`` puts an untrained one in its place and
``fit_linear_head`` fits it on known training features, as a linear probe does (Kornblith
et al., "Do Better ImageNet Models Transfer Better?", CVPR 2019: multinomial logistic
regression on the penultimate features).

scikit-learn's ``LogisticRegression`` does the fitting (L-BFGS, L2 penalty); the features
are standardised first and the scaling folded into the layer's weights, so the network
needs nothing beside the layer.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from osrkit.errors import ConfigError


def replace_head(module: nn.Module, name: str, num_classes: int) -> nn.Module:
    """A copy of ``module`` whose linear layer ``name`` (as in ``named_modules()``) is a new
    ``nn.Linear(in_features, num_classes)``; ``module`` itself is left as it was."""
    layers = dict(module.named_modules())
    if not name or name not in layers:
        found = ", ".join(n for n, m in layers.items() if isinstance(m, nn.Linear)) or "none"
        raise ConfigError(f"the classifier has no layer {name!r} to replace; its linear layers: {found}")
    if not isinstance(layers[name], nn.Linear):
        raise ConfigError(
            f"layer {name!r} is a {type(layers[name]).__name__}, not a linear layer (nn.Linear)"
        )
    out = copy.deepcopy(module)
    parent_name, _, attr = name.rpartition(".")
    parent = out.get_submodule(parent_name) if parent_name else out
    setattr(parent, attr, nn.Linear(layers[name].in_features, num_classes))
    return out


def fit_linear_head(
    layer: nn.Linear, features: torch.Tensor, labels: torch.Tensor, c: float = 1.0, seed: int = 0
) -> nn.Linear:
    """Fit ``layer`` (in place) as a multinomial logistic regression of ``labels`` on
    ``features`` ``(N, D)``, with inverse L2 strength ``c`` on standardised features."""
    x = features.detach().double().cpu().numpy()
    y = labels.detach().cpu().numpy()
    if x.shape[1] != layer.in_features:
        raise ConfigError(f"the head takes {layer.in_features} features, the network gives {x.shape[1]}")
    if not np.isfinite(x).all():
        raise ConfigError("the network's features hold NaN or infinite values; check its input spec")
    scaler = StandardScaler().fit(x)
    lr = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(x), y)
    coef, intercept = lr.coef_, lr.intercept_
    if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes: logits (-z/2, z/2)
        coef, intercept = np.vstack([-coef / 2, coef / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = coef / scaler.scale_
    bias = intercept - weight @ scaler.mean_
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(weight))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer
