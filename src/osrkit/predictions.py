"""What a prediction says about each image, as ``osrkit predict`` prints it and
``osrkit serve`` returns it: label, class index, known or not, and every score."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from .inference import UNKNOWN


class Predictor(Protocol):
    """What both backends (``OpenSetRecognizer``, ``OnnxRecognizer``) offer."""

    class_names: list[str]

    def outputs(self, x: Any) -> Any: ...
    def scores_from_outputs(self, outputs: Any) -> dict[str, np.ndarray]: ...
    def decide(self, outputs: Any, scorer: str | None = None, scores: Any = None) -> np.ndarray: ...


def prediction_rows(model: Predictor, images: torch.Tensor, scorer: str | None = None) -> list[dict]:
    """One dict per image of the float batch ``images`` (already in the model's spec):
    ``label`` (class name or ``"unknown"``), ``class_index`` (-1 = unknown), ``known`` and
    ``scores`` (every fitted scorer, larger = more likely unknown)."""
    outputs = model.outputs(images)
    scores = model.scores_from_outputs(outputs)
    labels = model.decide(outputs, scorer, scores)  # from the scores above, not scored again
    rows = []
    for i, label in enumerate(labels):
        idx = int(label)
        rows.append(
            {
                "label": "unknown" if idx == UNKNOWN else model.class_names[idx],
                "class_index": idx,
                "known": idx != UNKNOWN,
                "scores": {name: float(s[i]) for name, s in scores.items()},
            }
        )
    return rows
