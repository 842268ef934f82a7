"""Fitting the scorers and their thresholds, on known data only.

Kept apart from ``calibration`` (threshold arithmetic, which the scorers use) and from
the recognizer (which computes the outputs these are fitted on).
"""

from __future__ import annotations

import numpy as np

from .calibration import threshold_at_accept_rate
from .data.spec import InputSpec
from .errors import ConfigError
from .scorers import MAX_PCA_PIXELS, SCORERS, SIGNAL_NEEDS, ModelOutputs, Scorer, is_fusion, scorer_signals


def default_decision_scorer(has_autoencoder: bool) -> str:
    """The decision rule when none is asked for, declared before any unknown data was
    scored: the seed's ``combined`` (softmax OR reconstruction error) where an autoencoder
    is trained, else ``max_logit`` (Vaze et al., ICLR 2022: on a well-trained classifier
    the maximum logit beats most special-purpose open-set methods)."""
    return "combined" if has_autoencoder else "max_logit"


def model_signals(has_autoencoder: bool, spec: InputSpec | None) -> frozenset[str]:
    """The outputs a model can give its scorers: logits and features always, the
    reconstruction error with an autoencoder, the pixels of images small enough for
    ``class_reconstruction``'s per-class PCA bases."""
    out = {"logits", "features"}
    if has_autoencoder:
        out.add("recon_error")
    if spec is None or spec.pixels <= MAX_PCA_PIXELS:
        out.add("pixels")
    return frozenset(out)


def available_scorers(signals: frozenset[str]) -> list[str]:
    """The registered scorers that these signals allow (in registry order)."""
    return [name for name in SCORERS if scorer_signals(name) <= signals]


def check_scorer_available(name: str, signals: frozenset[str]) -> None:
    """One line naming what scorer ``name`` needs and the model lacks, and what it could use."""
    missing = scorer_signals(name) - signals
    if missing:
        need = "; ".join(SIGNAL_NEEDS.get(m, m) for m in sorted(missing))
        raise ConfigError(
            f"scorer {name!r} needs {need}; choose one of {', '.join(available_scorers(signals))}"
        )


def fit_scorers(
    names: list[str],
    reference: ModelOutputs,
    reference_labels: np.ndarray | None,
    known: ModelOutputs,
    accept_rate: float,
) -> tuple[dict[str, Scorer], dict[str, float]]:
    """Fit the registered scorers ``names`` and set their thresholds.

    Scorers with parameters (``fits_on_reference``) are fitted on ``reference`` (outputs of
    known TRAINING images, labelled by ``reference_labels`` or else the predictions); every
    threshold and each fusion's calibration come from ``known`` (known VALIDATION outputs)
    at ``accept_rate``. A fusion's threshold is 1, the OR rule by construction of its scale.
    """
    scorers: dict[str, Scorer] = {}
    scores: dict[str, np.ndarray] = {}
    thresholds: dict[str, float] = {}
    for name in names:
        cls = SCORERS[name]
        if is_fusion(name):
            continue
        if cls.fits_on_reference:
            scorers[name] = cls().fit(reference, accept_rate, labels=reference_labels)
        else:
            scorers[name] = cls().fit(known, accept_rate)
        scores[name] = scorers[name].score(known)
        thresholds[name] = threshold_at_accept_rate(scores[name], accept_rate)
    for name in names:
        cls = SCORERS[name]
        if is_fusion(name):
            members = [scorers[m] for m in cls.MEMBERS]
            scorers[name] = cls(members).fit(known, accept_rate, scores=scores)
            thresholds[name] = 1.0
    return {n: scorers[n] for n in names}, {n: thresholds[n] for n in names}
