"""Evaluation of a fitted recognizer: metrics on known and unknown test images, the
figures, the mistakes gallery and the offline HTML report."""

from osrkit.evaluation.evaluate import evaluate

__all__ = ["evaluate"]
