"""Open-set metrics. Scores: larger = more likely unknown; unknowns are the positives
for AUROC and AUPR-out, knowns the positives for AUPR-in and the TPR of FPR@95%TPR."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from osrkit.errors import ConfigError
from osrkit.scorers.calibration import rejects


def _arrays(known: np.ndarray, unknown: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    known, unknown = np.asarray(known, np.float64), np.asarray(unknown, np.float64)
    if known.size == 0 or unknown.size == 0:
        raise ConfigError("open-set metrics need at least one known and one unknown score")
    if not (np.isfinite(known).all() and np.isfinite(unknown).all()):
        raise ConfigError("scores contain NaN or infinity")
    return known, unknown


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve for telling unknowns (positive) from knowns."""
    known, unknown = _arrays(known, unknown)
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(roc_auc_score(y, np.r_[known, unknown]))


def aupr_in(known: np.ndarray, unknown: np.ndarray) -> float:
    """Average precision with knowns as the positive class (ranked by low score)."""
    known, unknown = _arrays(known, unknown)
    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    return float(average_precision_score(y, -np.r_[known, unknown]))


def aupr_out(known: np.ndarray, unknown: np.ndarray) -> float:
    """Average precision with unknowns as the positive class."""
    known, unknown = _arrays(known, unknown)
    y = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
    return float(average_precision_score(y, np.r_[known, unknown]))


def fpr_at_tpr(known: np.ndarray, unknown: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of unknowns accepted at the threshold that accepts ``tpr`` of the knowns."""
    known, unknown = _arrays(known, unknown)
    y = np.r_[np.ones(len(known)), np.zeros(len(unknown))]
    fprs, tprs, _ = roc_curve(y, -np.r_[known, unknown], drop_intermediate=False)
    return float(fprs[np.searchsorted(tprs, tpr - 1e-12, side="left")])


def oscr(known: np.ndarray, unknown: np.ndarray, correct: np.ndarray) -> float:
    """Open-Set Classification Rate: area under correct-classification rate vs FPR.

    Dhamija, Günther and Boult, "Reducing Network Agnostophobia", NeurIPS 2018. As the
    acceptance threshold sweeps, CCR is the fraction of all knowns that are accepted
    and correctly classified, FPR the fraction of unknowns accepted. Tied scores are
    accepted together (a straight segment). scikit-learn has no OSCR, hence this code.
    """
    known, unknown = _arrays(known, unknown)
    correct = np.asarray(correct, bool)
    if correct.shape != known.shape:
        raise ConfigError("oscr: `correct` must have one entry per known score")
    scores = np.r_[known, unknown]
    ccr_step = np.r_[correct / len(known), np.zeros(len(unknown))]
    fpr_step = np.r_[np.zeros(len(known)), np.full(len(unknown), 1.0 / len(unknown))]
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ccr = np.cumsum(ccr_step[order])
    fpr = np.cumsum(fpr_step[order])
    last = np.r_[s[1:] != s[:-1], True]  # keep the last point of each run of ties
    ccr = np.r_[0.0, ccr[last]]
    fpr = np.r_[0.0, fpr[last]]
    return float(np.trapezoid(ccr, fpr))


def open_set_predictions(
    preds: np.ndarray, scores: np.ndarray, threshold: float, unknown_label: int
) -> np.ndarray:
    """Class predictions with inputs scoring above ``threshold`` (or not finite,
    ``calibration.rejects``) set to ``unknown_label``."""
    return np.where(rejects(scores, threshold), unknown_label, np.asarray(preds))


def open_set_metrics(
    known_scores: np.ndarray,
    unknown_scores: np.ndarray,
    known_labels: np.ndarray,
    known_preds: np.ndarray,
    unknown_preds: np.ndarray,
    threshold: float,
    num_classes: int,
) -> dict:
    """All metrics for one scorer: threshold-free ones and those at ``threshold``.

    Labels ``0..num_classes-1`` are the known classes; ``num_classes`` stands for
    "unknown" in the macro-F1 over K+1 classes and in the confusion matrix.
    """
    known_scores, unknown_scores = _arrays(known_scores, unknown_scores)
    known_labels = np.asarray(known_labels)
    correct = np.asarray(known_preds) == known_labels
    unk = num_classes
    y_true = np.r_[known_labels, np.full(len(unknown_scores), unk)]
    y_pred = np.r_[
        open_set_predictions(known_preds, known_scores, threshold, unk),
        open_set_predictions(unknown_preds, unknown_scores, threshold, unk),
    ]
    labels = list(range(num_classes + 1))
    return {
        "auroc": auroc(known_scores, unknown_scores),
        "aupr_in": aupr_in(known_scores, unknown_scores),
        "aupr_out": aupr_out(known_scores, unknown_scores),
        "fpr_at_95_tpr": fpr_at_tpr(known_scores, unknown_scores, 0.95),
        "oscr": oscr(known_scores, unknown_scores, correct),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "known_accept_rate": float(np.mean(~rejects(known_scores, threshold))),
        "unknown_reject_rate": float(np.mean(rejects(unknown_scores, threshold))),
        "threshold": float(threshold),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def closed_set_accuracy(labels: np.ndarray, preds: np.ndarray) -> float:
    """Fraction of known inputs whose argmax class is right (no rejection)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        raise ConfigError("closed-set accuracy needs at least one known input")
    return float(np.mean(np.asarray(preds) == labels))
