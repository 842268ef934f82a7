"""What a fitted recognizer does with images: outputs, scores, decisions.

``RecognizerInference`` is the part of ``OpenSetRecognizer`` that runs a fitted model
(its networks through the inference engine, then its scorers and thresholds); building
and fitting one live in ``osrkit.recognizer.estimator``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from osrkit.data.imageset import ImageSet
from osrkit.data.inputs import ImagesLike, as_input_tensor
from osrkit.data.lazy import LazyImageSet
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError, DataError
from osrkit.hardware import single_threaded_blas
from osrkit.models import Backbone, ConvAutoencoder
from osrkit.recognizer.engine import FastPaths, InferenceEngine
from osrkit.scorers import SCORERS, FusionScorer, ModelOutputs, Scorer, needs_of
from osrkit.scorers.calibration import rejects
from osrkit.scorers.selection import check_scorer_available, model_signals
from osrkit.training import distributed

UNKNOWN = -1


class RecognizerInference:
    """Inference on a fitted recognizer: reads the fitted attributes ``classifier_``,
    ``autoencoder_``, ``input_spec_``, ``scorers_``, ``thresholds_``, ``decision_scorer_``
    and ``device_``, and the ``fast_paths`` setting (see ``OpenSetRecognizer``).

    The fitted attributes are absent from an unfitted instance (``vars``, where
    scikit-learn's ``check_is_fitted`` looks), which reads the class-level defaults below;
    fitting, wrapping and loading set them on the instance."""

    classifier_: Backbone | None = None
    autoencoder_: ConvAutoencoder | None = None
    input_spec_: InputSpec | None = None
    scorers_: dict[str, Scorer] | None = None
    thresholds_: dict[str, float] | None = None
    decision_scorer_: str | None = None
    device_: torch.device | None = None
    fast_paths: FastPaths | None
    _engine: InferenceEngine | None = None
    _engine_version: tuple = ()

    @property
    def fusions(self) -> dict[str, FusionScorer]:
        """The fitted fusion scorers (OR rules of calibrated members), by name."""
        return {n: s for n, s in (self.scorers_ or {}).items() if isinstance(s, FusionScorer)}

    @property
    def has_autoencoder(self) -> bool:
        return self.autoencoder_ is not None

    @property
    def backbone_name_(self) -> str | None:
        """The registered name of the classifier network (None before fitting, or for a
        wrapped classifier given no backbone name)."""
        return getattr(self.classifier_, "backbone_name", None) or None

    def _weights_version(self) -> tuple:
        """Changes whenever a network is replaced or its tensors are modified in place
        (``load_state_dict``, an optimiser step): the engine's copies are then stale."""
        nets = [n for n in (self.classifier_, self.autoencoder_) if n is not None]
        return tuple(id(n) for n in nets) + tuple(
            t._version for n in nets for t in (*n.parameters(), *n.buffers())
        )

    def engine(self) -> InferenceEngine:
        """The inference engine for the current weights and fast paths (rebuilt when
        either changes; ``fast_paths`` None: ``FastPaths.default()``)."""
        self._check_networks()
        fast = self.fast_paths or FastPaths.default()
        version = (fast, *self._weights_version())
        if self._engine is None or self._engine_version != version:
            self._engine = InferenceEngine(
                self.classifier_,
                self.autoencoder_,
                fast,
                self.device_,
                self.input_spec_.shape if self.input_spec_ is not None else None,
            )
            self._engine_version = version
        return self._engine

    # ---------------------------------------------------------------- scorers
    def needed_signals(self) -> frozenset[str]:
        """The signals the fitted scorers read (before fitting: all the model has but the
        pixels, which only a pixel scorer reads)."""
        if not self.scorers_:
            return self.signals() - {"pixels"}
        return needs_of(self.scorers_.values())

    def signals(self) -> frozenset[str]:
        """The model outputs this recognizer can compute for its scorers."""
        return model_signals(self.autoencoder_ is not None, self.input_spec_)

    def _check_scorer_available(self, name: str) -> None:
        check_scorer_available(name, self.signals())

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The class layer ``(W, b)`` with ``logits = features @ W.T + b``, for scorers
        that read it (ViM, ReAct): probed in float64 from the backbone's ``classify`` (so a
        scaled or otherwise wrapped linear head counts as it computes); None for a wrapped
        network, whose scorers fit it to the logits by least squares."""
        net = self.classifier_
        if not getattr(net, "splittable", False) or not hasattr(net, "feature_dim"):
            return None
        head = copy.deepcopy(net.head).cpu().double().eval()
        with torch.no_grad():
            bias = head(torch.zeros(1, net.feature_dim, dtype=torch.float64))[0]
            weight = (head(torch.eye(net.feature_dim, dtype=torch.float64)) - bias).T.contiguous()
        return weight, bias

    # ---------------------------------------------------------------- inference
    def _check_networks(self) -> None:
        if self.classifier_ is None:
            raise ConfigError("the recognizer has no networks yet: call fit() or from_pretrained() first")

    def _check_fitted(self) -> None:
        if not self.scorers_:
            raise ConfigError("the recognizer is not fitted: call fit() or from_pretrained() first")

    def _scorer_name(self, scorer: str | None) -> str:
        """``scorer`` (default: the decision scorer), checked against the fitted scorers."""
        self._check_fitted()
        name = scorer or self.decision_scorer_
        if name not in self.scorers_:
            fitted = ", ".join(self.scorers_)
            if name in SCORERS:
                self._check_scorer_available(name)
                raise ConfigError(
                    f"scorer {name!r} was not fitted for this model (fitted: {fitted}); "
                    f"refit with scorers=[..., {name!r}] (--scorers)"
                )
            raise ConfigError(f"unknown scorer {name!r}; choose from {fitted}")
        return name

    def _as_input(self, x: ImagesLike) -> torch.Tensor:
        """Images as the float ``(N, C, H, W)`` batch this model's input spec asks for."""
        self._check_networks()
        return as_input_tensor(x, self.input_spec_)

    @torch.inference_mode()
    def _input_chunks(self, x: ImagesLike | ImageSet, batch_size: int) -> list[torch.Tensor] | Iterator:
        """``x`` as float batches in the model's spec; an ``ImageSet`` stays uint8 until
        each batch is needed (at 224 pixels a float copy of a whole set is 0.6 MB an image)."""
        if isinstance(x, LazyImageSet):  # decoded batch by batch in DataLoader workers
            return x.to_spec(self.input_spec_).float_chunks(batch_size)
        if isinstance(x, ImageSet):
            images = x.to_spec(self.input_spec_).images
            return (images[i : i + batch_size].float().div_(255.0) for i in range(0, len(images), batch_size))
        return list(self._as_input(x).split(batch_size))

    @torch.inference_mode()
    def outputs(
        self,
        x: ImagesLike,
        batch_size: int = 1024,
        progress: bool = False,
        signals: frozenset[str] | None = None,
    ) -> ModelOutputs:
        """Logits and penultimate features of images ``x``, and the optional signals
        ``signals`` (default: those the fitted scorers read): reconstruction errors
        (``recon_error``, None without an autoencoder) and the flattened pixels
        (``pixels``)."""
        self._check_networks()
        needs = self.needed_signals() if signals is None else frozenset(signals)
        pixels = "pixels" in needs
        reconstruct = "recon_error" in needs
        engine = self.engine()
        n = len(x) if isinstance(x, (ImageSet, LazyImageSet)) else None
        total = -(-n // batch_size) if n is not None else None
        parts = []
        chunks = self._input_chunks(x, batch_size)
        for chunk in tqdm(
            chunks, total=total, desc="scoring", unit="batch", disable=not progress, leave=False
        ):
            logits, feats, err = engine(chunk, reconstruct=reconstruct)
            flat = chunk.reshape(len(chunk), -1).numpy() if pixels else None
            parts.append(
                ModelOutputs(logits.numpy(), feats.numpy(), None if err is None else err.numpy(), flat)
            )
        if not parts:
            raise DataError("no images given")
        return ModelOutputs.concat(parts)

    def scores_from_outputs(self, outputs: ModelOutputs) -> dict[str, np.ndarray]:
        """Every scorer's score (larger = more likely unknown) for precomputed outputs.

        Each base scorer runs once; the fusions reuse their members' scores."""
        self._check_fitted()
        with single_threaded_blas():
            scores = {
                name: scorer.score(outputs)
                for name, scorer in self.scorers_.items()
                if not isinstance(scorer, FusionScorer)
            }
            for name, scorer in self.scorers_.items():
                if isinstance(scorer, FusionScorer):
                    scores[name] = scorer.score(outputs, scores)
        return {name: scores[name] for name in self.scorers_}

    def score_all(self, x: ImagesLike) -> dict[str, np.ndarray]:
        """Every scorer's score for images ``x``."""
        return self.scores_from_outputs(self.outputs(x))

    def score_samples(self, x: ImagesLike, scorer: str | None = None) -> np.ndarray:
        """Unknown-ness score of ``scorer`` (default: the decision scorer); larger = more
        likely unknown. Note: the opposite sign of scikit-learn's outlier detectors."""
        name = self._scorer_name(scorer)
        outputs = self.outputs(x)
        with single_threaded_blas():
            return self.scorers_[name].score(outputs)

    def decide(
        self, outputs: ModelOutputs, scorer: str | None = None, scores: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Class index per input, or -1 where ``scorer``'s score exceeds its threshold or
        is not finite (NaN or infinity: unknown, ``calibration.rejects``; ``scores``: every
        scorer's scores already computed on ``outputs``, by name)."""
        name = self._scorer_name(scorer)
        if scores is not None and name in scores:
            s = scores[name]
        else:
            with single_threaded_blas():
                s = self.scorers_[name].score(outputs)
        return np.where(rejects(s, self.thresholds_[name]), UNKNOWN, outputs.predictions)

    def predict(self, x: ImagesLike, scorer: str | None = None) -> np.ndarray:
        """Class index per image, or -1 for unknown."""
        return self.decide(self.outputs(x), scorer)

    def reconstruct(self, x: ImagesLike) -> torch.Tensor:
        """The autoencoder's reconstructions ``(N, C, H, W)``, on the CPU."""
        if self.autoencoder_ is None:
            raise ConfigError("this model has no autoencoder, so there are no reconstructions")
        with torch.inference_mode():
            return self.autoencoder_(self._as_input(x).to(self.device_)).cpu()


def sharded_outputs(model: object, x: object, signals: frozenset[str]) -> object:
    """``model.outputs(x, signals=signals)`` (a recognizer's ``ModelOutputs``), computed
    in parts across the ranks and gathered (``map_sharded``) under a process group."""
    if not distributed.active() or not hasattr(x, "__len__"):
        return model.outputs(x, signals=signals)

    def rows(part: slice) -> object:
        return x.subset(part) if hasattr(x, "subset") else x[part]

    return distributed.map_sharded(
        lambda part: model.outputs(rows(part), signals=signals), len(x), ModelOutputs.concat
    )
