"""Evaluate a fitted recognizer on known and unknown test images."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from osrkit.data.imageset import ImageSet
from osrkit.errors import ConfigError
from osrkit.evaluation.metrics import closed_set_accuracy, open_set_metrics
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.scorers import FusionScorer, ModelOutputs

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything measured on one known/unknown test pair, ready for plots and reports."""

    known: ImageSet
    unknown: ImageSet
    known_outputs: ModelOutputs
    unknown_outputs: ModelOutputs
    known_scores: dict[str, np.ndarray]
    unknown_scores: dict[str, np.ndarray]
    metrics: dict


def thresholds_summary(recognizer: OpenSetRecognizer) -> dict:
    """Each scorer's decision threshold, plus the member thresholds of every fusion
    (``<fusion>_members``, e.g. ``combined_members``)."""
    out: dict = dict(recognizer.thresholds_)
    for name, scorer in recognizer.scorers_.items():
        if isinstance(scorer, FusionScorer):
            out[f"{name}_members"] = scorer.member_thresholds()
    return out


@dataclass
class ScoredSet:
    """A test set in the model's input spec, its outputs and every scorer's scores."""

    data: ImageSet
    outputs: ModelOutputs
    scores: dict[str, np.ndarray]


def score_set(recognizer: OpenSetRecognizer, data: ImageSet, progress: bool = False) -> ScoredSet:
    """``data`` in the model's input spec (a grayscale model meets colour unknowns as
    luma), scored once by every scorer."""
    data = data.to_spec(recognizer.input_spec_)
    outputs = recognizer.outputs(data, progress=progress)
    return ScoredSet(data, outputs, recognizer.scores_from_outputs(outputs))


def evaluate(
    recognizer: OpenSetRecognizer,
    known: ImageSet,
    unknown: ImageSet,
    progress: bool = False,
    known_scored: ScoredSet | None = None,
) -> Evaluation:
    """Score both sets with every scorer and compute all metrics.

    ``known`` must use the recognizer's classes; ``unknown``'s labels are ignored.
    ``known_scored``: ``score_set(recognizer, known)`` when it was already computed (a
    protocol compares one known set with several unknown sets).
    """
    if known.class_names != recognizer.class_names_:
        raise ConfigError(
            f"known test classes {known.class_names} differ from the model's classes "
            f"{recognizer.class_names_}"
        )
    k = known_scored or score_set(recognizer, known, progress)
    u = score_set(recognizer, unknown, progress)
    known, unknown = k.data, u.data
    k_out, u_out, k_scores, u_scores = k.outputs, u.outputs, k.scores, u.scores
    labels = known.labels.numpy()
    k_pred, u_pred = k_out.predictions, u_out.predictions
    num_classes = len(recognizer.class_names_)
    metrics = {
        "closed_set_accuracy": closed_set_accuracy(labels, k_pred),
        "counts": {"known": len(known), "unknown": len(unknown)},
        "datasets": {"known": known.name, "unknown": unknown.name},
        "class_names": recognizer.class_names_,
        "accept_rate_target": recognizer.accept_rate_,
        "decision_scorer": recognizer.decision_scorer_,
        "thresholds": thresholds_summary(recognizer),
        "scorers": {
            name: open_set_metrics(
                k_scores[name],
                u_scores[name],
                labels,
                k_pred,
                u_pred,
                recognizer.thresholds_[name],
                num_classes,
            )
            for name in recognizer.scorers_
        },
    }
    health = getattr(recognizer, "health_", None)  # fit's checks (osrkit.recognizer.health)
    if health is not None:
        metrics["health"] = health.to_dict()
    log.debug("closed-set accuracy %.4f on %d known images", metrics["closed_set_accuracy"], len(known))
    return Evaluation(known, unknown, k_out, u_out, k_scores, u_scores, metrics)
