"""Scorers on the classifier's logits: ``msp``, ``max_logit``, ``energy``."""

from __future__ import annotations

import torch

from osrkit.errors import ConfigError
from osrkit.scorers.base import Scorer, Signals, logsumexp, register_scorer


@register_scorer
class MSPScorer(Scorer):
    """1 - maximum softmax probability.

    Hendrycks and Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017.

    Computed as S / (1 + S) with S = sum over non-top classes of exp(z_k - z_max), in
    float64, so confident inputs keep distinct scores instead of rounding to 0.
    """

    name = "msp"
    label = "MSP (1 - max softmax)"
    log_scale = True

    def forward(self, signals: Signals) -> torch.Tensor:
        z = signals["logits"].to(torch.float64)
        top = z.argmax(dim=1, keepdim=True)
        e = torch.exp(z - z.amax(dim=1, keepdim=True))
        index = torch.arange(z.shape[1], device=z.device).unsqueeze(0)
        # the top class itself is dropped (no 1 + tiny - 1 cancellation)
        rest = torch.where(index == top, torch.zeros_like(e), e).sum(dim=1)
        return rest / (1.0 + rest)


@register_scorer
class MaxLogitScorer(Scorer):
    """Negative maximum logit (MLS).

    Vaze, Han, Vedaldi and Zisserman, "Open-Set Recognition: a Good Closed-Set Classifier
    is All You Need?", ICLR 2022. Unlike MSP it keeps the logits' magnitude, which the
    softmax normalises away. Can be negative, so fusions use a linear scale.
    """

    name = "max_logit"
    label = "max logit (negated)"

    def forward(self, signals: Signals) -> torch.Tensor:
        return -signals["logits"].to(torch.float64).amax(dim=1)


@register_scorer
class EnergyScorer(Scorer):
    """Free energy ``-T * logsumexp(logits / T)`` (larger = unknown), ``T = 1``.

    Liu, Wang, Owens and Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020
    (their score is the negative energy; this is the energy itself). ``T = 1`` is their
    choice for a post-hoc score, fixed a priori. Float64 with the max subtracted; linear
    fusion scale.
    """

    name = "energy"
    label = "energy"
    params = ("temperature",)

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = float(temperature)
        if not self.temperature > 0:
            raise ConfigError(f"energy needs temperature > 0, got {temperature}")

    def forward(self, signals: Signals) -> torch.Tensor:
        return -self.temperature * logsumexp(signals["logits"].to(torch.float64) / self.temperature)
