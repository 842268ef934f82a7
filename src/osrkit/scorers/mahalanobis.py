"""``mahalanobis``: distance of the penultimate features to the nearest class mean."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from sklearn.covariance import LedoitWolf

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers.base import ModelOutputs, Scorer, Signals, labels_or_predictions, register_scorer


@register_scorer
class MahalanobisScorer(Scorer):
    """Smallest Mahalanobis distance of the penultimate features to a class mean.

    Lee, Lee, Lee and Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
    Samples and Adversarial Attacks", NeurIPS 2018: class-conditional Gaussians with one
    shared (tied) covariance, fitted on the known TRAINING features with their labels;
    score ``min_c sqrt((f - mu_c)^T P (f - mu_c))`` (the square root of their score, same
    ranking). Only the penultimate layer: no input preprocessing, no feature ensemble and
    no logistic-regression weighting of layers (those need tuning data).

    The tied covariance of the class-centred features is estimated with Ledoit-Wolf
    shrinkage (``sklearn.covariance.LedoitWolf``) rather than Lee et al.'s empirical
    covariance: ReLU features have dead or nearly constant units, which make the empirical
    covariance singular, and a pseudo-inverse would then silently ignore exactly the
    directions in which an unknown input may differ. The shrunk covariance is positive
    definite, so its inverse P is finite; the scorer stores ``L`` with ``P = L L^T``
    (Cholesky) and computes ``|(f - mu_c) L|`` in float64.
    """

    name = "mahalanobis"
    label = "Mahalanobis distance"
    signals = frozenset({"features"})
    arrays = {"means": (2, np.float64), "whitening": (2, np.float64)}
    log_scale = True
    fits_on_reference = True

    def __init__(self) -> None:
        super().__init__()
        self.classes_: list[int] = []
        self.shrinkage_: float = 0.0
        self.reference_size_: int = 0
        self.register_buffer("white_means_t", None, persistent=False)  # (D, C): (mu L)^T
        self.register_buffer("white_sq", None, persistent=False)  # (1, C): |mu L|^2

    def fit(
        self, known: ModelOutputs, *, labels: np.ndarray | None = None, head: Any = None
    ) -> MahalanobisScorer:
        """Class means and the tied precision of known training features; ``labels``
        default to the classifier's predictions."""
        y = labels_or_predictions(known, labels)
        f = known.features.astype(np.float64)
        classes = np.unique(y)
        if len(f) <= len(classes):
            raise ConfigError(f"mahalanobis needs more than {len(classes)} known training outputs")
        means = np.stack([f[y == c].mean(axis=0) for c in classes])
        centred = f - means[np.searchsorted(classes, y)]
        lw = LedoitWolf(assume_centered=True).fit(centred)
        try:
            precision = np.linalg.inv(lw.covariance_)
            whitening = np.linalg.cholesky((precision + precision.T) / 2.0)
        except np.linalg.LinAlgError:
            raise ConfigError("mahalanobis: the known training features have no variance") from None
        self.means_ = torch.from_numpy(means)
        self.whitening_ = torch.from_numpy(whitening)
        self.classes_ = [int(c) for c in classes]
        self.shrinkage_ = float(lw.shrinkage_)
        self.reference_size_ = len(f)
        self._prepare()
        return self

    def _prepare(self) -> None:
        m = self.means_ @ self.whitening_
        self.white_means_t = m.T.contiguous()
        self.white_sq = (m * m).sum(dim=1).unsqueeze(0)

    def forward(self, signals: Signals) -> torch.Tensor:
        w = signals["features"].to(torch.float64) @ self.whitening_
        d2 = (w * w).sum(dim=1, keepdim=True) - 2.0 * (w @ self.white_means_t) + self.white_sq
        return torch.sqrt(torch.clamp(d2.amin(dim=1), min=0.0))

    def fitted_state(self) -> dict[str, Any]:
        return {
            "classes": self.classes_,
            "covariance": "tied, Ledoit-Wolf shrinkage",
            "shrinkage": self.shrinkage_,
            "reference_size": self.reference_size_,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        d = self.means_.shape[1]
        if tuple(self.whitening_.shape) != (d, d):
            raise ModelFormatError(f"scorer {self.name!r}: whitening matrix does not match the means")
        self.classes_ = [int(c) for c in state["classes"]]
        self.shrinkage_ = float(state.get("shrinkage", 0.0))
        self.reference_size_ = int(state.get("reference_size", 0))
