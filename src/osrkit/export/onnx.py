"""ONNX export of a whole ``OpenSetRecognizer``: one graph, runnable without osrkit.

``export_onnx`` writes ONE ONNX graph: the networks the scorers need and every fitted
scorer (the same ``Scorer.forward`` the runtime runs), with thresholds, medians, the
fitted scorer arrays (kNN bank, class means, precision factor, PCA bases) and the
decision rule as constants, so any ONNX runtime gives the
class-or-unknown decision without osrkit or PyTorch. ``osrkit.export.backend.OnnxRecognizer``
runs such a file with ONNX Runtime behind the same calls as the PyTorch recognizer.

Graph input: ``images``, float32 ``(N, C, H, W)`` in [0, 1] as the model's input spec
says (already preprocessed, see ``osrkit.preprocess_image``; normalisation happens inside
the graph), N dynamic. Graph outputs:

- ``probabilities`` float32 ``(N, K)``: softmax class scores;
- ``logits`` float32 ``(N, K)``;
- ``unknown_scores`` float64 ``(N, S)``: one column per scorer, in the order of the
  metadata entry ``scorer_names`` (larger = more likely unknown);
- ``label`` int64 ``(N,)``: the arg-max class, or -1 where the decision scorer's score
  exceeds its threshold or is not finite (NaN or infinity never means known);
- ``is_unknown`` bool ``(N,)``.

The model's ``metadata_props`` hold JSON values: ``class_names``, ``scorer_names``,
``thresholds``, ``decision_scorer``, ``scorers`` (fitted state, medians included),
``accept_rate``, ``input_spec``, ``osrkit_version``, the format markers and
``osrkit_graph_sha256``, which ``OnnxRecognizer`` checks (``osrkit.files.integrity``).

Needs the ``onnx`` extra (``pip install 'osrkit[onnx]'``): onnx and onnxscript for the
export, onnxruntime for running.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from osrkit._version import __version__
from osrkit.errors import ConfigError, ModelFormatError
from osrkit.files.atomic import atomic_write_bytes
from osrkit.files.integrity import ONNX_FORMAT_KEY, with_onnx_digest
from osrkit.files.ownership import ONNX_FORMAT, check_onnx_output
from osrkit.models import Backbone, ConvAutoencoder
from osrkit.recognizer.estimator import UNKNOWN, OpenSetRecognizer
from osrkit.scorers import FusionScorer, needs_of

log = logging.getLogger(__name__)

# The graph's format, written by export_onnx and checked by OnnxRecognizer (backend.py).
ONNX_FORMAT_VERSION = 2  # 2: input_spec in the metadata (any channels and size)
READABLE_ONNX_VERSIONS = (1, 2)
DEFAULT_OPSET = 18  # the opset torch's exporter implements natively; ONNX Runtime >= 1.14 runs it
INPUT_NAME = "images"
OUTPUT_NAMES = ("probabilities", "logits", "unknown_scores", "label", "is_unknown")
MODEL_FILENAME = "model.onnx"  # looked up inside a model folder by OnnxRecognizer
EXPORT_EXTRA_HINT = "ONNX export needs the onnx extra: pip install 'osrkit[onnx]'"


# ---------------------------------------------------------------------- the graph
class _RecognizerGraph(nn.Module):
    """The recognizer as one traceable module: networks, scorers and decision.

    Reproduces ``OpenSetRecognizer.outputs`` on the plain float32 path, then runs the
    fitted scorer modules themselves (``Scorer.forward``, the code the runtime runs), each
    base scorer once, the fusions on their members' columns. Only the signals the scorers
    read are computed: no autoencoder when no scorer reads its error.
    """

    def __init__(self, recognizer: OpenSetRecognizer) -> None:
        super().__init__()
        scorers = recognizer.scorers_
        needs = needs_of(scorers.values())
        self.classifier: Backbone = copy.deepcopy(recognizer.classifier_).cpu().eval()
        ae = recognizer.autoencoder_ if "recon_error" in needs else None
        self.autoencoder: ConvAutoencoder | None = copy.deepcopy(ae).cpu().eval() if ae is not None else None
        self.pixels = "pixels" in needs
        for name, scorer in scorers.items():
            if isinstance(scorer, FusionScorer):
                for member_name, member in zip(scorer.members, scorer.member_scorers):
                    if scorers.get(member_name) is not member:
                        raise ConfigError(
                            f"fusion {name!r} uses a {member_name!r} scorer other than the "
                            "recognizer's; cannot export it to ONNX"
                        )
        self.bases = nn.ModuleDict(
            {n: copy.deepcopy(s).cpu() for n, s in scorers.items() if not isinstance(s, FusionScorer)}
        )
        self.fusions = nn.ModuleDict(
            {
                # the members stay shared (not copied): the graph takes their columns
                n: copy.deepcopy(s, memo={id(m): m for m in s.member_scorers})
                for n, s in scorers.items()
                if isinstance(s, FusionScorer)
            }
        )
        self.names = list(scorers)
        self.decision_column = self.names.index(recognizer.decision_scorer_)
        threshold = recognizer.thresholds_[recognizer.decision_scorer_]
        self.register_buffer("decision_threshold", torch.tensor(threshold, dtype=torch.float64))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, features = self.classifier.forward_with_features(images)
        signals = {"logits": logits, "features": features}
        if self.autoencoder is not None:
            signals["recon_error"] = (self.autoencoder(images) - images).pow(2).flatten(1).mean(1)
        if self.pixels:
            signals["pixels"] = images.flatten(1)
        probabilities = torch.softmax(logits, dim=1)
        top = logits.argmax(dim=1, keepdim=True)
        base = {name: module(signals) for name, module in self.bases.items()}
        columns = []
        for name in self.names:
            if name in self.bases:
                columns.append(base[name])
            else:
                fusion = self.fusions[name]
                columns.append(fusion(torch.stack([base[m] for m in fusion.members], dim=1)))
        scores = torch.stack(columns, dim=1)
        decision = scores[:, self.decision_column]  # NaN or infinity: unknown, as in calibration.rejects
        is_unknown = ~(torch.isfinite(decision) & (decision <= self.decision_threshold))
        label = torch.where(is_unknown, torch.full_like(top[:, 0], UNKNOWN), top[:, 0])
        return probabilities, logits, scores, label, is_unknown


# ---------------------------------------------------------------------- export
@contextlib.contextmanager
def _quiet_export() -> Iterator[None]:
    """Silence the exporter's warnings and log lines (e.g. about torchvision ops)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _metadata(recognizer: OpenSetRecognizer) -> dict[str, str]:
    """The model's ``metadata_props``; every value is JSON."""
    values = {
        ONNX_FORMAT_KEY: ONNX_FORMAT,
        "osrkit_format_version": ONNX_FORMAT_VERSION,
        "osrkit_version": __version__,
        "torch_version": torch.__version__,
        "class_names": recognizer.class_names_,
        "scorer_names": list(recognizer.scorers_),
        "decision_scorer": recognizer.decision_scorer_,
        "thresholds": {name: float(recognizer.thresholds_[name]) for name in recognizer.scorers_},
        "scorers": {name: s.get_state() for name, s in recognizer.scorers_.items()},
        "accept_rate": recognizer.accept_rate_,
        "input_spec": recognizer.input_spec_.to_dict(),
        "outputs": list(OUTPUT_NAMES),
    }
    return {key: json.dumps(value) for key, value in values.items()}


def export_onnx(
    recognizer: OpenSetRecognizer,
    path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
) -> Path:
    """Write the fitted ``recognizer`` as one ONNX graph to ``path``, atomically.

    The file appears complete or not at all (temporary file in the same folder, then an
    atomic rename); an existing file is replaced only with ``overwrite=True``. Uses
    PyTorch's ``torch.export``-based exporter (``dynamo=True``) at ONNX opset ``opset``
    (default 18). Returns the path written.
    """
    recognizer._check_fitted()
    path = Path(path)
    if not isinstance(opset, int) or opset < 18:
        raise ConfigError(f"opset must be an integer >= 18, got {opset!r}")
    try:
        import onnx
        import onnxscript  # noqa: F401  (the exporter's translation library)
    except ImportError:
        raise ConfigError(EXPORT_EXTRA_HINT) from None
    if _torch_version() < (2, 5):  # torch.onnx.export(dynamo=True, dynamic_shapes=...) came in 2.5
        raise ConfigError(f"ONNX export needs torch>=2.5 (found {torch.__version__})")
    check_onnx_output(path, overwrite, MODEL_FILENAME)

    graph = _RecognizerGraph(recognizer).eval()
    example = torch.rand(2, *recognizer.input_spec_.shape, generator=torch.Generator().manual_seed(0))
    try:
        with _quiet_export(), torch.no_grad():
            program = torch.onnx.export(
                graph,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                opset_version=opset,
                external_data=False,
                verbose=False,
            )
            model = program.model_proto
    except ConfigError:
        raise
    except Exception as exc:  # the exporter raises many types; one line for the CLI
        log.debug("ONNX export failed", exc_info=True)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"ONNX export failed: {first}") from None

    c, h, w = recognizer.input_spec_.shape
    model.doc_string = (
        f"osrkit open-set recognizer: input images float32 (N,{c},{h},{w}) in [0,1]; outputs "
        "probabilities, logits, unknown_scores (columns in metadata scorer_names), "
        "label (class index or -1 = unknown), is_unknown"
    )
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, _metadata(recognizer))
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ModelFormatError(f"the exported ONNX graph is invalid: {str(exc).splitlines()[0]}") from None
    data = with_onnx_digest(model.SerializeToString())
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    log.debug("wrote %s (%d bytes, opset %d)", path, len(data), opset)
    return path
