"""The scorer base class, the model outputs scorers read, and the scorer registry.

A scorer is a small ``torch.nn.Module``: ``fit`` on outputs of known images (returns
self), then ``forward(signals)`` maps named signals to one unknown-ness score per input
(``(N,)`` float64, larger = more likely unknown). The same ``forward`` runs in the
runtime (``score``, batch by batch) and inside the exported ONNX graph, so each method's
maths is written once, in torch (pytorch-ood's habit: a detector is a small function on a
named signal). Fitted tensors are buffers whose names end in ``_``; they are saved to
safetensors under the name without the ``_`` (buffers derived from them, rebuilt on load,
have plain names).

Signals (``SIGNALS``): ``logits`` ``(N, K)``, ``features`` ``(N, D)`` (penultimate layer),
``recon_error`` ``(N,)`` (the autoencoder's, absent without one) and ``pixels``
``(N, C*H*W)`` in [0, 1].

Registry (as timm's ``register_model``, the shape of every osrkit registry,
``osrkit.registry``): ``register_scorer`` (a class decorator), ``list_scorers()``,
``scorer_entry(name)`` (the class), ``create_scorer(name, **params)``; tests parametrized
over ``list_scorers()`` pick a new scorer up.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from osrkit.errors import ConfigError, ModelFormatError
from osrkit.registry import Registry

log = logging.getLogger(__name__)

SIGNALS = ("logits", "features", "recon_error", "pixels")

# What a model lacks when a signal is missing (one-line errors name it).
SIGNAL_NEEDS = {
    "recon_error": "the autoencoder's reconstruction error, and this model has no autoencoder",
    "pixels": "the input pixels",
}


@dataclass
class ModelOutputs:
    """What the networks say about a batch: logits ``(N, K)``, penultimate features
    ``(N, D)``, per-image reconstruction error ``(N,)`` and, optionally, the input
    pixels ``images``: float32 ``(N, C*H*W)`` in [0, 1] (flattened), read by pixel-space
    scorers such as ``class_reconstruction``. ``recon_error`` is None for a model without
    an autoencoder (or when no chosen scorer reads it)."""

    logits: np.ndarray
    features: np.ndarray
    recon_error: np.ndarray | None = None
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.logits)

    @property
    def predictions(self) -> np.ndarray:
        """Closed-set class predictions (argmax of the logits)."""
        return self.logits.argmax(1)

    def subset(self, index: np.ndarray) -> ModelOutputs:
        return ModelOutputs(
            self.logits[index],
            self.features[index],
            None if self.recon_error is None else self.recon_error[index],
            None if self.images is None else self.images[index],
        )

    @staticmethod
    def concat(parts: list[ModelOutputs]) -> ModelOutputs:
        """One ``ModelOutputs`` of all ``parts``; an optional field only when every part has it."""

        def cat(field: str) -> np.ndarray | None:
            values = [getattr(p, field) for p in parts]
            return None if any(v is None for v in values) else np.concatenate(values)

        return ModelOutputs(cat("logits"), cat("features"), cat("recon_error"), cat("images"))

    def signal(self, name: str) -> np.ndarray | None:
        """The named signal (``SIGNALS``), or None where these outputs lack it."""
        return {
            "logits": self.logits,
            "features": self.features,
            "recon_error": self.recon_error,
            "pixels": self.images,
        }[name]

    def tensors(self, names: frozenset[str], scorer: str) -> dict[str, torch.Tensor]:
        """The signals ``names`` as CPU tensors (no copy); a missing one is one line."""
        out = {}
        for name in sorted(names):
            value = self.signal(name)
            if value is None:
                raise ConfigError(f"scorer {scorer!r} needs {SIGNAL_NEEDS.get(name, name)}")
            out[name] = torch.from_numpy(np.ascontiguousarray(value))
        return out


Signals = Mapping[str, torch.Tensor]
S = TypeVar("S", bound="Scorer")


class Scorer(nn.Module):
    """Base class of the scorers. Subclasses set the class attributes and implement
    ``forward`` (and ``fit`` when they have parameters).

    ``name``: registry name. ``label``: a short description for plots and reports.
    ``signals``: the signals ``forward`` reads.
    ``params``: names of the constructor's hyper-parameters (saved with the model).
    ``arrays``: saved array name -> (rank, numpy dtype) of the fitted buffers ``<name>_``.
    ``log_scale``: the score is positive and scale-like, so fusions normalise its log.
    ``fits_on_reference``: fitted on known TRAINING outputs (others need no fitting).
    ``needs_head``: ``fit`` takes the classifier's linear head ``(W, b)``.
    ``chunk_size``: rows per ``forward`` call in the runtime (keeps big products in cache).
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    signals: ClassVar[frozenset[str]] = frozenset({"logits"})
    params: ClassVar[tuple[str, ...]] = ()
    arrays: ClassVar[dict[str, tuple[int, Any]]] = {}
    log_scale: ClassVar[bool] = False
    fits_on_reference: ClassVar[bool] = False
    needs_head: ClassVar[bool] = False
    chunk_size: ClassVar[int | None] = None

    def __init__(self) -> None:
        super().__init__()
        for key in self.arrays:
            self.register_buffer(f"{key}_", None)

    # ------------------------------------------------------------- fitting
    def fit(self: S, known: ModelOutputs, *, labels: np.ndarray | None = None, head: Any = None) -> S:
        """Fit on outputs of known inputs (``labels``: their classes; ``head``: the
        classifier's ``(W, b)`` for scorers that set ``needs_head``); returns self."""
        return self

    def needs(self) -> frozenset[str]:
        """The signals this scorer reads (a fusion: those of its members)."""
        return self.signals

    def is_fitted(self) -> bool:
        return all(getattr(self, f"{key}_") is not None for key in self.arrays)

    def check_fitted(self) -> None:
        if not self.is_fitted():
            raise ConfigError(f"scorer {self.name!r} is not fitted: call fit(known_outputs) first")

    def _prepare(self) -> None:
        """Derive the non-saved buffers from the fitted ones (after fit and load)."""

    # ------------------------------------------------------------- scoring
    def forward(self, signals: Signals) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.inference_mode()
    def score(self, outputs: ModelOutputs) -> np.ndarray:
        """Scores ``(N,)`` float64 of ``outputs``: ``forward`` over row chunks."""
        self.check_fitted()
        signals = outputs.tensors(self.signals, self.name)
        n = len(outputs)
        step = self.chunk_size or max(n, 1)
        parts = [self({k: v[i : i + step] for k, v in signals.items()}) for i in range(0, n, step)]
        if not parts:
            return np.zeros(0, dtype=np.float64)
        return torch.cat(parts).to(torch.float64).numpy()

    # ------------------------------------------------------------- state
    def get_params(self) -> dict[str, Any]:
        """The hyper-parameters (constructor arguments), JSON values."""
        return {p: getattr(self, p) for p in self.params}

    def fitted_state(self) -> dict[str, Any]:
        """Small fitted values worth keeping in ``config.json`` besides the arrays."""
        return {}

    def get_state(self) -> dict[str, Any]:
        """Hyper-parameters and small fitted values, JSON-serialisable."""
        self.check_fitted()
        return self.get_params() | self.fitted_state()

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays (copies, saved to safetensors beside ``config.json``)."""
        self.check_fitted()
        return {key: getattr(self, f"{key}_").numpy().copy() for key in self.arrays}

    def set_state(self: S, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None) -> S:
        """Restore fitted arrays and small values saved by ``get_state``/``get_arrays``."""
        for key, (rank, dtype) in self.arrays.items():
            if not arrays or key not in arrays:
                raise ModelFormatError(f"saved state of scorer {self.name!r} lacks the array {key!r}")
            value = np.asarray(arrays[key])
            if value.ndim != rank:
                raise ModelFormatError(f"saved array {key!r} of scorer {self.name!r} has shape {value.shape}")
            setattr(self, f"{key}_", torch.from_numpy(np.ascontiguousarray(value, dtype=dtype)))
        self.restore(state)
        self._prepare()
        return self

    def restore(self, state: Mapping[str, Any]) -> None:
        """Read back ``fitted_state`` (arrays are already loaded); check consistency."""

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())


def labels_or_predictions(known: ModelOutputs, labels: np.ndarray | None) -> np.ndarray:
    """``labels`` checked against ``known``, or else the classifier's predictions."""
    y = known.predictions if labels is None else np.asarray(labels)
    if y.shape != (len(known),):
        raise ConfigError(f"{len(known)} outputs but labels of shape {y.shape}")
    return y.astype(np.int64)


def logsumexp(z: torch.Tensor) -> torch.Tensor:
    """``log sum_k exp(z_k)`` per row, with the row maximum taken out first (written out,
    so the exported graph computes it the same way)."""
    top = z.amax(dim=1, keepdim=True)
    return top[:, 0] + torch.log(torch.exp(z - top).sum(dim=1))


def needs_of(scorers: Iterable[Scorer]) -> frozenset[str]:
    """The signals a set of scorers reads together."""
    return frozenset().union(*(s.needs() for s in scorers))


def head_residual(known: ModelOutputs, head: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Largest ``|features @ W.T + b - logits|`` over ``known``, relative to the logits' spread."""
    w, b = (np.asarray(t, dtype=np.float64) for t in head)
    z = known.logits.astype(np.float64)
    fitted = known.features.astype(np.float64) @ w.T + b
    return float(np.abs(fitted - z).max() / max(np.ptp(z), 1e-12))


def least_squares_head(known: ModelOutputs) -> tuple[torch.Tensor, torch.Tensor]:
    """The linear map ``logits = features @ W.T + b`` that best fits ``known`` (float64
    least squares): the class layer of a wrapped network whose head is not exposed. Exact
    (up to rounding) when the logits are an affine function of the features; a warning
    says when they are not (e.g. an MLP head), since ViM and ReAct then read a stand-in."""
    f = np.concatenate([known.features.astype(np.float64), np.ones((len(known), 1))], axis=1)
    solution, *_ = np.linalg.lstsq(f, known.logits.astype(np.float64), rcond=None)
    head = torch.from_numpy(np.ascontiguousarray(solution[:-1].T)), torch.from_numpy(solution[-1].copy())
    residual = head_residual(known, head)
    if residual > 1e-3:
        log.warning(
            "the logits are not an affine function of the features (residual %.3g of their spread); "
            "scorers that read the class layer (vim, react) use the best affine fit",
            residual,
        )
    return head


# ----------------------------------------------------------------------------- registry
# Every scorer by name (``SCORERS["knn"]`` is the class), iterated sorted.
SCORERS: Registry[type[Scorer]] = Registry("scorer")


def register_scorer(cls: type[S] | None = None, *, replace: bool = False) -> Any:
    """Class decorator: make ``cls`` available by ``cls.name`` (``@register_scorer``, or
    ``@register_scorer(replace=True)`` to replace a scorer of that name)."""

    def add(cls: type[S]) -> type[S]:
        if not cls.name:
            raise ConfigError(f"{cls.__name__} has no name")
        return SCORERS.register(cls.name, cls, replace=replace)

    return add(cls) if cls is not None else add


def list_scorers() -> list[str]:
    """The registered scorer names, sorted (reports order them by
    ``osrkit.scorers.selection.report_order``)."""
    return SCORERS.names()


def scorer_entry(name: str) -> type[Scorer]:
    """The registered class ``name``; an unknown name is one line listing the known ones."""
    return SCORERS.entry(name)


scorer_class = scorer_entry  # the name before the registries shared one shape


def create_scorer(name: str, **params: Any) -> Scorer:
    """A new, unfitted scorer ``name`` with hyper-parameters ``params``."""
    cls = scorer_entry(name)
    unknown = set(params) - set(cls.params)
    if unknown:
        allowed = ", ".join(cls.params) or "none"
        raise ConfigError(
            f"scorer {name!r} has no parameter {sorted(unknown)[0]!r} (its parameters: {allowed})"
        )
    return cls(**params)


def make_scorer(name: str, **params: Any) -> Scorer:
    """Deprecated, kept for one release: ``create_scorer`` (same arguments)."""
    warnings.warn(
        "make_scorer is deprecated and goes after one release; use create_scorer (same arguments)",
        DeprecationWarning,
        stacklevel=2,
    )
    return create_scorer(name, **params)


def scorer_from_state(
    name: str, state: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> Scorer:
    """A fitted scorer ``name`` rebuilt from its saved ``get_state`` and ``get_arrays``."""
    cls = scorer_entry(name)
    return create_scorer(name, **{p: state[p] for p in cls.params if p in state}).set_state(state, arrays)


def scorer_label(name: str) -> str:
    """A registered scorer's ``label`` (its name for anything else, e.g. a scorer of a
    newer osrkit named in saved metrics)."""
    cls = SCORERS.get(name)
    return cls.label if cls is not None and cls.label else name
