"""``vim``: Virtual-logit Matching."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers.base import ModelOutputs, Scorer, Signals, least_squares_head, logsumexp, register_scorer


def default_dim(width: int) -> int:
    """ViM's principal dimension for features of ``width`` (see ``ViMScorer``)."""
    return 1000 if width >= 2048 else 512 if width >= 768 else width // 2


@register_scorer
class ViMScorer(Scorer):
    """Virtual-logit Matching.

    Wang, Li, Feng and Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
    CVPR 2022. Features are taken relative to the origin ``u = -pinv(W) b`` of the class
    layer ``(W, b)``; the principal subspace of the known TRAINING features (the top
    ``dim`` eigenvectors of their uncentred covariance about u) explains what the
    classifier uses, and the norm of the residual outside it is the virtual logit,
    ``alpha * |P_res (f - u)|``, with ``alpha`` = mean max-logit / mean residual norm on
    the training features so that both are on the same scale. Score (larger = unknown):
    ``alpha * |P_res (f - u)| - logsumexp(logits)``, the negative of their ID score.

    ``dim`` (the principal subspace's width), unless given: the rule of the authors' code,
    fixed a priori: 1,000 for features of at least 2,048 dimensions (ResNet-50), 512 for
    at least 768 (ViT-B/16, and EfficientNet-Lite0's 1,280), else half the width (OpenOOD
    v1.5 keeps 256 of a CIFAR-10 ResNet-18's 512).
    """

    name = "vim"
    label = "ViM (virtual logit)"
    signals = frozenset({"logits", "features"})
    params = ("dim",)
    arrays = {"origin": (1, np.float64), "residual_basis": (2, np.float64)}
    fits_on_reference = True
    needs_head = True

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and int(dim) < 1:
            raise ConfigError(f"vim needs dim >= 1, got {dim}")
        self.dim = None if dim is None else int(dim)
        self.alpha_: float = 0.0
        self.principal_dim_: int = 0
        self.reference_size_: int = 0

    def fit(self, known: ModelOutputs, *, labels: np.ndarray | None = None, head: Any = None) -> ViMScorer:
        """Origin, residual subspace and alpha from known training outputs and the class
        layer ``head = (W, b)`` (default: fitted to the outputs by least squares)."""
        weight, bias = head if head is not None else least_squares_head(known)
        w = np.asarray(weight, dtype=np.float64)
        b = np.asarray(bias, dtype=np.float64)
        f = known.features.astype(np.float64)
        d = f.shape[1]
        dim = self.dim if self.dim is not None else default_dim(d)
        if not 1 <= dim < d:
            raise ConfigError(f"vim needs 1 <= dim < {d} (the feature width), got {dim}")
        if len(f) < 2:
            raise ConfigError("vim needs at least 2 known training outputs")
        origin = -np.linalg.pinv(w) @ b
        x = f - origin
        _, vectors = np.linalg.eigh(x.T @ x / len(x))  # ascending eigenvalues
        residual = np.ascontiguousarray(vectors[:, : d - dim])  # all but the top dim
        virtual = np.linalg.norm(x @ residual, axis=1)
        max_logit = known.logits.astype(np.float64).max(axis=1)
        self.origin_ = torch.from_numpy(origin)
        self.residual_basis_ = torch.from_numpy(residual)
        self.alpha_ = float(max_logit.mean() / max(virtual.mean(), 1e-12))
        self.principal_dim_ = int(dim)
        self.reference_size_ = len(f)
        return self

    def forward(self, signals: Signals) -> torch.Tensor:
        x = signals["features"].to(torch.float64) - self.origin_
        virtual = (x @ self.residual_basis_).norm(dim=1) * self.alpha_
        return virtual - logsumexp(signals["logits"].to(torch.float64))

    def fitted_state(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha_,
            "principal_dim": self.principal_dim_,
            "reference_size": self.reference_size_,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if self.residual_basis_.shape[0] != self.origin_.shape[0]:
            raise ModelFormatError(f"scorer {self.name!r}: residual basis does not match the origin")
        self.alpha_ = float(state["alpha"])
        self.principal_dim_ = int(state.get("principal_dim", 0))
        self.reference_size_ = int(state.get("reference_size", 0))
