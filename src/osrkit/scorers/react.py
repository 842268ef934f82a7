"""``react``: energy of the logits recomputed from clipped features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers.base import ModelOutputs, Scorer, Signals, least_squares_head, logsumexp, register_scorer


@register_scorer
class ReActScorer(Scorer):
    """Rectified activations, then the energy score.

    Sun, Guo and Li, "ReAct: Out-of-distribution Detection With Rectified Activations",
    NeurIPS 2021: penultimate activations are clipped at ``c``, the ``percentile``-th
    percentile of the known TRAINING activations (all units pooled), the class layer
    ``(W, b)`` recomputes the logits from the clipped features, and the score is their
    energy ``-logsumexp`` (larger = unknown). Unusually large activations, which unknown
    inputs trigger, stop inflating the logits.

    ``percentile = 90``: the paper's default, fixed a priori; c is set on known training
    features only.
    """

    name = "react"
    label = "ReAct (energy, clipped features)"
    signals = frozenset({"features"})
    params = ("percentile",)
    arrays = {"weight": (2, np.float64), "bias": (1, np.float64)}
    fits_on_reference = True
    needs_head = True

    def __init__(self, percentile: float = 90.0) -> None:
        super().__init__()
        self.percentile = float(percentile)
        if not 0.0 < self.percentile <= 100.0:
            raise ConfigError(f"react needs 0 < percentile <= 100, got {percentile}")
        self.clip_: float = 0.0
        self.reference_size_: int = 0

    def fit(self, known: ModelOutputs, *, labels: np.ndarray | None = None, head: Any = None) -> ReActScorer:
        """Clip value from known training features; the class layer ``head = (W, b)``
        (default: fitted to the outputs by least squares)."""
        weight, bias = head if head is not None else least_squares_head(known)
        f = known.features.astype(np.float64)
        if len(f) == 0:
            raise ConfigError("react needs known training outputs")
        self.weight_ = torch.as_tensor(np.asarray(weight, dtype=np.float64)).contiguous()
        self.bias_ = torch.as_tensor(np.asarray(bias, dtype=np.float64)).contiguous()
        if self.weight_.shape != (len(self.bias_), f.shape[1]):
            raise ConfigError(
                f"react: class layer {tuple(self.weight_.shape)} does not fit {f.shape[1]} features"
            )
        self.clip_ = float(np.percentile(f, self.percentile))
        self.reference_size_ = len(f)
        return self

    def forward(self, signals: Signals) -> torch.Tensor:
        f = torch.clamp(signals["features"].to(torch.float64), max=self.clip_)
        return -logsumexp(f @ self.weight_.T + self.bias_)

    def fitted_state(self) -> dict[str, Any]:
        return {"clip": self.clip_, "reference_size": self.reference_size_}

    def restore(self, state: Mapping[str, Any]) -> None:
        if self.weight_.shape[0] != self.bias_.shape[0]:
            raise ModelFormatError(f"scorer {self.name!r}: weight and bias do not match")
        self.clip_ = float(state["clip"])
        self.reference_size_ = int(state.get("reference_size", 0))
