"""What a prediction says about each image, as ``osrkit predict`` prints it and
``osrkit serve`` returns it: label, class index, known or not, and every score."""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import torch

from .data.spec import InputSpec
from .inference import UNKNOWN


class Predictor(Protocol):
    """What both backends (``OpenSetRecognizer``, ``OnnxRecognizer``) offer."""

    class_names: list[str]

    def outputs(self, x: Any) -> Any: ...
    def scores_from_outputs(self, outputs: Any) -> dict[str, np.ndarray]: ...
    def decide(self, outputs: Any, scorer: str | None = None, scores: Any = None) -> np.ndarray: ...


def load_model(path: str | os.PathLike, backend: str = "torch", device: str = "auto") -> Predictor:
    """A saved model to predict with: a model folder (``torch``) or its ONNX export
    (``onnx``, a ``.onnx`` file or a folder holding ``model.onnx``)."""
    if backend == "onnx":
        from .export import OnnxRecognizer

        return OnnxRecognizer(path)
    from .recognizer import OpenSetRecognizer

    return OpenSetRecognizer.from_pretrained(path, device=device)


def input_spec_of(model: Predictor) -> InputSpec:
    """The input spec a loaded model of either backend takes."""
    spec = getattr(model, "input_spec_", None)  # OpenSetRecognizer's fitted spec
    return spec if spec is not None else model.input_spec


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
