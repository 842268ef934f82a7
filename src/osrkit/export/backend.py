"""``OnnxRecognizer``: a graph written by ``osrkit.export.onnx.export_onnx``, run with
ONNX Runtime behind the same calls as the PyTorch recognizer.

The graph's inputs, outputs and metadata are described in ``osrkit.export.onnx``; the
metadata is read back with the checks a model folder's ``config.json`` gets, and the
graph's digest is checked before the graph runs (``osrkit.files.integrity``).

Needs onnxruntime, from the ``onnx`` extra (``pip install 'osrkit[onnx]'``).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from osrkit.data.inputs import ImagesLike, as_input_tensor
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError, DataError, ModelFormatError
from osrkit.export.onnx import (
    INPUT_NAME,
    MODEL_FILENAME,
    ONNX_FORMAT_VERSION,
    OUTPUT_NAMES,
    READABLE_ONNX_VERSIONS,
)
from osrkit.files.config_json import parse_config
from osrkit.files.integrity import ONNX_FORMAT_KEY, check_onnx_digest
from osrkit.files.ownership import ONNX_FORMAT
from osrkit.recognizer.estimator import UNKNOWN
from osrkit.recognizer.ort_features import import_onnxruntime
from osrkit.scorers import FusionScorer, is_fusion, scorer_from_state
from osrkit.scorers.calibration import rejects

RUNTIME_EXTRA_HINT = "running an ONNX model needs the onnx extra: pip install 'osrkit[onnx]'"


def resolve_onnx_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/model.onnx`` when ``path`` is a folder; it must exist."""
    path = Path(path)
    if path.is_dir():
        candidate = path / MODEL_FILENAME
        if not candidate.is_file():
            raise ModelFormatError(
                f"model folder {path} has no {MODEL_FILENAME}; write one with "
                f"`osrkit export {path} {candidate}`"
            )
        return candidate
    if not path.is_file():
        raise ModelFormatError(
            f"ONNX model {path} not found; write one with `osrkit export MODEL_DIR {path}`"
        )
    return path


class OnnxRecognizer:
    """Runs a graph written by ``export_onnx`` with ONNX Runtime (CPU).

    Takes images the way ``OpenSetRecognizer`` does (array, tensor, ``ImageSet``, PIL
    image or list of paths) and gives the same decisions. ``path`` is the ``.onnx`` file
    or a folder holding ``model.onnx``.

    Attributes: ``path``, ``class_names``, ``scorer_names`` (the order of the
    ``unknown_scores`` columns), ``thresholds``, ``decision_scorer``, ``input_spec``,
    ``metadata`` (all of the model's metadata, JSON-decoded). onnxruntime runs as many
    threads as ``torch.get_num_threads()`` when the model is loaded.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = resolve_onnx_path(path)
        try:
            ort = import_onnxruntime()  # telemetry off: no files under ~/.cache
        except ImportError:
            raise ConfigError(RUNTIME_EXTRA_HINT) from None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        # as many threads as torch (the thread count osrkit sets everywhere, e.g. the
        # service's --threads); onnxruntime would otherwise take every core
        options.intra_op_num_threads = torch.get_num_threads()
        try:
            data = self.path.read_bytes()  # checked, then these very bytes are run
            check_onnx_digest(data, self.path)
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except ModelFormatError:
            raise
        except Exception as exc:  # onnxruntime's errors derive from Exception only
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFormatError(f"{self.path} is not a loadable ONNX model ({first[:200]})") from None
        self.metadata = self._read_metadata()
        try:
            self.class_names: list[str] = list(self.metadata["class_names"])
            self.scorer_names: list[str] = list(self.metadata["scorer_names"])
            self.thresholds: dict[str, float] = {k: float(v) for k, v in self.metadata["thresholds"].items()}
            self.decision_scorer: str = str(self.metadata["decision_scorer"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelFormatError(f"{self.path}: damaged osrkit metadata ({exc})") from None
        if set(self.thresholds) != set(self.scorer_names) or self.decision_scorer not in self.thresholds:
            raise ModelFormatError(f"{self.path}: osrkit metadata lacks thresholds for some scorers")
        try:
            spec = self.metadata.get("input_spec")
            self.input_spec = (
                InputSpec.from_dict(spec)
                if spec
                else InputSpec.from_legacy(self.metadata.get("preprocessing"))
            )
        except ConfigError as exc:
            raise ModelFormatError(
                f"{self.path}: damaged input spec in the osrkit metadata ({exc})"
            ) from None

    @functools.cached_property
    def fusions(self) -> dict[str, FusionScorer]:
        """The graph's fusion scorers, rebuilt from the metadata (their member thresholds
        and medians), to say which member decided; the graph computes their scores."""
        states = self.metadata.get("scorers") or {}
        try:
            return {
                name: scorer_from_state(name, states[name])
                for name in self.scorer_names
                if name in states and is_fusion(name)
            }
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise ModelFormatError(
                f"{self.path}: damaged fusion state in the osrkit metadata ({exc})"
            ) from None

    def _read_metadata(self) -> dict[str, Any]:
        raw = self.session.get_modelmeta().custom_metadata_map
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = {o.name for o in self.session.get_outputs()}
        if raw.get(ONNX_FORMAT_KEY) != json.dumps(ONNX_FORMAT) or inputs != [INPUT_NAME]:
            raise ModelFormatError(
                f"{self.path} is an ONNX model but not an osrkit export; write one with `osrkit export`"
            )
        if (
            raw.get("osrkit_format_version") not in {json.dumps(v) for v in READABLE_ONNX_VERSIONS}
            or not set(OUTPUT_NAMES) <= outputs
        ):
            raise ModelFormatError(
                f"{self.path}: not an osrkit ONNX export of format version {ONNX_FORMAT_VERSION}"
            )
        # the same reader as a model folder's config.json: depth, NaN and size checked
        return {key: parse_config(value, f"{self.path} (metadata {key!r})") for key, value in raw.items()}

    @property
    def class_names_(self) -> list[str]:
        """The known classes, under the fitted-attribute name ``OpenSetRecognizer`` uses."""
        return self.class_names

    @property
    def decision_scorer_(self) -> str:
        """The deciding scorer, under the fitted-attribute name ``OpenSetRecognizer`` uses."""
        return self.decision_scorer

    def __repr__(self) -> str:
        return f"OnnxRecognizer({str(self.path)!r}, classes={len(self.class_names)})"

    def run(self, x: ImagesLike, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """All graph outputs for images ``x``, as numpy arrays keyed by output name."""
        images = as_input_tensor(x, self.input_spec).numpy()
        if len(images) == 0:
            raise DataError("no images given")
        parts = [
            self.session.run(
                list(OUTPUT_NAMES), {INPUT_NAME: np.ascontiguousarray(images[i : i + batch_size])}
            )
            for i in range(0, len(images), batch_size)
        ]
        return {name: np.concatenate([p[j] for p in parts]) for j, name in enumerate(OUTPUT_NAMES)}

    # Same names as OpenSetRecognizer, so callers (the CLI) can use either backend.
    def outputs(self, x: ImagesLike, batch_size: int = 1024) -> dict[str, np.ndarray]:
        """Alias of ``run``: the graph outputs for images ``x``."""
        return self.run(x, batch_size)

    def scores_from_outputs(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every scorer's score (float64, larger = more likely unknown) from ``run`` outputs."""
        scores = outputs["unknown_scores"]
        return {name: scores[:, i] for i, name in enumerate(self.scorer_names)}

    def score_all(self, x: ImagesLike) -> dict[str, np.ndarray]:
        """Every scorer's score for images ``x``."""
        return self.scores_from_outputs(self.run(x))

    def decide(
        self, outputs: dict[str, np.ndarray], scorer: str | None = None, scores: dict | None = None
    ) -> np.ndarray:
        """Class index per input, or -1 where ``scorer``'s score (default: the decision
        scorer's) exceeds its threshold or is not finite (``calibration.rejects``; applied
        here too for exports whose graph let a NaN pass). ``scores`` is accepted for the
        same call as ``OpenSetRecognizer.decide``; the graph's outputs hold every score."""
        name = scorer or self.decision_scorer
        if name not in self.thresholds:
            raise ConfigError(f"unknown scorer {name!r}; choose from {', '.join(self.scorer_names)}")
        s = outputs["unknown_scores"][:, self.scorer_names.index(name)]
        label = outputs["label"] if name == self.decision_scorer else outputs["logits"].argmax(1)
        return np.where(rejects(s, self.thresholds[name]), UNKNOWN, label)

    def predict(self, x: ImagesLike, scorer: str | None = None) -> np.ndarray:
        """Class index per image, or -1 for unknown."""
        return self.decide(self.run(x), scorer)
