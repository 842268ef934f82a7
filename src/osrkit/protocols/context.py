"""The shared state of a benchmark run: data root, training options, loaded datasets and
the cache of trained models."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from osrkit._version import __version__
from osrkit.data.catalog import load_dataset
from osrkit.data.imageset import ImageSet
from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import OsrkitError
from osrkit.files.atomic import atomic_write_json
from osrkit.hardware import mm_gflops, native_bf16
from osrkit.models import backbone_entry, default_backbone
from osrkit.protocols.unknowns import gaussian_noise, uniform_noise
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.scorers import scorer_class
from osrkit.training.config import TrainConfig
from osrkit.training.flops import training_flops
from osrkit.training.loop import data_fingerprint, stratified_split
from osrkit.training.recipe import size_recipe

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Shared state of a benchmark run: where data and results live, training options,
    and the cache of trained models."""

    out: Path
    data_root: str | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    download: bool = False
    progress: bool = False
    max_train: int | None = None  # for quick runs and tests: subsample the training data
    max_test: int | None = None  # ... and every test set
    # None: each model's default rule (osrkit.scorers.selection.default_decision_scorer), declared
    # before any protocol was run: fusion for the digit models, max_logit_knn for the colour
    # ones, from scratch or pretrained (the backbone's decision_scorer; max_logit for
    # colour_cnn until issue "From scratch at the state of the art per FLOP"). Never picked
    # by unknown results.
    decision_scorer: str | None = None
    # Every dataset and noise set of the MNIST protocols is brought to this input spec.
    spec: InputSpec = MNIST_SPEC
    # Changes to the colour backbone's recipe (quick runs and tests only, e.g. fewer epochs).
    colour_overrides: dict = field(default_factory=dict)
    # Options of colour_cnn, the colour network trained from scratch, over its registered ones
    # (quick runs and tests only, e.g. a narrower network).
    colour_options: dict = field(default_factory=dict)
    # The pretrained track: colour models start from ImageNet weights (efficientnet_lite0,
    # its recipe sized from the data). False: every network trains from scratch, as the
    # literature's protocols require.
    pretrained: bool = False
    # Each network a protocol used (trained now or reused from the cache): its training
    # compute (``compute_of``), for the protocol's report.
    trained: list[dict] = field(default_factory=list)
    _data: dict[tuple[str, InputSpec], ImageSet] = field(default_factory=dict, repr=False)
    _rates: dict[bool, float] = field(default_factory=dict, repr=False)
    # the recognizers fitted in this run, by cache key: the protocols of a group share them
    _fitted: dict[str, OpenSetRecognizer] = field(default_factory=dict, repr=False)

    def matrix_rate(self, bf16: bool) -> float:
        """This machine's ``torch.mm`` rate (GFLOP/s) in bfloat16 or float32, measured once
        per run: the FLOP bound every protocol's training compute is set against."""
        if bf16 not in self._rates:
            # emulated bfloat16 is slow: a smaller product measures it in a second or two
            n = 512 if bf16 and not native_bf16() else 2048
            self._rates[bf16] = mm_gflops(n=n, dtype=torch.bfloat16 if bf16 else torch.float32)
        return self._rates[bf16]

    def data(self, name: str, spec: InputSpec | None = None) -> ImageSet:
        """A dataset (or a noise set) in ``spec`` (default: this context's), loaded once
        per run; ``max_train`` limits training splits, ``max_test`` every other set."""
        spec = spec or self.spec
        if (name, spec) not in self._data:
            loader = {
                "uniform-noise": lambda: uniform_noise(spec=spec),
                "gaussian-noise": lambda: gaussian_noise(spec=spec),
            }.get(
                name,
                lambda: load_dataset(name, self.data_root, self.download, self.progress, input_spec=spec),
            )
            limit = self.max_train if name.endswith(":train") else self.max_test
            self._data[(name, spec)] = loader().take(limit, seed=0)
        return self._data[(name, spec)]

    @property
    def colour_config(self) -> TrainConfig:
        """The colour backbone's recipe with this context's seed and fast-path switches."""
        return TrainConfig.for_backbone("colour_cnn", **self._colour_fields())

    def _colour_fields(self) -> dict:
        """This context's seed and fast-path switches, with the colour recipe's overrides."""
        c = self.config
        return {"seed": c.seed, "channels_last": c.channels_last, "bf16": c.bf16} | self.colour_overrides

    def __post_init__(self) -> None:
        if self.decision_scorer is not None:
            scorer_class(self.decision_scorer)  # an unknown name: one line, before minutes of training

    def backbone(self, train: ImageSet) -> str:
        """The network this context trains on ``train``: the default one for its spec, from
        scratch unless this is the pretrained track."""
        return default_backbone(train.spec or InputSpec(*train.shape), self.pretrained)

    def sized_config(self, train: ImageSet) -> TrainConfig:
        """The recipe of this context's network for ``train``, sized from the data
        (``osrkit.training.recipe``), with this context's seed, fast-path switches and overrides."""
        name = self.backbone(train)
        return size_recipe(name, len(train), len(train.class_names), self._colour_fields()).config

    def recognizer(self, train: ImageSet, config: TrainConfig | None = None) -> OpenSetRecognizer:
        """A recognizer trained on ``train`` with ``config`` (default: this context's).

        The networks are cached in ``out/cache/<key>/`` and reused when the same data,
        classes, config, seed and osrkit version were trained before. The scorers and
        thresholds of a cached model are fitted again once per run (a context), on the same
        training and validation split, so a change to a scorer never reuses stale scorer
        state; the protocols of one run share the fitted recognizer (a colour network's
        scorers read six views of 45,000 training images).
        """
        config = config or (self.sized_config(train) if self.pretrained else self.config)
        backbone = self.backbone(train)
        options = self.colour_options if backbone == "colour_cnn" else {}
        key = cache_key(train, config, backbone, options)
        if key in self._fitted:
            log.info("reusing the recognizer fitted earlier in this run (%s)", key)
            model = self._fitted[key]
            self.trained.append(compute_of(model, self._fit_report_at(key), cached=True))
            return model
        folder = self.out / "cache" / key
        model = None
        if (folder / "config.json").is_file():
            try:
                model = OpenSetRecognizer.from_pretrained(folder)
                log.info("reusing the networks of cached model %s", folder)
            except OsrkitError as exc:  # a damaged cache entry is retrained, not fatal
                log.warning("cached model %s unusable (%s); retraining", folder, exc)
        if model is not None:
            model.scorers = "all"
            model.decision_scorer = self.decision_scorer or model.decision_scorer
            tr, va = stratified_split(train.labels, config.val_size, config.seed)
            model.calibrate(train.images[va], reference=train.images[tr], reference_labels=train.labels[tr])
        else:
            t0 = time.perf_counter()
            ckpt = self.out / "cache" / f"{key}.checkpoints"
            model = OpenSetRecognizer(
                train.class_names,
                decision_scorer=self.decision_scorer,
                scorers="all",
                backbone=backbone,
                backbone_options=options,
                pretrained=self.pretrained,
            )
            model.fit(train, config, ckpt, self.progress)
            log.info("trained on %s in %.1f s", train.name, time.perf_counter() - t0)
            model.save_pretrained(folder, overwrite=True)
            # how it was trained (epochs, validation, seconds), for the protocols that report it
            atomic_write_json(folder.with_suffix(".fit.json"), dataclasses.asdict(model.fit_report_))
            shutil.rmtree(ckpt, ignore_errors=True)
        self.trained.append(compute_of(model, self._fit_report_at(key), cached=model.fit_report_ is None))
        self._fitted[key] = model
        return model

    def fit_report(self, train: ImageSet, config: TrainConfig) -> dict | None:
        """The fit report (``FitReport`` as a dict) of the cached model ``recognizer`` trains
        on ``train`` with ``config``; None when there is none."""
        backbone = self.backbone(train)
        options = self.colour_options if backbone == "colour_cnn" else {}
        return self._fit_report_at(cache_key(train, config, backbone, options))

    def _fit_report_at(self, key: str) -> dict | None:
        path = self.out / "cache" / f"{key}.fit.json"
        return json.loads(path.read_text()) if path.is_file() else None


def compute_of(model: OpenSetRecognizer, report: dict | None, cached: bool) -> dict:
    """The training compute of ``model``'s classifier: FLOPs a training image (forward and
    backward, ``osrkit.training.flops``), epochs, images, PFLOP and training seconds (from
    its fit ``report``; None where unknown)."""
    history = (report or {}).get("classifier") or {}
    epochs = len(history.get("history", [])) or None
    per_image = training_flops(model.classifier_, model.input_spec_.shape)
    images = (report or {}).get("train_size")
    seconds = [h.get("train_s") for h in history.get("history", [])]
    return {
        "backbone": model.backbone_name_,
        "classes": len(model.class_names_),
        "train_images": images,
        "epochs": epochs,
        "flops_per_image": per_image,
        "pflop": per_image * images * epochs / 1e15 if images and epochs else None,
        "train_s": sum(seconds) if seconds and None not in seconds else None,
        "from_cache": cached,
    }


def cache_key(
    train: ImageSet, config: TrainConfig, backbone: str | None = None, options: dict | None = None
) -> str:
    """Identity of a trained model: data, classes, backbone (default: the from-scratch one
    for the data) and its options, training config (seed included), the CPU fast paths in
    effect and the osrkit version."""
    backbone = backbone or default_backbone(train.spec or InputSpec(*train.shape), pretrained=False)
    identity = {
        "data": data_fingerprint(train.images, train.labels),
        "classes": train.class_names,
        # the network a recognizer builds by default (its options change between versions)
        "backbone": {"name": backbone, "options": backbone_entry(backbone).options | (options or {})},
        "config": config.to_dict() | {"bf16_resolved": config.use_bf16},
        "osrkit": __version__,
    }
    blob = json.dumps(identity, sort_keys=True).encode()
    return hashlib.sha1(blob, usedforsecurity=False).hexdigest()[:16]
