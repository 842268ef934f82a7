"""The jobs behind the CLI, usable from Python as well: train, evaluate, run.

data -> model -> scores -> decision -> metrics -> report; each step is a call below.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from osrkit._deprecation import renamed
from osrkit.data.catalog import canonical_name, folder_of, load_dataset, native_spec
from osrkit.data.imageset import ImageSet
from osrkit.data.lazy import LazyImageSet, describe_source, open_image_folder
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError, OutputExistsError
from osrkit.evaluation import ReportOptions, confident_mistakes, evaluate, write_figures, write_report
from osrkit.files.atomic import atomic_write_json, staged_outputs
from osrkit.files.ownership import check_replaceable_model, check_replaceable_outputs
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.recognizer.params import check_several_classes
from osrkit.training import distributed
from osrkit.training.config import TrainConfig

log = logging.getLogger(__name__)

EVALUATION_OUTPUTS = ("metrics.json", "report.html", "plots")
RUN_OUTPUTS = ("model", *EVALUATION_OUTPUTS)


@dataclass
class JobData:
    """Which datasets a job (``train``, ``evaluate_model``, ``run``) uses: names like
    ``mnist:train`` or image-folder paths, and how much of each. Formerly ``DataSpec``:
    "spec" is kept for ``InputSpec``, what a model takes."""

    train: str = "mnist:train"
    known: str = "mnist:test"
    unknown: str = "cifar10"
    root: str | None = None
    download: bool = False
    max_train: int | None = None
    max_known: int | None = None
    max_unknown: int | None = None
    seed: int = 0
    memory_budget: int | None = None  # bytes; a larger training folder is read lazily (data.lazy)
    image_size: tuple[int, int] | None = None  # (height, width) instead of the data's own
    channels: int | None = None  # 1 or 3 instead of the data's own
    _input_spec: InputSpec | None = field(default=None, init=False, repr=False, compare=False)

    def input_spec(self) -> InputSpec:
        """The input spec of a model trained on ``train``: the dataset's own (MNIST family
        1x28x28, CIFAR-10 3x32x32, an image folder from its images), with ``image_size``
        and ``channels`` applied when given. Worked out once (a folder's means decoding a
        sample of its images)."""
        if self._input_spec is None:
            self._input_spec = self._resolve_input_spec()
        return self._input_spec

    def _resolve_input_spec(self) -> InputSpec:
        spec = native_spec(self.train, self.root)
        if self.image_size is not None:
            spec = spec.with_size(*self.image_size)
        if self.channels is not None and self.channels != spec.channels:
            spec = InputSpec(self.channels, spec.height, spec.width, spec.resize, invert=spec.invert)
        return spec

    def load(
        self, which: str, progress: bool = False, spec: InputSpec | None = None
    ) -> ImageSet | LazyImageSet:
        """Load ``train``, ``known`` or ``unknown``, subsampled to its ``max_*`` size (a
        training folder before its memory budget is checked), in ``spec``'s channels and
        size (default: the dataset's own). A training image folder over ``memory_budget``
        comes back as a ``LazyImageSet`` (``open_image_folder``).

        A dataset name without a split means its train split for ``train`` and its test
        split otherwise.
        """
        split = "train" if which == "train" else "test"
        folder = folder_of(self.train) if which == "train" else None
        if folder is not None:  # in memory, or lazily when over the memory budget
            data = open_image_folder(
                folder, spec, self.memory_budget, progress, sample=self.max_train, seed=self.seed
            )
        else:
            data = load_dataset(
                getattr(self, which), self.root, self.download, progress, default_split=split, input_spec=spec
            ).take(getattr(self, f"max_{which}"), seed=self.seed)
        log.info("%s", describe_data(which, data))
        return data

    def check_distinct(self) -> None:
        """Refuse to test on the very images the model is trained on."""
        if canonical_name(self.train, "train") == canonical_name(self.known, "test"):
            raise ConfigError(
                f"--train and --known are the same data ({canonical_name(self.train, 'train')}); "
                "test on images held out from training"
            )


def describe_data(which: str, data: ImageSet | LazyImageSet) -> str:
    """One line for the log on what ``JobData.load`` found: which data, how many images in
    how many classes (each training class's count when there are few), their size, and for training
    data whether it is held in memory or read lazily."""
    role = {"train": "training data", "known": "known test data", "unknown": "unknown test data"}[which]
    shape = data.spec.describe() if data.spec is not None else "x".join(map(str, data.shape))
    line = f"{role} {data.name}: {len(data)} images"
    if which != "unknown":
        classes = data.class_names
        line += f" in {len(classes)} {'class' if len(classes) == 1 else 'classes'}"
        if which == "train" and len(classes) <= 10:
            counts = torch.bincount(data.labels, minlength=len(classes)).tolist()
            line += f" ({', '.join(f'{name}: {n}' for name, n in zip(classes, counts))})"
    line += f", {shape}"
    if which == "train":
        lazy = describe_source(data) == "lazy"
        line += ", read lazily by DataLoader workers" if lazy else ", held in memory"
    return line


def check_output_dir(out: str | os.PathLike, overwrite: bool, outputs: tuple[str, ...] = RUN_OUTPUTS) -> Path:
    """Check that ``out`` can be written, before any data is loaded: it must be a folder
    (or not exist yet, below a writable folder), and it must not hold any of ``outputs``
    unless ``overwrite``, and then only osrkit's own (``osrkit.files.ownership``: ``model`` must
    be a model folder, the others need ``out`` to be a run folder). Nothing is created or
    deleted here: the outputs appear only once they are complete (``staged_outputs``), so
    a failed command leaves no empty folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} is a file; choose a folder with --out")
    existing = [name for name in outputs if (out / name).exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{out} already holds {', '.join(existing)}; pass --overwrite to replace or choose another --out"
        )
    check_replaceable_outputs(out, existing, models=("model",))
    base = out
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise ConfigError(f"cannot write to output folder {out} ({base} is a file); choose another --out")
    if not os.access(base, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cannot write to output folder {out} ({base} is not writable); choose another --out"
        )
    return out


@dataclass
class ModelOptions:
    """Which recognizer to build: backbone (None = the one that suits the data),
    autoencoder (None = the backbone's default), decision scorer (None = the default
    rule), device and the scorers to fit (None = the default set, ``"all"``). See ``OpenSetRecognizer``."""

    backbone: str | None = None
    backbone_options: dict | None = None
    autoencoder: bool | None = None
    decision_scorer: str | None = None
    device: str = "auto"
    scorers: list[str] | str | None = None
    pretrained: bool | None = None

    def build(
        self, class_names: list[str], spec: InputSpec | None = None, accept_rate: float = 0.95
    ) -> OpenSetRecognizer:
        """An unfitted recognizer with these options, checked (``check_params``: one line
        for a bad one) before any data is read."""
        model = OpenSetRecognizer(
            class_names,
            accept_rate,
            self.decision_scorer,
            backbone=self.backbone,
            backbone_options=self.backbone_options,
            input_spec=spec,
            autoencoder=self.autoencoder,
            device=self.device,
            scorers=self.scorers,
            pretrained=self.pretrained,
        )
        model.check_params()
        return model


def fit_recognizer(
    train_set: ImageSet | LazyImageSet,
    config: TrainConfig | dict | None = None,
    accept_rate: float = 0.95,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
    options: ModelOptions | None = None,
) -> OpenSetRecognizer:
    """Fit a recognizer on the known classes of ``train_set`` (``config`` None: the
    backbone's default recipe)."""
    model = (options or ModelOptions()).build(train_set.class_names, train_set.spec, accept_rate)
    return model.fit(train_set, config, checkpoint_dir=checkpoint_dir, progress=progress)


def train(
    data: JobData,
    config: TrainConfig | dict | None = None,
    accept_rate: float = 0.95,
    checkpoint_dir: str | os.PathLike | None = None,
    progress: bool = False,
    options: ModelOptions | None = None,
) -> OpenSetRecognizer:
    """Load ``data.train`` (in ``data.input_spec()``) and fit a recognizer on it."""
    train_set = data.load("train", progress, data.input_spec())
    return fit_recognizer(train_set, config, accept_rate, checkpoint_dir, progress, options)


def train_to_folder(
    out: str | os.PathLike,
    data: JobData,
    config: TrainConfig | dict | None = None,
    accept_rate: float = 0.95,
    overwrite: bool = False,
    progress: bool = False,
    options: ModelOptions | None = None,
) -> OpenSetRecognizer:
    """Train on ``data.train`` and save the model folder ``out`` (what ``osrkit train`` does).

    Training state is checkpointed in ``<out>.checkpoints/`` (removed on success), so an
    interrupted call resumes; ``out`` appears only once the model is complete.
    """
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():  # --overwrite replaces a model folder, never a file
        raise ConfigError(f"output path {out} is a file; choose a folder with --out")
    check_output_dir(out.parent, overwrite, outputs=())
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise OutputExistsError(
                f"{out.parent} already holds {out.name}; pass --overwrite to replace or choose another --out"
            )
        check_replaceable_model(out)  # before minutes of training, not when saving
    ckpt = out.with_name(out.name + ".checkpoints")
    model = train(data, config, accept_rate, ckpt, progress, options)
    if distributed.is_main():  # under torchrun every rank holds the same model; rank 0 writes it
        model.save_pretrained(out, overwrite=True)
        shutil.rmtree(ckpt, ignore_errors=True)
    return model


def evaluate_model(
    recognizer: OpenSetRecognizer,
    data: JobData,
    out: str | os.PathLike,
    overwrite: bool = False,
    progress: bool = False,
    options: ReportOptions = ReportOptions(),
) -> dict:
    """Evaluate on ``data.known`` vs ``data.unknown`` and write metrics, plots and report into
    ``out`` (what ``osrkit evaluate`` does); earlier outputs are replaced only at the end."""
    out = check_output_dir(out, overwrite, outputs=EVALUATION_OUTPUTS)
    spec = recognizer.input_spec_
    known, unknown = data.load("known", progress, spec), data.load("unknown", progress, spec)
    with staged_outputs(out) as stage:
        return evaluate_to_folder(recognizer, known, unknown, stage, options, progress=progress)


def evaluate_to_folder(
    recognizer: OpenSetRecognizer,
    known: ImageSet,
    unknown: ImageSet,
    out: str | os.PathLike,
    options: ReportOptions = ReportOptions(),
    extra: dict | None = None,
    progress: bool = False,
) -> dict:
    """Evaluate, then write ``metrics.json``, ``plots/*.png`` and ``report.html`` into ``out``."""
    out = Path(out)
    t0 = time.perf_counter()
    ev = evaluate(recognizer, known, unknown, progress)
    metrics = ev.metrics | (extra or {})
    metrics.setdefault("timing_s", {})["evaluate"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    figures = write_figures(ev, recognizer, out / "plots", options)
    metrics["timing_s"]["plots"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "metrics.json", metrics)
    name = recognizer.decision_scorer_
    gallery = confident_mistakes(ev, name, recognizer.thresholds_[name], recognizer.class_names_)
    write_report(out / "report.html", metrics, figures, recognizer.config_dict(), gallery)
    return metrics


def run(
    out: str | os.PathLike,
    data: JobData = JobData(),
    config: TrainConfig | dict | None = None,
    accept_rate: float = 0.95,
    overwrite: bool = False,
    progress: bool = False,
    options: ReportOptions = ReportOptions(),
    model_options: ModelOptions | None = None,
) -> dict:
    """Train on ``data.train``, evaluate on ``data.known`` vs ``data.unknown``, write everything.

    Writes ``out/model/``, ``out/metrics.json``, ``out/plots/*.png`` and ``out/report.html``,
    all at the end (an earlier run in ``out`` stays intact until then). Training state is
    checkpointed in ``out/checkpoints/`` so an interrupted run resumes.
    """
    out = check_output_dir(out, overwrite)
    # Every input is loaded and checked before minutes of training are spent.
    data.check_distinct()
    spec = data.input_spec()
    train_set = data.load("train", progress, spec)
    check_several_classes(train_set.name, train_set.class_names)  # before the test data's own checks
    known, unknown = data.load("known", progress, spec), data.load("unknown", progress, spec)
    if known.class_names != train_set.class_names:
        raise ConfigError(
            f"known test classes {known.class_names} differ from the training classes {train_set.class_names}"
        )
    t0 = time.perf_counter()
    ckpt = out / "checkpoints"
    recognizer = fit_recognizer(train_set, config, accept_rate, ckpt, progress, model_options)
    if not distributed.is_main():  # rank 0 evaluates and writes; the other ranks are done
        return {}
    fit = recognizer.fit_report_
    extra = {
        "timing_s": {"train": round(time.perf_counter() - t0, 2)},
        "training": {
            "train_size": fit.train_size,
            "val_size": fit.val_size,
            "classifier_best_epoch": fit.classifier["best_epoch"] if fit.classifier else None,
            "autoencoder_best_epoch": fit.autoencoder["best_epoch"] if fit.autoencoder else None,
            "backbone": recognizer.backbone_name_,
            "input_spec": recognizer.input_spec_.describe(),
            "data_source": fit.data_source,
            "processes": distributed.world_size(),
        },
    }
    with staged_outputs(out) as stage:
        recognizer.save_pretrained(stage / "model")
        metrics = evaluate_to_folder(recognizer, known, unknown, stage, options, extra, progress)
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


__getattr__ = renamed(__name__, {"DataSpec": "JobData"})
