"""Evaluate a fitted recognizer on known and unknown test images."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .data.imageset import ImageSet
from .errors import ConfigError
from .metrics import closed_set_accuracy, open_set_metrics
from .recognizer import OpenSetRecognizer
from .scorers import FusionScorer, ModelOutputs

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


def evaluate(
    recognizer: OpenSetRecognizer, known: ImageSet, unknown: ImageSet, progress: bool = False
) -> Evaluation:
    """Score both sets with every scorer and compute all metrics.

    ``known`` must use the recognizer's classes; ``unknown``'s labels are ignored.
    """
    if known.class_names != recognizer.class_names:
        raise ConfigError(
            f"known test classes {known.class_names} differ from the model's classes {recognizer.class_names}"
        )
    # Test sets in the model's input spec (a grayscale model meets colour unknowns as luma).
    spec = recognizer.input_spec_
    known, unknown = known.to_spec(spec), unknown.to_spec(spec)
    k_out = recognizer.outputs(known, progress=progress)
    u_out = recognizer.outputs(unknown, progress=progress)
    k_scores, u_scores = recognizer.scores_from_outputs(k_out), recognizer.scores_from_outputs(u_out)
    labels = known.labels.numpy()
    k_pred, u_pred = k_out.predictions, u_out.predictions
    num_classes = len(recognizer.class_names)
    metrics = {
        "closed_set_accuracy": closed_set_accuracy(labels, k_pred),
        "counts": {"known": len(known), "unknown": len(unknown)},
        "datasets": {"known": known.name, "unknown": unknown.name},
        "class_names": recognizer.class_names,
        "accept_rate_target": recognizer.accept_rate,
        "decision_scorer": recognizer.decision_scorer,
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
    log.info("closed-set accuracy %.4f on %d known images", metrics["closed_set_accuracy"], len(known))
    return Evaluation(known, unknown, k_out, u_out, k_scores, u_scores, metrics)
