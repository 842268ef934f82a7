"""Which scorers a model fits, and fitting them and their thresholds on known data only.

Kept apart from ``calibration`` (threshold arithmetic) and from the recognizer (which
computes the outputs these are fitted on).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError
from osrkit.registry import in_declared_order
from osrkit.scorers import (
    MAX_PCA_PIXELS,
    SIGNAL_NEEDS,
    FusionScorer,
    ModelOutputs,
    Scorer,
    create_scorer,
    head_residual,
    least_squares_head,
    list_scorers,
    scorer_class,
    scorer_signals,
)
from osrkit.scorers.calibration import threshold_at_accept_rate

log = logging.getLogger(__name__)

# Fitted besides the decision scorer (and its members) when no scorers are asked for:
# the three logit scores (free to compute) and kNN (Sun et al., ICML 2022; with ViM at
# the top of the post-hoc methods on CIFAR-10 in OpenOOD v1.5). Declared before any
# unknown set was scored; ``scorers="all"`` fits every scorer the model can compute.
DEFAULT_SCORERS = ("msp", "max_logit", "energy", "knn")

# The order of scorers in reports, metric tables, saved models, exported graphs and the
# CLI's help: osrkit 0.1's (the base scorers, then the fusions), declared here rather than
# left to import order. Scorers registered elsewhere follow, sorted.
REPORT_ORDER = (
    "msp",
    "max_logit",
    "energy",
    "mahalanobis",
    "knn",
    "vim",
    "react",
    "reconstruction",
    "class_reconstruction",
    "combined",
    "fusion",
    "fusion_recon",
    "max_logit_knn",
)

ScorerChoice = str | Sequence[str | Scorer] | None


def report_order(names: Iterable[str] | None = None) -> list[str]:
    """``names`` (default: every registered scorer) in ``REPORT_ORDER``, any others after
    them, sorted."""
    return in_declared_order(list_scorers() if names is None else names, REPORT_ORDER)


def default_decision_scorer(signals: frozenset[str]) -> str:
    """The decision rule when none is asked for, by what the model can compute (its
    ``signals``); a rule, not a choice made on any unknown set.

    - A model with an autoencoder (by default only the digit network, on small grayscale
      images, where an autoencoder is trained because a digit's pixels are what its class
      explains): ``fusion``, the OR of the seven base scorers, each calibrated on known
      images. Pre-declared for the MNIST protocols before they first ran; it selects
      nothing. Where ``class_reconstruction`` cannot be fitted (over 4,096 pixel values),
      the digits baseline's ``combined``.
    - Without one (wrapped networks, and any backbone that declares none): ``max_logit``.
      Vaze et al. (ICLR 2022) show that on a well-trained classifier it beats most special-purpose open-set
      methods, and natural images of unseen classes reconstruct about as well as known
      ones, so no reconstruction member is on offer. osrkit's colour backbones declare
      their own (``register_backbone(decision_scorer=...)``): ``max_logit_knn``.

    Checked afterwards, never used to choose: ``benchmarks/decision_table.py`` puts every
    scorer beside the default on digits and photographs (BENCHMARKS.md).
    """
    if "recon_error" not in signals:
        return "max_logit"
    return "fusion" if scorer_signals("fusion") <= signals else "combined"


def model_signals(has_autoencoder: bool, spec: InputSpec | None) -> frozenset[str]:
    """The signals a model can give its scorers: logits and features always, the
    reconstruction error with an autoencoder, the pixels of images small enough for
    ``class_reconstruction``'s per-class PCA bases."""
    out = {"logits", "features"}
    if has_autoencoder:
        out.add("recon_error")
    if spec is None or spec.pixels <= MAX_PCA_PIXELS:
        out.add("pixels")
    return frozenset(out)


def available_scorers(signals: frozenset[str]) -> list[str]:
    """The registered scorers that these signals allow, in report order."""
    return [name for name in report_order() if scorer_signals(name) <= signals]


def _check_available(scorer: Scorer, signals: frozenset[str]) -> None:
    missing = scorer.needs() - signals
    if missing:
        if "pixels" in missing:
            need = f"images of at most {MAX_PCA_PIXELS} pixel values (its PCA bases grow with them)"
        else:
            need = "; ".join(SIGNAL_NEEDS.get(m, m) for m in sorted(missing))
        raise ConfigError(
            f"scorer {scorer.name!r} needs {need}; choose from {', '.join(available_scorers(signals))}"
        )


def check_scorer_available(name: str, signals: frozenset[str]) -> None:
    """One line naming what scorer ``name`` needs and the model lacks, and what it could use."""
    _check_available(create_scorer(name), signals)


def parse_scorer_names(text: str) -> list[str] | str:
    """``--scorers`` text: ``all`` or comma-separated registered names, checked (one line)."""
    text = text.strip()
    if text == "all":
        return "all"
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--scorers needs registered scorer names separated by commas, or 'all'")
    for name in names:
        scorer_class(name)
    return names


def check_scorer_choice(scorers: ScorerChoice) -> ScorerChoice:
    """The ``scorers`` setting checked before any data is read: None (the default set),
    ``"all"``, or registered names / unfitted ``Scorer`` instances."""
    if scorers is None or scorers == "all":
        return scorers
    if isinstance(scorers, str):
        return parse_scorer_names(scorers)
    out: list[str | Scorer] = []
    for s in scorers:
        if isinstance(s, Scorer):
            scorer_class(s.name)
        elif isinstance(s, str):
            scorer_class(s)
        else:
            raise ConfigError(f"scorers are registered names or Scorer instances, got {s!r}")
        out.append(s)
    return out


def choose_scorers(choice: ScorerChoice, decision: str, signals: frozenset[str]) -> list[Scorer]:
    """Fresh, unfitted scorers for ``choice`` (see ``check_scorer_choice``) plus the
    decision scorer and every fusion's members, in report order (``report_order``).

    ``"all"``: every scorer these ``signals`` allow. The default: ``DEFAULT_SCORERS``
    that the model can compute. Asking for one the model cannot compute is one line.
    """
    if choice == "all":
        wanted: list[Scorer] = [create_scorer(n) for n in available_scorers(signals)]
    elif choice is None:
        wanted = [create_scorer(n) for n in DEFAULT_SCORERS if scorer_signals(n) <= signals]
    else:
        wanted = [
            create_scorer(s.name, **s.get_params()) if isinstance(s, Scorer) else create_scorer(s)
            for s in check_scorer_choice(choice)
        ]
    chosen: dict[str, Scorer] = {}
    for scorer in wanted:
        if scorer.name in chosen:
            raise ConfigError(f"scorer {scorer.name!r} was asked for twice")
        chosen[scorer.name] = scorer
    if decision not in chosen:
        chosen[decision] = create_scorer(decision)
    for scorer in list(chosen.values()):
        if isinstance(scorer, FusionScorer):
            for member in scorer.members:
                chosen.setdefault(member, create_scorer(member))
    for scorer in chosen.values():
        _check_available(scorer, signals)
    return [chosen[name] for name in report_order(chosen)]


def class_layer(head: Any, reference: ModelOutputs) -> tuple:
    """The class layer ``(W, b)`` for ViM and ReAct: the network's own (``head``) when it
    reproduces the reference logits, else the least-squares fit to them."""
    if head is not None and head_residual(reference, head) <= 1e-3:
        return head
    if head is not None:
        log.warning("the classifier's head does not reproduce its logits; fitting one by least squares")
    return least_squares_head(reference)


def fit_scorers(
    scorers: list[Scorer],
    reference: ModelOutputs,
    reference_labels: np.ndarray | None,
    known: ModelOutputs,
    accept_rate: float,
    head: Any = None,
) -> tuple[dict[str, Scorer], dict[str, float]]:
    """Fit ``scorers`` (from ``choose_scorers``) and set their thresholds.

    Scorers with parameters (``fits_on_reference``) are fitted on ``reference`` (outputs of
    known TRAINING images, labelled by ``reference_labels`` or else the predictions; those
    that need the class layer get ``head = (W, b)``); every threshold and each fusion's
    calibration come from ``known`` (known VALIDATION outputs) at ``accept_rate``. A
    fusion's threshold is 1, the OR rule by construction of its scale.
    """
    fitted: dict[str, Scorer] = {}
    scores: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    if any(s.needs_head for s in scorers):
        head = class_layer(head, reference)
    for scorer in scorers:
        if isinstance(scorer, FusionScorer):
            continue
        if scorer.fits_on_reference:
            scorer.fit(reference, labels=reference_labels, head=head if scorer.needs_head else None)
        else:
            scorer.fit(known)
        fitted[scorer.name] = scorer
        scores[scorer.name] = scorer.score(known)
        thresholds[scorer.name] = threshold_at_accept_rate(scores[scorer.name], accept_rate)
    for scorer in scorers:
        if isinstance(scorer, FusionScorer):
            scorer.bind(fitted).fit(known, accept_rate=accept_rate, scores=scores)
            fitted[scorer.name] = scorer
            thresholds[scorer.name] = 1.0
    names = [s.name for s in scorers]
    return {n: fitted[n] for n in names}, {n: thresholds[n] for n in names}
