"""``OpenSetRecognizer``: classifier + autoencoder + calibrated scorers, in one object.

Follows scikit-learn's habits (``fit`` returns self, fitted attributes end in ``_``,
``predict`` returns a class index or -1 for unknown) and Hugging Face's
``save_pretrained``/``from_pretrained`` folder layout.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import __version__
from .calibration import check_accept_rate, threshold_at_accept_rate
from .data.imageset import ImageSet
from .data.preprocess import preprocess_image
from .errors import ConfigError, DataError, ModelFormatError, OsrkitError
from .io import atomic_directory, atomic_write_json
from .models import AutoencoderConfig, Classifier, ClassifierConfig, ConvAutoencoder
from .runtime import FastPaths, InferenceEngine, single_threaded_blas
from .scorers import SCORERS, FusionScorer, ModelOutputs, Scorer, make_scorer
from .training import (
    Checkpointer,
    TrainConfig,
    data_fingerprint,
    stratified_split,
    train_autoencoder,
    train_classifier,
)

log = logging.getLogger(__name__)

FORMAT = "osrkit-recognizer"
FORMAT_VERSION = 2
# Version 1 (osrkit <= the seed): msp, reconstruction and combined only, no scorer arrays.
READABLE_FORMAT_VERSIONS = (1, 2)
SCORER_ARRAYS = "scorers.safetensors"  # array state of the scorers (kNN bank, means, bases)
UNKNOWN = -1
PREPROCESSING = {
    "size": [28, 28],
    "channels": 1,
    "grayscale": "ITU-R 601-2 luma (Pillow convert('L'))",
    "resize": "bilinear, antialiased (Pillow resize)",
    "scale": "uint8 / 255 -> [0, 1]",
    "invert": False,
}

ImagesLike = torch.Tensor | np.ndarray | ImageSet | Image.Image | Sequence[Image.Image | str | os.PathLike]


def as_input_tensor(x: ImagesLike, invert: bool = False) -> torch.Tensor:
    """Coerce images to a float tensor ``(N, 1, 28, 28)`` in [0, 1], checking shape and values.

    Accepts an ``ImageSet``; a uint8 array/tensor (values 0..255) or a float one (values in
    [0, 1]) of shape ``(28, 28)``, ``(N, 28, 28)`` or ``(N, 1, 28, 28)``; a PIL image; or a
    list of PIL images or file paths (any size, grayscale or RGB; preprocessed).
    """
    if isinstance(x, ImageSet):
        return x.as_float()
    if isinstance(x, Image.Image):
        return preprocess_image(x, invert=invert).unsqueeze(0)
    if isinstance(x, (list, tuple)):
        if not x:
            raise DataError("no images given")
        return torch.stack([preprocess_image(item, invert=invert) for item in x])
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DataError(
            f"cannot read images from a {type(x).__name__}; pass a tensor, array, "
            "ImageSet, PIL image or list of paths"
        )
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise DataError(
            f"images must have shape (N, 1, 28, 28) or (N, 28, 28), got {tuple(x.shape)}; "
            "use osrkit.preprocess_image for other sizes or RGB"
        )
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise DataError(f"images must be uint8 (0..255) or float (0..1), got {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise DataError("images contain NaN or infinite values")
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(f"float images must lie in [0, 1], got values in [{x.min():.3g}, {x.max():.3g}]")
    return x


@dataclass
class FitReport:
    """What ``fit`` did: split sizes and each network's training history."""

    train_size: int
    val_size: int
    classifier: dict
    autoencoder: dict


class OpenSetRecognizer:
    """Classifies known classes and rejects unknown inputs.

    Parameters
    ----------
    class_names: names of the known classes.
    accept_rate: fraction of known validation inputs each threshold accepts.
    decision_scorer: which scorer ``predict`` uses (``combined`` by default).
    fast_paths: CPU inference fast paths (default: all that this CPU supports, unless
        ``OSRKIT_FAST=0``); ``FastPaths.off()`` is the plain float32 reference path.
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        accept_rate: float = 0.95,
        decision_scorer: str = "combined",
        classifier_config: ClassifierConfig | None = None,
        autoencoder_config: AutoencoderConfig | None = None,
        fast_paths: FastPaths | None = None,
    ) -> None:
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(10)]
        self.accept_rate = check_accept_rate(accept_rate)
        if decision_scorer not in SCORERS:
            raise ConfigError(f"unknown scorer {decision_scorer!r}; choose from {', '.join(SCORERS)}")
        self.decision_scorer = decision_scorer
        self.classifier_config = classifier_config or ClassifierConfig(num_classes=len(self.class_names))
        if self.classifier_config.num_classes != len(self.class_names):
            raise ConfigError("classifier num_classes differs from the number of class names")
        self.autoencoder_config = autoencoder_config or AutoencoderConfig()
        self.classifier_ = Classifier(self.classifier_config).eval()
        self.autoencoder_ = ConvAutoencoder(self.autoencoder_config).eval()
        self.scorers_: dict[str, Scorer] = {}
        self.thresholds_: dict[str, float] = {}
        self.train_config_: TrainConfig | None = None
        self.fit_report_: FitReport | None = None
        self._fast_paths = fast_paths or FastPaths.default()
        self._engine: InferenceEngine | None = None
        self._engine_version: tuple = ()

    @property
    def fast_paths(self) -> FastPaths:
        """The inference fast paths; setting them rebuilds the inference engine."""
        return self._fast_paths

    @fast_paths.setter
    def fast_paths(self, value: FastPaths) -> None:
        self._fast_paths = value
        self._engine = None

    def _weights_version(self) -> tuple:
        """Changes whenever a network is replaced or its tensors are modified in place
        (``load_state_dict``, an optimiser step): the engine's copies are then stale."""
        nets = (self.classifier_, self.autoencoder_)
        return tuple(id(n) for n in nets) + tuple(
            t._version for n in nets for t in (*n.parameters(), *n.buffers())
        )

    def engine(self) -> InferenceEngine:
        """The inference engine for the current weights (rebuilt when they change)."""
        version = self._weights_version()
        if self._engine is None or self._engine_version != version:
            self._engine = InferenceEngine(self.classifier_, self.autoencoder_, self._fast_paths)
            self._engine_version = version
        return self._engine

    # ---------------------------------------------------------------- fitting
    def fit(
        self,
        train: ImageSet,
        config: TrainConfig = TrainConfig(),
        checkpoint_dir: str | os.PathLike | None = None,
        progress: bool = False,
    ) -> OpenSetRecognizer:
        """Train both networks from scratch on ``train`` (known classes only) and calibrate
        thresholds on a seeded, stratified validation split of it. Returns self.

        ``config.seed`` fixes the split, the initial weights, shuffling, augmentation and
        dropout (it seeds torch's global generator, as ``torch.manual_seed`` does).
        """
        if train.class_names != self.class_names:
            raise ConfigError(
                f"training classes {train.class_names} differ from the recognizer's {self.class_names}"
            )
        tr, va = stratified_split(train.labels, config.val_size, config.seed)
        images, labels = train.images[tr], train.labels[tr]
        val_images, val_labels = train.images[va], train.labels[va]
        torch.manual_seed(config.seed)
        self.classifier_ = Classifier(self.classifier_config)
        self.autoencoder_ = ConvAutoencoder(self.autoencoder_config)
        self._engine = None
        ckpt = None
        if checkpoint_dir:
            identity = config.to_dict() | {
                "class_names": self.class_names,
                "classifier": self.classifier_config.to_dict(),
                "autoencoder": self.autoencoder_config.to_dict(),
                "data": data_fingerprint(train.images, train.labels),
            }
            ckpt = Checkpointer(checkpoint_dir, identity)
        clf_info = train_classifier(
            self.classifier_, images, labels, val_images, val_labels, config, ckpt, progress
        )
        ae_info = train_autoencoder(self.autoencoder_, images, val_images, config, ckpt, progress)
        self._engine = None
        self.train_config_ = config
        self.fit_report_ = FitReport(len(tr), len(va), clf_info, ae_info)
        self.calibrate(val_images, reference=images, reference_labels=labels)
        return self

    def calibrate(
        self,
        known: ImagesLike,
        accept_rate: float | None = None,
        reference: ImagesLike | None = None,
        reference_labels: torch.Tensor | np.ndarray | None = None,
    ) -> OpenSetRecognizer:
        """Fit every scorer and set every threshold, on known-class images only.

        ``known``: known VALIDATION images; every threshold and the fusions' calibration
        come from them. ``reference``: known TRAINING images (those the networks were
        trained on), on which the scorers with parameters (``mahalanobis``, ``knn``,
        ``class_reconstruction``) are fitted, never on ``known``: a kNN bank holding the
        calibration images would score them at distance 0. ``reference_labels``: their
        classes (default: ``reference.labels`` for an ``ImageSet``, else the classifier's
        predictions). ``fit`` passes its training split.

        Without ``reference``, ``known`` is split in two halves by a seeded (seed 0)
        random permutation: the first fits the scorers with parameters (labelled by
        ``known.labels`` for an ``ImageSet``, else by the classifier's predictions), the
        second sets the thresholds.
        """
        if accept_rate is not None:
            self.accept_rate = check_accept_rate(accept_rate)
        known_labels = known.labels if isinstance(known, ImageSet) else None
        known = as_input_tensor(known)
        if reference is None:
            if len(known) < 2:
                raise DataError("calibration without reference images needs at least 2 known images")
            perm = np.random.default_rng(0).permutation(len(known))
            ref_index, cal_index = np.sort(perm[: len(known) // 2]), np.sort(perm[len(known) // 2 :])
            reference, known = known[torch.from_numpy(ref_index)], known[torch.from_numpy(cal_index)]
            if known_labels is not None and reference_labels is None:
                reference_labels = known_labels[torch.from_numpy(ref_index)]
        elif reference_labels is None and isinstance(reference, ImageSet):
            reference_labels = reference.labels
        if isinstance(reference_labels, torch.Tensor):
            reference_labels = reference_labels.numpy()
        reference_outputs = self.outputs(reference)
        outputs = self.outputs(known)
        scorers: dict[str, Scorer] = {}
        scores: dict[str, np.ndarray] = {}
        thresholds: dict[str, float] = {}
        for name, cls in SCORERS.items():
            if issubclass(cls, FusionScorer):
                continue
            if cls.fits_on_reference:
                scorers[name] = cls().fit(reference_outputs, self.accept_rate, labels=reference_labels)
            else:
                scorers[name] = cls().fit(outputs, self.accept_rate)
            scores[name] = scorers[name].score(outputs)
            thresholds[name] = threshold_at_accept_rate(scores[name], self.accept_rate)
        for name, cls in SCORERS.items():
            if issubclass(cls, FusionScorer):
                members = [scorers[m] for m in cls.MEMBERS]
                scorers[name] = cls(members).fit(outputs, self.accept_rate, scores=scores)
                thresholds[name] = 1.0  # the OR rule, by construction of its scale
        self.scorers_ = {name: scorers[name] for name in SCORERS}
        self.thresholds_ = {name: thresholds[name] for name in SCORERS}
        log.info(
            "fitted scorers on %d known training images, calibrated on %d known images: %s",
            len(reference_outputs),
            len(outputs),
            self.thresholds_,
        )
        return self

    # ---------------------------------------------------------------- inference
    def _check_fitted(self) -> None:
        if not self.scorers_:
            raise ConfigError("the recognizer is not fitted: call fit() or from_pretrained() first")

    def _scorer_name(self, scorer: str | None) -> str:
        """``scorer`` (default: the decision scorer), checked against the fitted scorers."""
        self._check_fitted()
        name = scorer or self.decision_scorer
        if name not in self.scorers_:
            raise ConfigError(f"unknown scorer {name!r}; choose from {', '.join(self.scorers_)}")
        return name

    @torch.inference_mode()
    def outputs(self, x: ImagesLike, batch_size: int = 1024, progress: bool = False) -> ModelOutputs:
        """Logits, penultimate features, reconstruction errors and flattened pixels for
        images ``x``."""
        x = as_input_tensor(x)
        engine = self.engine()
        parts = []
        chunks = x.split(batch_size)
        for chunk in tqdm(chunks, desc="scoring", unit="batch", disable=not progress, leave=False):
            logits, feats, err = engine(chunk)
            pixels = chunk.reshape(len(chunk), -1).numpy()
            parts.append(ModelOutputs(logits.numpy(), feats.numpy(), err.numpy(), pixels))
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

    def decide(self, outputs: ModelOutputs, scorer: str | None = None) -> np.ndarray:
        """Class index per input, or -1 where ``scorer``'s score exceeds its threshold."""
        name = self._scorer_name(scorer)
        with single_threaded_blas():
            s = self.scorers_[name].score(outputs)
        return np.where(s > self.thresholds_[name], UNKNOWN, outputs.predictions)

    def predict(self, x: ImagesLike, scorer: str | None = None) -> np.ndarray:
        """Class index per image, or -1 for unknown."""
        return self.decide(self.outputs(x), scorer)

    def reconstruct(self, x: ImagesLike) -> torch.Tensor:
        """The autoencoder's reconstructions ``(N, 1, 28, 28)``."""
        with torch.inference_mode():
            return self.autoencoder_(as_input_tensor(x))

    # ---------------------------------------------------------------- persistence
    def config_dict(self) -> dict[str, Any]:
        """The JSON config saved beside the weights."""
        self._check_fitted()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "class_names": self.class_names,
            "accept_rate": self.accept_rate,
            "decision_scorer": self.decision_scorer,
            "thresholds": self.thresholds_,
            "scorers": {name: s.get_state() for name, s in self.scorers_.items()},
            "classifier": self.classifier_config.to_dict(),
            "autoencoder": self.autoencoder_config.to_dict(),
            "preprocessing": PREPROCESSING,
            "training": self.train_config_.to_dict() if self.train_config_ else None,
            # Thresholds hold for the arithmetic they were calibrated with; a machine that
            # resolves the fast paths differently gets a warning on loading.
            "runtime": {
                "calibrated_with": self.engine().fast.describe(),
                "training_bf16": self.train_config_.use_bf16 if self.train_config_ else None,
            },
            "versions": {
                "osrkit": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }

    def scorer_arrays(self) -> dict[str, np.ndarray]:
        """Every scorer's array state, keyed ``<scorer>.<array>`` (the ``scorers.safetensors``
        file)."""
        self._check_fitted()
        return {
            f"{name}.{key}": np.ascontiguousarray(value)
            for name, scorer in self.scorers_.items()
            for key, value in scorer.get_arrays().items()
        }

    def save_pretrained(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write ``config.json``, the networks' safetensors weights and (when a scorer has
        array state) ``scorers.safetensors`` to folder ``path``, atomically."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path} is a file, not a model folder; choose another path")
        if path.exists() and not overwrite and any(path.iterdir()):
            raise ConfigError(f"model folder {path} already exists; pass overwrite=True (--overwrite)")
        with atomic_directory(path, overwrite=True) as tmp:
            safetensors.torch.save_file(
                _contiguous(self.classifier_.state_dict()), str(tmp / "classifier.safetensors")
            )
            safetensors.torch.save_file(
                _contiguous(self.autoencoder_.state_dict()), str(tmp / "autoencoder.safetensors")
            )
            arrays = self.scorer_arrays()
            if arrays:
                safetensors.numpy.save_file(arrays, str(tmp / SCORER_ARRAYS))
            atomic_write_json(tmp / "config.json", self.config_dict())
        return path

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, fast_paths: FastPaths | None = None
    ) -> OpenSetRecognizer:
        """Load a folder written by ``save_pretrained`` (no pickle involved); folders of
        format version 1 (msp, reconstruction and combined only) load too. Needs state and
        thresholds for the decision scorer and every scorer the config lists."""
        path = Path(path)
        config_path = path / "config.json"
        if not config_path.is_file():
            raise ModelFormatError(
                f"{path} is not an osrkit model folder (no config.json); train one with `osrkit train`"
            )
        try:
            cfg = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelFormatError(f"{config_path} is not valid JSON ({exc})") from None
        if (
            not isinstance(cfg, dict)
            or cfg.get("format") != FORMAT
            or cfg.get("format_version") not in READABLE_FORMAT_VERSIONS
        ):
            versions = " or ".join(map(str, READABLE_FORMAT_VERSIONS))
            raise ModelFormatError(f"{config_path}: not an osrkit model of format version {versions}")
        try:
            clf_cfg = ClassifierConfig(
                **(cfg["classifier"] | {"channels": tuple(cfg["classifier"]["channels"])})
            )
            ae_cfg = AutoencoderConfig(
                **(cfg["autoencoder"] | {"channels": tuple(cfg["autoencoder"]["channels"])})
            )
            model = cls(
                cfg["class_names"], cfg["accept_rate"], cfg["decision_scorer"], clf_cfg, ae_cfg, fast_paths
            )
            for module, fname in ((model.classifier_, "classifier"), (model.autoencoder_, "autoencoder")):
                weights = path / f"{fname}.safetensors"
                if not weights.is_file():
                    raise ModelFormatError(f"model folder {path} lacks {weights.name}")
                module.load_state_dict(safetensors.torch.load_file(str(weights)))
                module.eval()
            arrays_path = path / SCORER_ARRAYS
            arrays = safetensors.numpy.load_file(str(arrays_path)) if arrays_path.is_file() else {}
            scorers: dict[str, Scorer] = {}
            for name, state in cfg["scorers"].items():
                scorer = make_scorer(name)
                if scorer.fits_on_reference and not arrays:
                    raise ModelFormatError(f"model folder {path} lacks {SCORER_ARRAYS} (needed by {name!r})")
                prefix = f"{name}."
                own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
                scorers[name] = scorer.set_state(state, own)
            for scorer in scorers.values():
                if isinstance(scorer, FusionScorer):
                    scorer.bind(scorers)
            model.scorers_ = scorers
            model.thresholds_ = {k: float(v) for k, v in cfg["thresholds"].items()}
            required = {model.decision_scorer, *model.scorers_, *model.thresholds_}
            missing = required - (model.scorers_.keys() & model.thresholds_.keys())
            if missing:
                raise ModelFormatError(
                    f"{config_path} lacks scorer state or thresholds for {sorted(missing)}"
                )
            if cfg.get("training"):
                model.train_config_ = TrainConfig.from_dict(cfg["training"])
            # One blank image through every scorer: arrays that do not fit the networks
            # (a scorers.safetensors from another model) fail here, not in predict().
            model.scores_from_outputs(model.outputs(torch.zeros(1, 1, 28, 28)))
        except ModelFormatError:
            raise
        except (
            KeyError,
            TypeError,
            ValueError,
            AttributeError,
            RuntimeError,
            OsrkitError,
            safetensors.SafetensorError,
        ) as exc:
            raise ModelFormatError(f"model folder {path} is damaged or incompatible: {exc}") from None
        calibrated = (cfg.get("runtime") or {}).get("calibrated_with")
        here = model.engine().fast.describe()
        if calibrated and calibrated != here:
            log.warning(
                "%s was calibrated with fast paths %s but runs here with %s; scores near the "
                "thresholds may decide differently (recalibrate, or set fast_paths to match)",
                path,
                calibrated,
                here,
            )
        return model


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.contiguous() for k, v in state.items()}
