"""What a prediction says about each image, as ``osrkit predict`` prints it and
``osrkit serve`` returns it: label, class index, known or not, every score with its
threshold and margin, and why the decision went the way it did (``prediction_rows``; for
one image from Python, ``explain``)."""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import torch

from osrkit.data.inputs import ImagesLike, as_input_tensor
from osrkit.data.spec import InputSpec
from osrkit.errors import DataError
from osrkit.export.backend import OnnxRecognizer
from osrkit.files.atomic import json_safe
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.recognizer.inference import UNKNOWN
from osrkit.scorers.fusion import FusionScorer


class Predictor(Protocol):
    """What both backends (``OpenSetRecognizer``, ``OnnxRecognizer``) offer."""

    class_names_: list[str]
    decision_scorer_: str

    def outputs(self, x: Any) -> Any: ...
    def scores_from_outputs(self, outputs: Any) -> dict[str, np.ndarray]: ...
    def decide(self, outputs: Any, scorer: str | None = None, scores: Any = None) -> np.ndarray: ...
    @property
    def fusions(self) -> dict[str, FusionScorer]: ...


def load_model(path: str | os.PathLike, backend: str = "torch", device: str = "auto") -> Predictor:
    """A saved model to predict with: a model folder (``torch``) or its ONNX export
    (``onnx``, a ``.onnx`` file or a folder holding ``model.onnx``)."""
    if backend == "onnx":
        return OnnxRecognizer(path)
    return OpenSetRecognizer.from_pretrained(path, device=device)


def input_spec_of(model: Predictor) -> InputSpec:
    """The input spec a loaded model of either backend takes."""
    spec = getattr(model, "input_spec_", None)  # OpenSetRecognizer's fitted spec
    return spec if spec is not None else model.input_spec


def thresholds_of(model: Predictor) -> dict[str, float]:
    """Every scorer's calibrated threshold, whichever the backend."""
    thresholds = getattr(model, "thresholds_", None)  # OpenSetRecognizer's fitted thresholds
    return thresholds if thresholds is not None else model.thresholds


def deciding_members(fusion: FusionScorer, scores: dict[str, np.ndarray]) -> list[str]:
    """Per input, the member of ``fusion`` that decided: the one whose score sits highest
    against its own threshold (it rejected the input, or came closest to rejecting it)."""
    normalised = fusion.normalised(None, scores)
    return [fusion.members[j] for j in normalised.argmax(axis=1)]


def prediction_rows(model: Predictor, images: torch.Tensor, scorer: str | None = None) -> list[dict]:
    """One dict per image of the batch ``images`` (uint8, or float in [0, 1]; already in the model's spec):

    - ``label`` (class name or ``"unknown"``), ``class_index`` (-1 = unknown), ``known``;
    - ``decision``: the deciding scorer, its ``score``, ``threshold`` and ``margin``
      (threshold - score: positive = accepted as known, negative = rejected), and for a
      fusion ``decided_by``, the member that decided, with its ``member_score`` and the
      ``member_threshold`` the fusion cuts it at (joint calibration: not the member's own
      threshold);
    - ``scores``, ``thresholds`` and ``margins`` of every fitted scorer (larger score =
      more likely unknown), and ``decided_by`` for every fusion among them (no such key
      when the model has no fusion).

    A score that is not finite (NaN or infinity: a damaged model or input) means unknown,
    never known (``calibration.rejects``); such a row's ``decision`` says so in ``reason``,
    and every NaN or infinite number in a row is None (JSON ``null``), so a row always
    encodes as valid JSON.
    """
    outputs = model.outputs(images)
    scores = model.scores_from_outputs(outputs)
    labels = model.decide(outputs, scorer, scores)  # from the scores above, not scored again
    thresholds = {name: float(thresholds_of(model)[name]) for name in scores}  # one dict for all rows
    decision = scorer or model.decision_scorer_
    deciders = {name: deciding_members(f, scores) for name, f in model.fusions.items() if name in scores}
    # a fusion cuts each member at its own joint threshold, not at the member's own one
    cuts = model.fusions[decision].member_thresholds() if decision in deciders else None
    # thresholds are finite (checked on loading), so rows need cleaning only where a score is not
    finite = np.logical_and.reduce([np.isfinite(s) for s in scores.values()])
    decided_finite = np.isfinite(scores[decision])
    class_names = model.class_names_
    rows = []
    for i, label in enumerate(labels):
        idx = int(label)
        row_scores = {name: float(s[i]) for name, s in scores.items()}
        margins = {name: thresholds[name] - value for name, value in row_scores.items()}
        decided = {
            "scorer": decision,
            "score": row_scores[decision],
            "threshold": thresholds[decision],
            "margin": margins[decision],
        }
        if cuts is not None:
            member = deciders[decision][i]
            decided |= {
                "decided_by": member,
                "member_score": row_scores[member],
                "member_threshold": cuts[member],
            }
        if not decided_finite[i]:
            decided["reason"] = "the score is not finite (NaN or infinity), which always means unknown"
        row = {
            "label": "unknown" if idx == UNKNOWN else class_names[idx],
            "class_index": idx,
            "known": idx != UNKNOWN,
            "decision": decided,
            "scores": row_scores,
            "thresholds": dict(thresholds),  # a copy: rows are independent
            "margins": margins,
        }
        if deciders:  # only a model with a fusion has members that decide
            row["decided_by"] = {name: members[i] for name, members in deciders.items()}
        rows.append(row if finite[i] else json_safe(row))
    return rows


def explain(model: Predictor, image: ImagesLike, scorer: str | None = None) -> dict:
    """Why ``model`` (either backend) decides as it does on one image: the row ``osrkit
    predict`` prints for it (``prediction_rows``, without the path), brought to the model's
    input spec as ``predict`` brings it (``image`` is a path, a PIL image, or one image as
    an array or tensor).

    When the deciding scorer (``scorer``, default the model's decision scorer) is a fusion,
    ``decision`` also holds ``member_thresholds``: the cut-off of every member within the
    fusion (the image's score of each member is in ``scores``), so that every member which
    rejects the image can be named, not only the one that decided.
    """
    spec = input_spec_of(model)
    images = as_input_tensor(image, spec) if spec is not None else image  # unfitted: outputs() says so
    if spec is not None and len(images) != 1:
        raise DataError(f"explain takes one image, got {len(images)}; call it once per image")
    row = prediction_rows(model, images, scorer)[0]
    name = row["decision"]["scorer"]
    if name in model.fusions:
        row["decision"]["member_thresholds"] = model.fusions[name].member_thresholds()
    return row
