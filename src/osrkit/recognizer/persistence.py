"""The model folder: what a recognizer needs travels with it, and loads back alike.

A folder holds ``config.json`` (format, classes, input spec, backbone name and options,
autoencoder or none, scorers with their state, thresholds, the training recipe, the
model's health as ``fit`` found it), ``classifier.safetensors``, ``autoencoder.safetensors``
(when there is one) and ``scorers.safetensors`` (the scorers' arrays). Nothing is pickled: the architecture is
recorded by its registered backbone name and options and rebuilt from the registry, so a
model folder can never run code of its own.

``config.json`` records the SHA-256 of each weight file (``sha256``), checked on loading;
a NaN or infinite threshold or calibration value is refused (``osrkit.files.integrity``).
``overwrite=True`` replaces only an osrkit model folder (``osrkit.files.ownership``).

Format versions: 3 (this one); 2 (osrkit 0.1 with seven scorers) and 1 (the seed: msp,
reconstruction, combined) still load, as the 1x28x28 ``small_cnn`` with an autoencoder,
and give the same scores.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import safetensors.numpy
import safetensors.torch
import torch

from osrkit._version import __version__
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError, ModelFormatError, OsrkitError
from osrkit.files.atomic import atomic_directory, atomic_write_bytes, atomic_write_json
from osrkit.files.config_json import read_config
from osrkit.files.integrity import CHECKSUMS_KEY, check_finite_arrays, checksums_of, read_verified, sha256_hex
from osrkit.files.ownership import MODEL_FORMAT, check_replaceable_model
from osrkit.hardware import resolve_device
from osrkit.models import AutoencoderConfig, ConvAutoencoder, backbone_entry, create_backbone
from osrkit.recognizer.engine import FastPaths
from osrkit.recognizer.health import ModelHealth
from osrkit.scorers import SCORERS, FusionScorer, Scorer, create_scorer, scorer_from_state
from osrkit.training.config import TrainConfig

log = logging.getLogger(__name__)


class FittedRecognizer(Protocol):
    """What this module reads from and sets on an ``OpenSetRecognizer``. Typed by shape:
    the estimator imports this module, so this module does not import the estimator."""

    class_names_: list[str]
    accept_rate_: float
    decision_scorer_: str
    device_: torch.device
    classifier_: Any
    autoencoder_: ConvAutoencoder | None
    scorers_: dict[str, Scorer]
    thresholds_: dict[str, float]
    input_spec_: InputSpec
    pretrained_: bool
    train_config_: TrainConfig | None
    health_: ModelHealth | None

    def check_params(self) -> Any: ...
    def set_params(self, **params: Any) -> Any: ...
    def engine(self) -> Any: ...


R = TypeVar("R", bound=FittedRecognizer)

FORMAT = MODEL_FORMAT  # "osrkit-recognizer", written first in config.json
FORMAT_VERSION = 3
READABLE_FORMAT_VERSIONS = (1, 2, 3)
SCORER_ARRAYS = "scorers.safetensors"  # array state of the scorers (kNN bank, means, bases)


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def config_dict(model: FittedRecognizer) -> dict[str, Any]:
    """The JSON config of a fitted recognizer."""
    model._check_fitted()
    clf = model.classifier_
    if not getattr(clf, "backbone_name", ""):
        raise ConfigError(
            "this wrapped classifier cannot be saved: name the registered backbone that builds its "
            "architecture, from_classifier(..., backbone='name') (see osrkit.register_backbone)"
        )
    train = model.train_config_
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class_names": model.class_names_,
        "accept_rate": model.accept_rate_,
        "decision_scorer": model.decision_scorer_,
        "thresholds": model.thresholds_,
        "scorers": {name: s.get_state() for name, s in model.scorers_.items()},
        "input_spec": model.input_spec_.to_dict(),
        "backbone": {
            "name": clf.backbone_name,
            "options": clf.backbone_options,
            "pretrained": model.pretrained_,
        },
        "autoencoder": model.autoencoder_.config.to_dict() if model.autoencoder_ is not None else None,
        "training": train.to_dict() if train else None,
        # what fit found of the model's health (osrkit.recognizer.health); None: not known
        "health": model.health_.to_dict() if model.health_ is not None else None,
        # Thresholds hold for the arithmetic they were calibrated with; a machine that
        # resolves the fast paths differently gets a warning on loading.
        "runtime": {
            "calibrated_with": model.engine().fast.describe(),
            "device": model.device_.type,
            "training_bf16": train.bf16_on(model.device_) if train else None,
        },
        "versions": {"osrkit": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def save_pretrained(model: FittedRecognizer, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` to folder ``path``, atomically (see the module docstring)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file, not a model folder; choose another path")
    if path.exists() and not overwrite and any(path.iterdir()):
        raise ConfigError(f"model folder {path} already exists; pass overwrite=True (--overwrite)")
    if overwrite:
        check_replaceable_model(path)
    config = config_dict(model)
    arrays = {
        f"{name}.{key}": np.ascontiguousarray(value)
        for name, scorer in model.scorers_.items()
        for key, value in scorer.get_arrays().items()
    }
    files = {"classifier.safetensors": safetensors.torch.save(_contiguous(model.classifier_.state_dict()))}
    if model.autoencoder_ is not None:
        ae_state = _contiguous(model.autoencoder_.state_dict())
        files["autoencoder.safetensors"] = safetensors.torch.save(ae_state)
    if arrays:
        files[SCORER_ARRAYS] = safetensors.numpy.save(arrays)
    config[CHECKSUMS_KEY] = {name: sha256_hex(data) for name, data in files.items()}
    with atomic_directory(path, overwrite=True) as tmp:
        # every file through atomic_write_bytes: one file mode (the umask's) for the folder
        for name, data in files.items():
            atomic_write_bytes(tmp / name, data)
        atomic_write_json(tmp / "config.json", config)
    return path


def _folders_in(folder: Path) -> list[str]:
    """The names of the folders in ``folder`` (none where it cannot be listed)."""
    try:
        return [p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []


def _read_config(path: Path) -> dict[str, Any]:
    config_path = path / "config.json"
    if not path.exists():
        near = difflib.get_close_matches(path.name, _folders_in(path.parent), n=1)
        hint = f"did you mean {path.parent / near[0]}?" if near else "check the path"
        raise ModelFormatError(f"model folder {path} does not exist; {hint} (`osrkit train` writes one)")
    if not path.is_dir():
        onnx = "; an ONNX export is read with --backend onnx" if path.suffix.lower() == ".onnx" else ""
        raise ModelFormatError(f"{path} is a file, not a model folder (one written by `osrkit train`){onnx}")
    if not config_path.is_file():
        raise ModelFormatError(
            f"{path} is not an osrkit model folder (no config.json); train one with `osrkit train`"
        )
    cfg = read_config(config_path)  # JSON, finite numbers, shallow nesting: else one line
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise ModelFormatError(f"{config_path}: not an osrkit model folder")
    version = cfg.get("format_version")
    if type(version) is not int:  # true and 1.0 compare equal to 1 but were never written
        version = None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ModelFormatError(
            f"{path} was written by a newer osrkit (model format {version}; this one reads up to "
            f"{FORMAT_VERSION}); upgrade osrkit"
        )
    if version not in READABLE_FORMAT_VERSIONS:
        versions = ", ".join(map(str, READABLE_FORMAT_VERSIONS))
        raise ModelFormatError(f"{config_path}: not an osrkit model of format version {versions}")
    names = cfg.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelFormatError(
            f"{config_path}: class_names must be a non-empty list of strings; restore the file from "
            "a backup, or save or train the model again"
        )
    return cfg


def _architecture(cfg: dict[str, Any]) -> tuple[InputSpec, str, dict, AutoencoderConfig | None]:
    """Input spec, backbone name and options, autoencoder config of a config of any version."""
    if cfg["format_version"] < 3:  # the seed's digit network, always with an autoencoder
        clf = cfg["classifier"]
        options = {
            "channels": list(clf["channels"]),
            "feature_dim": clf["feature_dim"],
            "dropout": clf["dropout"],
        }
        return (
            InputSpec.from_legacy(cfg.get("preprocessing")),
            "small_cnn",
            options,
            AutoencoderConfig.from_dict(cfg["autoencoder"]),
        )
    backbone = cfg["backbone"]
    ae = AutoencoderConfig.from_dict(cfg["autoencoder"]) if cfg.get("autoencoder") else None
    name, options = str(backbone["name"]), dict(backbone.get("options", {}))
    # an option the folder does not record means what it meant when it was saved (an
    # unknown backbone is reported by the caller)
    with contextlib.suppress(ConfigError):
        options = backbone_entry(name).unrecorded_options | options
    return InputSpec.from_dict(cfg["input_spec"]), name, options, ae


def _load_network(
    build: Callable[[], torch.nn.Module], file: Path, checksums: dict[str, str] | None
) -> torch.nn.Module:
    """``build()`` with the weights of ``file``, read once and checked against
    ``checksums``. The network is built on the meta device first (no memory) and its shapes
    compared with the file's, so a damaged config.json that asks for a network of gigabytes
    is refused in one line instead of allocated and initialised."""
    state = safetensors.torch.load(read_verified(file, checksums, file.parent / "config.json"))
    try:
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except Exception:  # not buildable on meta: load_state_dict below says what does not fit
        shapes = {}
    for key, shape in shapes.items():
        if key not in state or tuple(state[key].shape) != shape:
            held = "no such tensor" if key not in state else f"shape {tuple(state[key].shape)}"
            raise ModelFormatError(
                f"{file.parent / 'config.json'} describes a network whose {key!r} has shape {shape}, "
                f"but {file.name} holds {held}; restore the folder from a backup, or save or train "
                "the model again"
            )
    module = build()
    module.load_state_dict(state)
    return module.eval()


def load_pretrained(
    cls: type[R],
    path: str | os.PathLike,
    fast_paths: FastPaths | None = None,
    device: str | torch.device = "auto",
) -> R:
    """Load a model folder of any readable format version (no pickle involved)."""
    path = Path(path)
    cfg = _read_config(path)
    checksums = checksums_of(cfg, path)
    resolve_device(device)  # a device this machine lacks is the device's fault, not the folder's
    try:
        spec, name, options, ae_cfg = _architecture(cfg)
        try:
            backbone_entry(name)
        except ConfigError:
            raise ModelFormatError(
                f"model folder {path} uses backbone {name!r}, which this osrkit lacks; upgrade osrkit, "
                f"install the extra that provides it, or register it (osrkit.register_backbone)"
            ) from None
        check_scorer_known(cfg["decision_scorer"], path)
        class_names = cfg["class_names"]
        # the saved parameters, as the constructor takes them; what they resolve to and
        # what the folder holds are the fitted attributes
        model = cls(
            class_names,
            cfg["accept_rate"],
            cfg["decision_scorer"],
            fast_paths=fast_paths,
            device=device,
            backbone=name,
            backbone_options=options,
            autoencoder=ae_cfg or False,
        )
        params = model.check_params()
        model.class_names_, model.device_ = params.class_names, params.device
        model.accept_rate_, model.decision_scorer_ = params.accept_rate, params.decision_scorer
        model.classifier_ = _load_network(
            lambda: create_backbone(name, spec, len(class_names), for_loading=True, **options),
            path / "classifier.safetensors",
            checksums,
        )
        model.autoencoder_ = (
            _load_network(lambda: ConvAutoencoder(ae_cfg, spec), path / "autoencoder.safetensors", checksums)
            if ae_cfg is not None
            else None
        )
        model.classifier_.to(params.device)
        if model.autoencoder_ is not None:
            model.autoencoder_.to(params.device)
        model.input_spec_ = spec
        model.pretrained_ = bool(cfg.get("backbone", {}).get("pretrained", False))
        model.scorers_ = _load_scorers(cfg, path, checksums)
        # recalibrating fits the same scorers with the same hyper-parameters
        model.set_params(scorers=[create_scorer(n, **s.get_params()) for n, s in model.scorers_.items()])
        model.thresholds_ = {k: float(v) for k, v in cfg["thresholds"].items()}
        required = {model.decision_scorer_, *model.scorers_, *model.thresholds_}
        missing = required - (model.scorers_.keys() & model.thresholds_.keys())
        if missing:
            raise ModelFormatError(
                f"{path / 'config.json'} lacks scorer state or thresholds for {sorted(missing)}"
            )
        for scorer_name in model.scorers_:
            model._check_scorer_available(scorer_name)
        if cfg.get("training"):
            model.train_config_ = TrainConfig.from_dict(cfg["training"])
        if cfg.get("health") is not None:
            model.health_ = ModelHealth.from_dict(cfg["health"])
        # One blank image through every scorer: arrays that do not fit the networks
        # (a scorers.safetensors from another model) fail here, not in predict().
        model.scores_from_outputs(model.outputs(torch.zeros(1, *spec.shape)))
    except ModelFormatError:
        raise
    except (
        LookupError,  # KeyError, and IndexError from a list too short
        TypeError,
        ValueError,
        AttributeError,
        ArithmeticError,  # OverflowError from a number too large for a tensor size
        RuntimeError,
        OsrkitError,
        safetensors.SafetensorError,
    ) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFormatError(f"model folder {path} is damaged or incompatible: {first}") from None
    runtime = cfg.get("runtime")
    calibrated = runtime.get("calibrated_with") if isinstance(runtime, dict) else None
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


def check_scorer_known(name: str, path: Path) -> None:
    """One line when a model folder names a scorer this osrkit does not have."""
    if name not in SCORERS:
        raise ModelFormatError(
            f"model folder {path} uses scorer {name!r}, which this osrkit lacks; upgrade osrkit "
            f"(registered scorers: {', '.join(SCORERS)})"
        )


def _load_scorers(cfg: dict[str, Any], path: Path, checksums: dict[str, str] | None) -> dict[str, Scorer]:
    arrays_path = path / SCORER_ARRAYS
    arrays = {}
    if arrays_path.is_file():
        arrays = safetensors.numpy.load(read_verified(arrays_path, checksums, path / "config.json"))
        check_finite_arrays(arrays, arrays_path)
    scorers: dict[str, Scorer] = {}
    for name, state in cfg["scorers"].items():
        members = state.get("members", []) if isinstance(state, dict) else []
        for used in (name, *members):
            check_scorer_known(used, path)
        if SCORERS[name].arrays and not arrays:
            raise ModelFormatError(f"model folder {path} lacks {SCORER_ARRAYS} (needed by {name!r})")
        prefix = f"{name}."
        own = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        scorers[name] = scorer_from_state(name, state, own)
    for scorer in scorers.values():
        if isinstance(scorer, FusionScorer):
            scorer.bind(scorers)
    return scorers
