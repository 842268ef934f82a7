"""Model health: after ``fit``, checks that need no unknown images say plainly when a model
learned little or nothing, and what to try.

Each check reads what training leaves behind (the classifier's predictions on the known
validation split, the validation curve, the number of optimizer steps) and returns a
``Finding`` when it fails, or None. The rules:

- ``accuracy``: closed-set accuracy on the validation split against chance, the larger
  of 1/K and the share of the most common class (what always answering that class
  gets). It fails when the accuracy closes less than ``MIN_SKILL`` (a quarter) of the gap
  from chance to 1, i.e. ``(accuracy - chance) / (1 - chance) < MIN_SKILL``, or when a
  one-sided binomial test cannot tell it from chance at ``ALPHA`` (too few validation
  images to say).
- ``validation_curve``: the validation error (the classifier's error rate per epoch)
  never falls ``MIN_DROP`` (one percentage point) below the first epoch's, flat or
  rising, while that first epoch was not already good (its error over half the chance
  error). A network that learns well in its first epoch and then holds is healthy.
- ``optimizer_steps``: the classifier took fewer than ``MIN_STEPS`` optimizer steps (the
  recipe's own minimum, ``osrkit.training.recipe``; e.g. few images and ``--epochs 1``)
  and its validation error was still falling at the last epoch (lower than at every
  epoch before), above 0: more training would likely help. A network that levelled off,
  or made no validation error, had enough.
- ``predicted_classes``: classes with validation images that the classifier never
  predicts on the validation split.

A wrapped classifier (``from_classifier``) is not trained, so only the first and last
checks apply. ``OpenSetRecognizer.fit`` keeps the result in ``health_`` (saved in the
model folder), logs one warning line per failing check, and the evaluation puts it in
``metrics.json`` (``health``) and at the top of ``report.html``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from scipy.stats import binom

from osrkit.recognizer.fitting import FitReport
from osrkit.training.config import TrainConfig
from osrkit.training.recipe import MIN_STEPS

log = logging.getLogger(__name__)

MIN_SKILL = 0.25  # the least fraction of the gap from chance to perfect accuracy
ALPHA = 0.01  # significance of the one-sided binomial test against chance
MIN_DROP = 0.01  # the least fall of the validation error below the first epoch's
LISTED = 10  # classes named in a message at most

CHECKS = ("accuracy", "validation_curve", "optimizer_steps", "predicted_classes")


@dataclass(frozen=True)
class Finding:
    """A failed check: its name (one of ``CHECKS``), what was found and what to try."""

    check: str
    message: str
    advice: str

    def __str__(self) -> str:
        return f"{self.message}; try: {self.advice}"

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class ModelHealth:
    """The outcome of the checks: the ``findings`` (empty: healthy), the names of the
    checks that ran (``checked``) and what they measured (``measured``)."""

    findings: tuple[Finding, ...] = ()
    checked: tuple[str, ...] = ()
    measured: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        """What ``metrics.json`` and the model folder's ``config.json`` hold under ``health``."""
        return {
            "ok": self.ok,
            "warnings": [f.to_dict() for f in self.findings],
            "checked": list(self.checked),
            "measured": dict(self.measured),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelHealth:
        """The inverse of ``to_dict`` (a ``TypeError`` or ``KeyError`` when malformed)."""
        warnings = data["warnings"]
        findings = tuple(Finding(str(w["check"]), str(w["message"]), str(w["advice"])) for w in warnings)
        return cls(findings, tuple(map(str, data.get("checked", ()))), dict(data.get("measured", {})))

    def log_warnings(self) -> None:
        """One warning line per failing check."""
        for finding in self.findings:
            log.warning("model health: %s", finding)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p): the one-sided p-value of ``k`` successes in ``n``."""
    return float(binom.sf(k - 1, n, p))


def chance_accuracy(labels: np.ndarray, num_classes: int) -> float:
    """What guessing gets: the larger of 1/K and the most common class's share of ``labels``."""
    share = np.bincount(labels, minlength=num_classes).max() / len(labels) if len(labels) else 0.0
    return max(1.0 / num_classes, float(share))


def check_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> Finding | None:
    """Closed-set accuracy on the validation split against chance (see the module docstring)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    chance = chance_accuracy(labels, num_classes)
    if not len(labels) or chance >= 1.0:
        return None
    correct = int((predictions == labels).sum())
    accuracy = correct / len(labels)
    skill = (accuracy - chance) / (1.0 - chance)
    p_value = binomial_tail(correct, len(labels), chance)
    where = f"closed-set accuracy on the {len(labels)} known validation images is {accuracy:.3f}"
    how = f"1 in {num_classes} classes" if chance == 1.0 / num_classes else "the most common class's share"
    guess = f"{chance:.3f}, {how}"
    if skill < MIN_SKILL:
        return Finding(
            "accuracy",
            f"{where}, near chance ({guess}): the model learned little or nothing",
            "check that each class folder holds images of its class, train longer (--epochs), start "
            "from a pretrained network (--pretrained), or add images",
        )
    if p_value >= ALPHA:
        return Finding(
            "accuracy",
            f"{where}, which so few images cannot tell apart from chance ({guess}; binomial test "
            f"p = {p_value:.2g})",
            "add images, or hold out more of them for validation (--val-size)",
        )
    return None


def check_validation_curve(val_errors: Sequence[float], num_classes: int) -> Finding | None:
    """A flat or rising validation error over the epochs (see the module docstring)."""
    if len(val_errors) < 2:
        return None
    first, best_later = float(val_errors[0]), float(min(val_errors[1:]))
    chance_error = 1.0 - 1.0 / num_classes
    if best_later > first - MIN_DROP and first > chance_error / 2:
        trend = "rose" if best_later > first + MIN_DROP else "stayed flat"
        return Finding(
            "validation_curve",
            f"the validation error {trend} over {len(val_errors)} epochs ({first:.3f} after the first, "
            f"{best_later:.3f} at best after it): training did not improve the classifier",
            "lower the learning rate (--lr), check that each class folder holds images of its class, "
            "or start from a pretrained network (--pretrained)",
        )
    return None


def check_optimizer_steps(steps: int | None, val_errors: Sequence[float] = ()) -> Finding | None:
    """Fewer than ``MIN_STEPS`` optimizer steps while the validation error ``val_errors``
    was still falling at the last epoch (None: not trained, nothing to check)."""
    if steps is None or steps >= MIN_STEPS:
        return None
    errors = [round(float(e), 4) for e in val_errors]  # without the loss that breaks ties
    if errors[-1:] == [0.0] or (len(errors) > 1 and errors[-1] >= min(errors[:-1])):
        return None  # no error left, or the last epoch improved on none before it
    return Finding(
        "optimizer_steps",
        f"the classifier took only {steps} optimizer steps (fewer than {MIN_STEPS}) and was still "
        "improving when training stopped: it is likely undertrained",
        "train more epochs (--epochs), a smaller batch (--batch-size), or on more images",
    )


def check_predicted_classes(
    predictions: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> Finding | None:
    """Classes with validation images that the classifier never predicts on them."""
    k = len(class_names)
    present = np.bincount(np.asarray(labels), minlength=k) > 0
    predicted = np.bincount(np.asarray(predictions), minlength=k)[:k] > 0
    missing = [class_names[i] for i in np.flatnonzero(present & ~predicted)]
    if not missing:
        return None
    more = len(missing) - LISTED
    named = ", ".join(missing[:LISTED]) + (f" and {more} more" if more > 0 else "")
    return Finding(
        "predicted_classes",
        f"{len(missing)} of {k} classes are never predicted on the validation images: {named}",
        "check that those classes' folders hold images of their class and add images to them, "
        "or train longer (--epochs)",
    )


def optimizer_steps(report: FitReport, config: TrainConfig) -> int | None:
    """The classifier's optimizer steps in ``fit``: epochs run x batches an epoch (None
    when no classifier was trained)."""
    if not report.classifier:
        return None
    return len(report.classifier["history"]) * math.ceil(report.train_size / config.batch_size)


def assess(
    predictions: np.ndarray,
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    val_errors: Sequence[float] | None = None,
    steps: int | None = None,
) -> ModelHealth:
    """Run every check that applies: the classifier's ``predictions`` for the validation
    images of classes ``labels``; the validation curve ``val_errors`` and the optimizer
    ``steps`` where the network was trained (None: skipped)."""
    labels = labels.numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    predictions = np.asarray(predictions)
    k = len(class_names)
    results = {"accuracy": check_accuracy(predictions, labels, k)}
    if val_errors is not None:
        results["validation_curve"] = check_validation_curve(val_errors, k)
    if steps is not None:
        results["optimizer_steps"] = check_optimizer_steps(steps, val_errors or ())
    results["predicted_classes"] = check_predicted_classes(predictions, labels, class_names)
    measured: dict[str, Any] = {"validation_images": len(labels)}
    if len(labels):
        measured["validation_accuracy"] = round(float((predictions == labels).mean()), 6)
        measured["chance_accuracy"] = round(chance_accuracy(labels, k), 6)
    if val_errors is not None:
        measured["validation_errors"] = [round(float(e), 6) for e in val_errors]
    if steps is not None:
        measured["optimizer_steps"] = steps
    findings = tuple(f for f in results.values() if f is not None)
    return ModelHealth(findings, tuple(results), measured)


def assess_fit(
    predictions: np.ndarray,
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    report: FitReport | None,
    config: TrainConfig | None,
) -> ModelHealth:
    """``assess`` after ``fit``: the curve and the steps from its ``report`` and recipe
    ``config`` where it trained a classifier."""
    trained = report is not None and config is not None and report.classifier is not None
    history = report.classifier["history"] if trained else None
    errors = [entry["val_metric"] for entry in history] if history is not None else None
    steps = optimizer_steps(report, config) if trained else None
    return assess(predictions, labels, class_names, errors, steps)
