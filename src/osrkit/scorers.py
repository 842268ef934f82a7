"""Unknown-input scorers: larger score = more likely unknown.

Each scorer is a small class with ``fit(known)`` (on outputs of known validation
inputs) and ``score(outputs)``. They work on ``ModelOutputs`` computed once per
input batch, so several scorers never repeat a forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .calibration import joint_thresholds
from .errors import ConfigError, ModelFormatError


@dataclass
class ModelOutputs:
    """What the networks say about a batch: logits ``(N, K)``, penultimate features
    ``(N, D)`` and per-image reconstruction error ``(N,)``."""

    logits: np.ndarray
    features: np.ndarray
    recon_error: np.ndarray

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def predictions(self) -> np.ndarray:
        """Closed-set class predictions (argmax of the logits)."""
        return self.logits.argmax(1)

    def subset(self, index: np.ndarray) -> ModelOutputs:
        return ModelOutputs(self.logits[index], self.features[index], self.recon_error[index])

    @staticmethod
    def concat(parts: list[ModelOutputs]) -> ModelOutputs:
        return ModelOutputs(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in ("logits", "features", "recon_error"))
        )


class Scorer:
    """Base class. Subclasses set ``name`` and implement ``score``."""

    name: ClassVar[str] = ""

    def fit(self, known: ModelOutputs, accept_rate: float = 0.95) -> Scorer:
        """Fit on outputs of known inputs; returns self. Stateless scorers need nothing."""
        return self

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        raise NotImplementedError

    def get_state(self) -> dict[str, Any]:
        """Fitted state as JSON-serialisable values."""
        return {}

    def set_state(self, state: dict[str, Any]) -> Scorer:
        return self


class MSPScorer(Scorer):
    """1 - maximum softmax probability.

    Hendrycks and Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
    Examples in Neural Networks", ICLR 2017.

    Computed as S / (1 + S) with S = sum over non-top classes of exp(z_k - z_max), in
    float64, so confident inputs keep distinct scores instead of rounding to 0.
    """

    name = "msp"

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        z = outputs.logits.astype(np.float64)
        top = z.argmax(axis=1)
        e = np.exp(z - z[np.arange(len(z)), top][:, None])
        e[np.arange(len(z)), top] = 0.0  # drop the top class itself (no 1 + tiny - 1 cancellation)
        rest = e.sum(axis=1)
        return rest / (1.0 + rest)


class ReconstructionScorer(Scorer):
    """Per-image mean squared reconstruction error of an autoencoder trained on knowns.

    Japkowicz, Myers and Gluck, "A Novelty Detection Approach to Classification", IJCAI
    1995; used for open-set recognition by e.g. Yoshihashi et al., CROSR, CVPR 2019.
    """

    name = "reconstruction"

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return outputs.recon_error.astype(np.float64)


class CombinedScorer(Scorer):
    """OR of several scorers, each thresholded on known validation data.

    An input is unknown when any member score exceeds its own threshold (for the seed,
    softmax confidence below its threshold OR reconstruction error above its threshold).
    The thresholds share the rejection budget equally (``joint_thresholds``).

    The continuous score is the largest member score after normalising each on a log
    scale by its known validation distribution: 0 at the known median, 1 at the member's
    threshold. So ``score > 1`` is exactly the OR rule, and AUROC is defined. A log scale
    is used because both members are positive, scale-like quantities spanning orders of
    magnitude. Fusion of calibrated detectors in the spirit of Bodesheim et al. and of
    conformal p-value combination (Vovk et al., "Algorithmic Learning in a Random World").
    """

    name = "combined"
    FLOOR: ClassVar[float] = 1e-300  # log() floor for exact zeros

    def __init__(self, members: list[Scorer] | None = None) -> None:
        self.members = members if members is not None else [MSPScorer(), ReconstructionScorer()]
        self.thresholds_: np.ndarray | None = None
        self.medians_: np.ndarray | None = None

    def _member_scores(self, outputs: ModelOutputs) -> np.ndarray:
        return np.stack([m.score(outputs) for m in self.members], axis=1)

    def fit(self, known: ModelOutputs, accept_rate: float = 0.95) -> CombinedScorer:
        scores = self._member_scores(known)
        self.thresholds_ = joint_thresholds(scores, accept_rate)
        self.medians_ = np.median(scores, axis=0)
        return self

    def member_thresholds(self) -> dict[str, float]:
        self._check_fitted()
        return {m.name: float(t) for m, t in zip(self.members, self.thresholds_)}

    def _check_fitted(self) -> None:
        if self.thresholds_ is None or self.medians_ is None:
            raise ConfigError("CombinedScorer is not fitted: call fit(known_outputs) first")

    def normalised(self, outputs: ModelOutputs) -> np.ndarray:
        """Member scores ``(N, m)`` on the common scale (0 = known median, 1 = threshold).

        ``1 + (log s - log t) / |log t - log m|``: above 1 exactly when ``s > t``, whatever
        the accept rate (even when a threshold lies below its median).
        """
        self._check_fitted()
        log_s = np.log(np.maximum(self._member_scores(outputs), self.FLOOR))
        log_m = np.log(np.maximum(self.medians_, self.FLOOR))
        log_t = np.log(np.maximum(self.thresholds_, self.FLOOR))
        span = np.maximum(np.abs(log_t - log_m), 1e-12)
        return 1.0 + (log_s - log_t) / span

    def score(self, outputs: ModelOutputs) -> np.ndarray:
        return self.normalised(outputs).max(axis=1)

    def get_state(self) -> dict[str, Any]:
        self._check_fitted()
        return {
            "members": [m.name for m in self.members],
            "member_thresholds": [float(t) for t in self.thresholds_],
            "medians": [float(m) for m in self.medians_],
        }

    def set_state(self, state: dict[str, Any]) -> CombinedScorer:
        self.members = [make_scorer(name) for name in state["members"]]
        self.thresholds_ = np.asarray(state["member_thresholds"], dtype=np.float64)
        self.medians_ = np.asarray(state["medians"], dtype=np.float64)
        return self


SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls for cls in (MSPScorer, ReconstructionScorer, CombinedScorer)
}


def make_scorer(name: str) -> Scorer:
    """A new, unfitted scorer by name (``msp``, ``reconstruction``, ``combined``)."""
    try:
        return SCORERS[name]()
    except KeyError:
        raise ModelFormatError(f"unknown scorer {name!r}; known scorers: {', '.join(SCORERS)}") from None
