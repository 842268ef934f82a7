"""Fusions: OR rules of calibrated member scorers (``score > 1`` = unknown).

Pre-declared, none chosen by looking at unknown data: ``combined`` (msp +
reconstruction, the digits baseline's decision rule), ``fusion`` (the seven base scorers of osrkit
0.1), ``fusion_recon`` (mahalanobis + reconstruction + class_reconstruction) and
``max_logit_knn`` (the pretrained backbones' decision). Any
other set of members: ``create_scorer("fusion", members=[...])``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers.base import ModelOutputs, Scorer, create_scorer, register_scorer, scorer_class
from osrkit.scorers.calibration import joint_thresholds


@register_scorer
class FusionScorer(Scorer):
    """OR of several calibrated scorers, with a continuous score.

    An input is unknown when any member score exceeds its own threshold. The thresholds
    share the rejection budget equally (``joint_thresholds``): every member is cut at the
    same quantile of its known validation distribution, the one at which the OR accepts
    ``accept_rate`` of the known validation inputs.

    The continuous score is the largest member score after normalising each by its known
    validation distribution: 0 at the known median m, 1 at the member's threshold t:
    ``1 + (s - t) / |t - m|``, on a log scale (``log s``, ``log t``, ``log m``) for
    positive, scale-like members (``Scorer.log_scale``) and on a linear scale otherwise
    (max_logit, energy, which can be negative). So ``score > 1`` is exactly the OR rule,
    at any accept rate, and AUROC is defined. Fusion of calibrated detectors in the spirit
    of Bodesheim et al. and of conformal p-value combination (Vovk et al., "Algorithmic
    Learning in a Random World").

    Members are the recognizer's scorers of the same names (``bind``): fit those with
    parameters on training outputs first, then ``fit`` the fusion on known validation
    outputs. ``forward`` takes the members' scores ``(N, m)``, so a graph or a runtime
    that already computed them computes each member once.
    """

    name = "fusion"
    label = "fusion of the 7 base scorers (OR rule)"
    signals = frozenset()
    params = ("members",)
    DEFAULT_MEMBERS: ClassVar[tuple[str, ...]] = (
        "msp",
        "max_logit",
        "energy",
        "mahalanobis",
        "knn",
        "reconstruction",
        "class_reconstruction",
    )
    FLOOR: ClassVar[float] = 1e-300  # log() floor for exact zeros
    SPAN_FLOOR: ClassVar[float] = 1e-12

    def __init__(self, members: list[str] | tuple[str, ...] | None = None) -> None:
        super().__init__()
        names = list(members) if members is not None else list(self.DEFAULT_MEMBERS)
        if not names:
            raise ConfigError(f"fusion {self.name!r} needs at least one member scorer")
        member_scorers = []
        for n in names:
            scorer = create_scorer(n)
            if isinstance(scorer, FusionScorer):
                raise ConfigError(f"fusion {self.name!r}: member {n!r} is itself a fusion")
            member_scorers.append(scorer)
        self.members = names
        self.member_scorers: list[Scorer] = member_scorers  # a plain list: not submodules
        self.register_buffer("thresholds_", None)
        self.register_buffer("medians_", None)
        self.register_buffer("logs", None, persistent=False)
        self.register_buffer("t", None, persistent=False)
        self.register_buffer("span", None, persistent=False)

    # ------------------------------------------------------------- members
    def needs(self) -> frozenset[str]:
        return frozenset().union(*(m.needs() for m in self.member_scorers))

    def bind(self, scorers: Mapping[str, Scorer]) -> FusionScorer:
        """Use the fitted scorers in ``scorers`` (by name) as members; members with
        parameters must be among them. Returns self."""
        bound = []
        for name, member in zip(self.members, self.member_scorers):
            if name in scorers:
                bound.append(scorers[name])
            elif member.fits_on_reference:
                raise ConfigError(f"fusion {self.name!r} needs the fitted scorer {name!r}")
            else:
                bound.append(member)
        self.member_scorers = bound
        return self

    def member_scores(
        self, outputs: ModelOutputs | None, scores: Mapping[str, np.ndarray] | None
    ) -> np.ndarray:
        """``(N, m)`` member scores, taken from ``scores`` (by member name) where given."""
        cols = []
        for name, member in zip(self.members, self.member_scorers):
            if scores is not None and name in scores:
                cols.append(np.asarray(scores[name], dtype=np.float64))
            else:
                if not member.is_fitted():
                    raise ConfigError(f"fusion {self.name!r}: its member {name!r} is not fitted")
                if outputs is None:
                    raise ConfigError(f"fusion {self.name!r}: no score for its member {name!r}")
                cols.append(member.score(outputs))
        return np.stack(cols, axis=1)

    # ------------------------------------------------------------- fitting
    def is_fitted(self) -> bool:
        return self.thresholds_ is not None and self.medians_ is not None

    def fit(
        self,
        known: ModelOutputs | None,
        *,
        labels: np.ndarray | None = None,
        head: Any = None,
        accept_rate: float = 0.95,
        scores: Mapping[str, np.ndarray] | None = None,
    ) -> FusionScorer:
        """Calibrate on known VALIDATION outputs (``scores``: member scores already
        computed on them, by name)."""
        s = self.member_scores(known, scores)
        self.thresholds_ = torch.from_numpy(joint_thresholds(s, accept_rate))
        self.medians_ = torch.from_numpy(np.median(s, axis=0))
        self._prepare()
        return self

    def _prepare(self) -> None:
        logs = torch.tensor([m.log_scale for m in self.member_scorers], dtype=torch.bool)
        floor = torch.tensor(self.FLOOR, dtype=torch.float64)
        t = torch.where(logs, torch.log(torch.maximum(self.thresholds_, floor)), self.thresholds_)
        m = torch.where(logs, torch.log(torch.maximum(self.medians_, floor)), self.medians_)
        self.logs = logs.unsqueeze(0)
        self.t = t
        self.span = torch.clamp((t - m).abs(), min=self.SPAN_FLOOR)

    def member_thresholds(self) -> dict[str, float]:
        self.check_fitted()
        return {name: float(t) for name, t in zip(self.members, self.thresholds_)}

    # ------------------------------------------------------------- scoring
    def forward(self, member_scores: torch.Tensor) -> torch.Tensor:
        """Normalised member scores' maximum; ``member_scores`` ``(N, m)``. A member score
        that is not finite makes the fused score +inf: unknown, as that member alone would
        decide (``calibration.rejects``), where the maximum would pass over a -inf."""
        normalised = self.normalise(member_scores)
        inf = torch.full_like(normalised, float("inf"))
        return torch.where(torch.isfinite(normalised), normalised, inf).amax(dim=1)

    def normalise(self, member_scores: torch.Tensor) -> torch.Tensor:
        """Member scores ``(N, m)`` on the common scale (0 = known median, 1 = threshold):
        ``1 + (s - t) / |t - m|`` (of logs for log-scale members), above 1 exactly when
        ``s > t``, whatever the accept rate."""
        s = member_scores.to(torch.float64)
        log_s = torch.log(torch.clamp(s, min=self.FLOOR))
        return 1.0 + (torch.where(self.logs, log_s, s) - self.t) / self.span

    @torch.inference_mode()
    def normalised(
        self, outputs: ModelOutputs | None, scores: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Normalised member scores ``(N, m)`` of ``outputs`` (or of given member ``scores``)."""
        self.check_fitted()
        return self.normalise(torch.from_numpy(self.member_scores(outputs, scores))).numpy()

    @torch.inference_mode()
    def score(
        self, outputs: ModelOutputs | None, scores: Mapping[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Fused score; ``scores`` may hold member scores already computed on ``outputs``."""
        self.check_fitted()
        return self(torch.from_numpy(self.member_scores(outputs, scores))).numpy()

    # ------------------------------------------------------------- state
    def get_params(self) -> dict[str, Any]:
        return {"members": list(self.members)}

    def get_state(self) -> dict[str, Any]:
        self.check_fitted()
        return self.get_params() | {
            "member_thresholds": [float(t) for t in self.thresholds_],
            "medians": [float(m) for m in self.medians_],
        }

    def get_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def set_state(
        self, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
    ) -> FusionScorer:
        """Restore thresholds and medians; members with parameters stay unfitted until
        ``bind`` replaces them with the recognizer's fitted ones."""
        thresholds = np.asarray(state["member_thresholds"], dtype=np.float64)
        medians = np.asarray(state["medians"], dtype=np.float64)
        if thresholds.shape != (len(self.members),) or medians.shape != thresholds.shape:
            raise ModelFormatError(f"fusion {self.name!r}: one threshold and median per member needed")
        self.thresholds_, self.medians_ = torch.from_numpy(thresholds), torch.from_numpy(medians)
        self._prepare()
        return self


@register_scorer
class CombinedScorer(FusionScorer):
    """The digits baseline's decision rule: MSP OR reconstruction error (both on a log scale).

    An input is unknown when its softmax confidence is below its threshold or its
    reconstruction error above its threshold (see ``FusionScorer``).
    """

    name = "combined"
    label = "combined: MSP + reconstruction (OR rule)"
    DEFAULT_MEMBERS = ("msp", "reconstruction")


@register_scorer
class ReconFusionScorer(FusionScorer):
    """Mahalanobis OR reconstruction OR class-conditional reconstruction: one detector on
    the classifier's features plus the two pixel-reconstruction detectors (pre-declared;
    see ``FusionScorer``)."""

    name = "fusion_recon"
    label = "fusion: Mahalanobis + reconstructions (OR rule)"
    DEFAULT_MEMBERS = ("mahalanobis", "reconstruction", "class_reconstruction")


@register_scorer
class LogitKnnFusionScorer(FusionScorer):
    """Max logit OR kNN distance: the default decision of the ImageNet-pretrained
    backbones and of ``colour_cnn`` trained from scratch, declared for each before it was
    measured on any unknown set (for ``colour_cnn`` in issue "From scratch at the state of
    the art per FLOP", before its far-unknown protocol ran with the new network).

    The max logit (Vaze et al., "Open-Set Recognition: a Good Closed-Set Classifier is All
    You Need?", ICLR 2022) is strong on unknowns close to the known classes, but a ReLU
    network's logits grow far from the data (Hein et al., "Why ReLU networks yield high-
    confidence predictions far away from the training data", CVPR 2019). The distance to
    the k-th nearest normalised training feature (Sun et al., "Out-of-Distribution
    Detection with Deep Nearest Neighbors", ICML 2022) holds there, and pretrained
    features make it strong. Noise and other inputs far from every photograph are where a
    from-scratch network's logits are least to be trusted, and where a distance in feature
    space is most reliable: the OR rule lets either member reject. Each is calibrated on
    known images (see ``FusionScorer``)."""

    name = "max_logit_knn"
    label = "fusion: max logit + kNN (OR rule)"
    DEFAULT_MEMBERS = ("max_logit", "knn")


def is_fusion(name: str) -> bool:
    """Whether the registered scorer ``name`` is a fusion of other scorers."""
    return issubclass(scorer_class(name), FusionScorer)
