"""Command-line interface: a thin layer over ``osrkit.pipeline`` and ``OpenSetRecognizer``."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .bench import SpeedOptions, render, speed
from .errors import ConfigError, OsrkitError
from .export import OnnxRecognizer, export_onnx
from .models import list_backbones
from .pipeline import DataSpec, ModelOptions, ReportOptions, evaluate_model, run, train_to_folder
from .protocols import PROTOCOLS, Context, run_protocol
from .recognizer import UNKNOWN, OpenSetRecognizer, as_input_tensor
from .report import METRIC_COLUMNS, metrics_table_rows
from .scorers import SCORERS
from .training import TrainConfig

log = logging.getLogger("osrkit")
DEFAULTS = TrainConfig()


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _float_in(lo: float, hi: float, lo_open: bool = False):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value > hi or value < lo or (lo_open and value == lo):
            bracket = "(" if lo_open else "["
            raise argparse.ArgumentTypeError(f"must be in {bracket}{lo:g}, {hi:g}], got {text}")
        return value

    return parse


_positive_float = _float_in(0.0, math.inf, lo_open=True)


def _add_data_root(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="folder holding the datasets (default: $OSRKIT_DATA, else ./data, else ../shared/data)",
    )


def _add_data_args(p: argparse.ArgumentParser, train: bool, test: bool) -> None:
    g = p.add_argument_group("data")
    _add_data_root(g)
    g.add_argument(
        "--download",
        action="store_true",
        help="download missing datasets from their official URLs (md5-verified)",
    )
    if train:
        g.add_argument(
            "--train",
            default="mnist:train",
            metavar="DATA",
            help="known-class training data: a dataset name (mnist:train, "
            "fashion-mnist:train, kmnist:train) or an image folder <class>/<image> "
            "(default: %(default)s)",
        )
        g.add_argument(
            "--max-train",
            type=_positive_int,
            metavar="N",
            help="use a seeded random sample of N training images",
        )
    if test:
        g.add_argument(
            "--known",
            default="mnist:test",
            metavar="DATA",
            help="known-class test data, same classes as training (default: %(default)s)",
        )
        g.add_argument(
            "--unknown",
            default="cifar10",
            metavar="DATA",
            help="unknown test data: cifar10, fashion-mnist, kmnist, notmnist, or an "
            "image folder (default: %(default)s)",
        )
        g.add_argument(
            "--max-known",
            type=_positive_int,
            metavar="N",
            help="use a seeded random sample of N known test images",
        )
        g.add_argument(
            "--max-unknown",
            type=_positive_int,
            metavar="N",
            help="use a seeded random sample of N unknown test images",
        )


# Training options that override the backbone's recipe: (flag, TrainConfig field, type,
# metavar, help). Unset options keep the recipe's value (TrainConfig.for_backbone).
_RECIPE_OPTIONS = (
    ("--epochs", "epochs", "int", None, "classifier epochs"),
    ("--ae-epochs", "ae_epochs", "int", None, "autoencoder epochs"),
    ("--batch-size", "batch_size", "int", None, "images per training step"),
    ("--lr", "lr", "float", None, "classifier peak learning rate, one-cycle schedule"),
    ("--ae-lr", "ae_lr", "float", None, "autoencoder peak learning rate"),
    (
        "--val-size",
        "val_size",
        "int",
        None,
        "known training images held out (stratified, seeded) for early stopping and threshold calibration",
    ),
    ("--patience", "patience", "int", None, "stop after this many epochs without validation improvement"),
    (
        "--rotation",
        "rotation_degrees",
        "degrees",
        "DEGREES",
        "random rotation by up to this many degrees; 0: off",
    ),
    ("--hflip", "hflip_prob", "prob", "P", "probability of a random horizontal flip; 0: off"),
    (
        "--crop-padding",
        "crop_padding",
        "int0",
        "PIXELS",
        "random crop of the image padded by this many pixels",
    ),
    ("--label-smoothing", "label_smoothing", "smoothing", "EPS", "label smoothing of the cross-entropy"),
)
_PARSERS = {
    "int": _positive_int,
    "int0": _nonneg_int,
    "float": _positive_float,
    "degrees": _float_in(0, 180),
    "prob": _float_in(0, 1),
    "smoothing": _float_in(0, 0.99),
}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--backbone",
        choices=list_backbones(),
        metavar="NAME",
        help=f"classifier network: {', '.join(list_backbones())} (default: small_cnn for grayscale "
        "images up to 32 px, colour_cnn otherwise)",
    )
    g.add_argument(
        "--image-size",
        type=_image_size,
        metavar="N|HxW",
        help="input size of the model (default: the data's own; an image folder's from its images)",
    )
    g.add_argument(
        "--channels",
        type=_channels,
        help="1 (grayscale) or 3 (RGB) (default: the data's own)",
    )
    g.add_argument(
        "--autoencoder",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train the autoencoder whose reconstruction error flags unknowns (default: on for "
        "small_cnn, off for colour_cnn)",
    )
    g.add_argument(
        "--decision-scorer",
        choices=list(SCORERS),
        metavar="SCORER",
        help="scorer whose threshold decides (default: combined with an autoencoder, else max_logit)",
    )


def _add_device_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--device",
        default="auto",
        metavar="DEVICE",
        help="auto, cpu, cuda, cuda:N or mps (default: auto = CUDA, then MPS, then CPU)",
    )


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = [int(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(values) not in (1, 2) or any(v < 1 or v > 4096 for v in values):
        raise argparse.ArgumentTypeError(f"image size must be N or HxW with sides in [1, 4096], got {text!r}")
    return (values[0], values[-1])


def _channels(text: str) -> int:
    if text not in ("1", "3"):
        raise argparse.ArgumentTypeError(f"must be 1 (grayscale) or 3 (RGB), got {text!r}")
    return int(text)


def _add_train_args(p: argparse.ArgumentParser) -> None:
    _add_model_args(p)
    g = p.add_argument_group("training (unset options keep the backbone's recipe; digits: see defaults)")
    for flag, field, kind, metavar, text in _RECIPE_OPTIONS:
        g.add_argument(
            flag,
            dest=field,
            type=_PARSERS[kind],
            default=None,
            metavar=metavar,
            help=f"{text} (small_cnn default: {getattr(DEFAULTS, field)})",
        )
    g.add_argument(
        "--seed",
        type=_nonneg_int,
        default=DEFAULTS.seed,
        help="seed for the split, initialisation, shuffling and augmentation (default: %(default)s)",
    )
    g.add_argument(
        "--no-channels-last",
        action="store_true",
        help="train in the default NCHW memory layout instead of channels-last",
    )
    _add_device_arg(g)
    _add_fast_arg(g)
    g.add_argument(
        "--accept-rate",
        type=_float_in(0, 1, lo_open=True),
        default=0.95,
        help="fraction of known validation images each threshold accepts (default: %(default)s)",
    )


def _add_output_args(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument(
        "--out",
        default=default,
        required=default is None,
        metavar="DIR",
        help="output folder" + (" (default: %(default)s)" if default else ""),
    )
    p.add_argument("--overwrite", action="store_true", help="replace what --out already holds")


def _add_report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--embed-samples",
        type=_positive_int,
        default=2000,
        metavar="N",
        help="test images in the t-SNE/PCA plot, 2/3 known and 1/3 unknown (default: %(default)s)",
    )


def _add_fast_arg(p: argparse.ArgumentParser | argparse._ArgumentGroup, top: bool = False) -> None:
    p.add_argument(
        "--no-fast",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="turn off the CPU fast paths (channels-last, folded batch norm, bfloat16): "
        "the plain float32 path, as OSRKIT_FAST=0 does",
    )


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="osrkit", description="Open-set recognition: classify known classes, reject unknown inputs."
    )
    parser.add_argument("--version", action="version", version=f"osrkit {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    _add_fast_arg(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="train and evaluate, writing model, metrics, plots and report",
        description="Train on known classes, evaluate against unknowns and write "
        "DIR/model/, DIR/metrics.json, DIR/plots/*.png and DIR/report.html.",
    )
    _add_output_args(p, "runs/latest")
    _add_data_args(p, train=True, test=True)
    _add_train_args(p)
    _add_report_args(p)

    p = sub.add_parser(
        "train",
        help="train a recognizer and save its model folder",
        description="Train the classifier and autoencoder on known classes, calibrate "
        "thresholds on held-out known images, and save the model folder.",
    )
    _add_output_args(p, None)
    _add_data_args(p, train=True, test=False)
    _add_train_args(p)

    p = sub.add_parser(
        "evaluate",
        help="evaluate a saved model on known vs unknown test data",
        description="Score known and unknown test images with a saved model and "
        "write DIR/metrics.json, DIR/plots/*.png and DIR/report.html.",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `osrkit train`")
    _add_output_args(p, None)
    _add_data_args(p, train=False, test=True)
    p.add_argument("--seed", type=_nonneg_int, default=0, help="seed for test subsampling and plots")
    _add_report_args(p)
    _add_fast_arg(p)
    _add_device_arg(p)

    p = sub.add_parser(
        "predict",
        help="classify image files; one JSON line per image",
        description="Print one JSON line per image: {path, label, class_index, "
        'known, scores}. label is the class name or "unknown".',
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `osrkit train`")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="PNG or JPEG files, any size, gray or RGB")
    p.add_argument(
        "--scorer",
        choices=sorted(SCORERS),
        default=None,
        help="scorer that decides known vs unknown (default: the model's decision scorer)",
    )
    p.add_argument(
        "--invert", action="store_true", help="invert images first (for dark strokes on a light background)"
    )
    p.add_argument(
        "--backend",
        choices=("torch", "onnx"),
        default="torch",
        help="torch: the model folder with PyTorch; onnx: a graph written by `osrkit export`, with "
        "ONNX Runtime (MODEL_DIR is then the .onnx file or a folder holding model.onnx) "
        "(default: %(default)s)",
    )
    _add_device_arg(p)

    p = sub.add_parser(
        "export",
        help="write a model folder as one ONNX graph",
        description="Write the classifier, autoencoder, scorers, thresholds and decision rule of a "
        "model folder as one ONNX graph (input: images float32 (N,C,H,W) in [0,1], as the model's input "
        "spec says; outputs: "
        "probabilities, logits, unknown_scores, label, is_unknown). Needs the onnx extra: "
        "pip install 'osrkit[onnx]'.",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `osrkit train`")
    p.add_argument("output", metavar="OUTPUT.onnx", help="ONNX file to write (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT.onnx if it exists")
    _add_bench_parser(sub)
    _add_benchmark_parser(sub)
    return parser


def _add_benchmark_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="standard open-set protocols: seed, mnist-splits, crosr, near-far, all",
        description="Run a standard open-set benchmark protocol (or all of them). Each writes "
        "DIR/<name>.json and DIR/<name>.md, ending in one line per target; trained models are "
        "cached in DIR/cache/ and reused when data, classes, config and seed match.",
    )
    p.add_argument("name", choices=[*PROTOCOLS, "all"], metavar="NAME", help=f"{', '.join(PROTOCOLS)} or all")
    p.add_argument("--out", default="results", metavar="DIR", help="results folder (default: %(default)s)")
    _add_data_root(p)
    p.add_argument("--download", action="store_true", help="fetch missing datasets, md5-verified")
    p.add_argument(
        "--seed", type=_nonneg_int, default=DEFAULTS.seed, help="training seed (default: %(default)s)"
    )
    p.add_argument("--epochs", type=_positive_int, default=DEFAULTS.epochs, help=argparse.SUPPRESS)
    p.add_argument("--ae-epochs", type=_positive_int, default=DEFAULTS.ae_epochs, help=argparse.SUPPRESS)
    p.add_argument("--val-size", type=_positive_int, default=DEFAULTS.val_size, help=argparse.SUPPRESS)
    p.add_argument(
        "--decision-scorer",
        default=Context.decision_scorer,
        metavar="SCORER",
        help="scorer whose calibrated threshold makes the decisions (default: %(default)s, pre-declared)",
    )
    p.add_argument("--max-train", type=_positive_int, help="subsample MNIST train (quick checks only)")
    p.add_argument("--max-test", type=_positive_int, help="subsample every test set (quick checks only)")
    _add_fast_arg(p)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="benchmarks of osrkit itself (speed)",
        description="Measure osrkit on this machine; prints a table ending in one line per target.",
    )
    bench = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    b = bench.add_parser(
        "speed",
        help="training and scoring throughput, latency, end-to-end run",
        description="Training throughput against a conventional DataLoader loop, scoring "
        "throughput at batch 1/64/1024 against the machine's float32 matrix-multiply rate, "
        "single-image latency, metrics with fast paths on and off, and the wall time and peak "
        "memory of `osrkit run`. Writes DIR/speed.json and DIR/speed.md.",
    )
    b.add_argument("--out", default="results", metavar="DIR", help="results folder (default: %(default)s)")
    _add_data_root(b)
    b.add_argument("--model", metavar="MODEL_DIR", help="score with this model instead of the run's")
    b.add_argument("--skip-run", action="store_true", help="do not time `osrkit run` (needs --model)")
    b.add_argument(
        "--compare-training",
        action="store_true",
        help="also time `osrkit run --no-fast` and report its metrics (about 3 more minutes)",
    )
    b.add_argument(
        "--compile", action="store_true", help="also measure torch.compile (rejected: see BENCHMARKS.md)"
    )
    b.add_argument(
        "--train-images",
        type=_positive_int,
        default=SpeedOptions.train_images,
        metavar="N",
        help="MNIST images per training measurement (default: %(default)s)",
    )
    b.add_argument(
        "--repeats",
        type=_positive_int,
        default=SpeedOptions.repeats,
        metavar="N",
        help="interleaved repetitions; medians are reported (default: %(default)s)",
    )
    b.add_argument(
        "--eval-images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="known and unknown test images for the metric comparison (default: all)",
    )


def _train_overrides(args: argparse.Namespace) -> dict:
    """The training options given on the command line, over the backbone's recipe."""
    overrides = {
        field: getattr(args, field) for _, field, *_ in _RECIPE_OPTIONS if getattr(args, field) is not None
    }
    overrides["seed"] = args.seed
    if args.no_channels_last or args.no_fast:
        overrides["channels_last"] = False
    if args.no_fast:
        overrides["bf16"] = False
    return overrides


def _model_options(args: argparse.Namespace) -> ModelOptions:
    return ModelOptions(
        backbone=args.backbone,
        autoencoder=args.autoencoder,
        decision_scorer=args.decision_scorer,
        device=args.device,
    )


def _data_spec(args: argparse.Namespace) -> DataSpec:
    return DataSpec(
        train=getattr(args, "train", "mnist:train"),
        known=getattr(args, "known", "mnist:test"),
        unknown=getattr(args, "unknown", "cifar10"),
        root=args.data_root,
        download=args.download,
        max_train=getattr(args, "max_train", None),
        max_known=getattr(args, "max_known", None),
        max_unknown=getattr(args, "max_unknown", None),
        seed=args.seed,
        image_size=getattr(args, "image_size", None),
        channels=getattr(args, "channels", None),
    )


def format_summary(metrics: dict) -> str:
    """Plain-text table of the per-scorer metrics, for the end of a run."""
    header = ["scorer"] + [label for _, label in METRIC_COLUMNS]
    rows = [header] + metrics_table_rows(metrics)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    c = metrics["counts"]
    lines.insert(
        0,
        f"closed-set accuracy {metrics['closed_set_accuracy']:.4f} on {c['known']} known "
        f"images; {c['unknown']} unknown images",
    )
    return "\n".join(lines)


def _training_job(args: argparse.Namespace) -> tuple[DataSpec, dict, ModelOptions]:
    """Data, training options and model options of `run`/`train`, the model options checked
    against the data's input spec before any data is loaded (an unknown device, a scorer
    the model cannot have, a size the autoencoder refuses). The spec is worked out once."""
    data, options = _data_spec(args), _model_options(args)
    options.build(["check"], data.input_spec(), args.accept_rate)
    return data, _train_overrides(args), options


def _cmd_run(args: argparse.Namespace, progress: bool) -> int:
    data, config, options = _training_job(args)
    report = ReportOptions(args.embed_samples, seed=args.seed)
    metrics = run(args.out, data, config, args.accept_rate, args.overwrite, progress, report, options)
    print(format_summary(metrics))
    print(f"wrote {Path(args.out) / 'report.html'}, metrics.json, plots/ and model/")
    return 0


def _cmd_train(args: argparse.Namespace, progress: bool) -> int:
    data, config, options = _training_job(args)
    model = train_to_folder(args.out, data, config, args.accept_rate, args.overwrite, progress, options)
    print(f"saved model to {args.out}; thresholds: {json.dumps(model.thresholds_)}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, progress: bool) -> int:
    model = OpenSetRecognizer.from_pretrained(args.model, device=args.device)
    options = ReportOptions(args.embed_samples, seed=args.seed)
    metrics = evaluate_model(model, _data_spec(args), args.out, args.overwrite, progress, options)
    print(format_summary(metrics))
    print(f"wrote {Path(args.out) / 'report.html'}, metrics.json and plots/")
    return 0


def _cmd_predict(args: argparse.Namespace, progress: bool) -> int:
    if args.backend == "onnx":
        model = OnnxRecognizer(args.model)  # same outputs/scores_from_outputs/decide calls
    else:
        model = OpenSetRecognizer.from_pretrained(args.model, device=args.device)
    # Read every image first: one bad file fails the command before anything is printed.
    invert = True if args.invert else None
    spec = model.input_spec if args.backend == "onnx" else model.input_spec_
    outputs = model.outputs(as_input_tensor(args.images, spec, invert))
    scores = model.scores_from_outputs(outputs)
    labels = model.decide(outputs, args.scorer)
    for i, path in enumerate(args.images):
        idx = int(labels[i])
        row = {
            "path": str(path),
            "label": "unknown" if idx == UNKNOWN else model.class_names[idx],
            "class_index": idx,
            "known": idx != UNKNOWN,
            "scores": {name: float(s[i]) for name, s in scores.items()},
        }
        print(json.dumps(row))
    return 0


def _cmd_export(args: argparse.Namespace, progress: bool) -> int:
    model = OpenSetRecognizer.from_pretrained(args.model)
    path = export_onnx(model, args.output, overwrite=args.overwrite)
    print(
        f"wrote {path} ({path.stat().st_size:,} bytes): classifier, autoencoder and scorers "
        f"{', '.join(model.scorers_)}; label/is_unknown decided by {model.decision_scorer}"
    )
    return 0


def _cmd_bench(args: argparse.Namespace, progress: bool) -> int:
    if args.no_fast:
        raise ConfigError("bench speed compares the fast paths with the plain path itself; drop --no-fast")
    if args.skip_run and not args.model:
        raise ConfigError("--skip-run needs --model MODEL_DIR to score with")
    options = SpeedOptions(
        data_root=args.data_root,
        train_images=args.train_images,
        repeats=args.repeats,
        model=args.model,
        run=not args.skip_run,
        compare_training=args.compare_training,
        compile=args.compile,
        eval_images=args.eval_images,
    )
    if progress:
        logging.getLogger("osrkit.bench").setLevel(logging.INFO)
    result = speed(args.out, options)
    print(render(result), end="")
    print(f"wrote {Path(args.out) / 'speed.json'} and speed.md")
    return 0


def _cmd_benchmark(args: argparse.Namespace, progress: bool) -> int:
    config = TrainConfig(
        epochs=args.epochs,
        ae_epochs=args.ae_epochs,
        val_size=args.val_size,
        seed=args.seed,
        **({"channels_last": False, "bf16": False} if args.no_fast else {}),
    )
    ctx = Context(
        Path(args.out),
        args.data_root,
        config,
        args.download,
        progress,
        args.max_train,
        args.max_test,
        decision_scorer=args.decision_scorer,
    )
    names = list(PROTOCOLS) if args.name == "all" else [args.name]
    t0 = time.perf_counter()
    for name in names:
        run_protocol(name, ctx)
        print((Path(args.out) / f"{name}.md").read_text())
    if len(names) > 1:
        print(f"all protocols: {time.perf_counter() - t0:.1f} s; results in {args.out}/")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "bench": _cmd_bench,
    "benchmark": _cmd_benchmark,
}


def _interrupt_on_termination() -> None:
    """Treat SIGTERM and SIGHUP (a closed terminal, a stopped job) like Ctrl-C, so staged
    outputs are cleaned up and checkpoints kept instead of the process dying mid-write."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and threading.current_thread() is threading.main_thread():
            signal.signal(getattr(signal, name), handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    progress = not args.quiet and sys.stderr.isatty()
    _interrupt_on_termination()
    saved_fast = os.environ.get("OSRKIT_FAST")
    if args.no_fast:
        os.environ["OSRKIT_FAST"] = "0"  # read by FastPaths.default() wherever a model is built
    try:
        return _run_command(args, progress)
    finally:  # main() may be called from Python: leave the environment as it was
        if saved_fast is None:
            os.environ.pop("OSRKIT_FAST", None)
        else:
            os.environ["OSRKIT_FAST"] = saved_fast


def _run_command(args: argparse.Namespace, progress: bool) -> int:
    """Run the command; every expected failure becomes one line on stderr and exit code 2."""
    try:
        return COMMANDS[args.command](args, progress)
    except OsrkitError as exc:
        print(f"osrkit: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            "osrkit: error: out of memory; use fewer images (--max-*) or a smaller --batch-size",
            file=sys.stderr,
        )
        return 2
    except BrokenPipeError:  # e.g. `osrkit predict ... | head`
        sys.stderr.close()
        return 0
    except OSError as exc:  # unwritable output, full disk, unreadable file outside the readers
        where = f": {exc.filename}" if exc.filename else ""
        print(f"osrkit: error: {exc.strerror or exc}{where}; check the path and free space", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = args.command in ("run", "train")
        hint = "; training state is checkpointed: rerun the same command to resume" if resumable else ""
        print(f"osrkit: interrupted; nothing half-written was left behind{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
