"""The argument parser of ``osrkit``: one subcommand per job."""

from __future__ import annotations

import argparse
import difflib
from typing import NoReturn

from osrkit._version import __version__
from osrkit.cli.arguments import (
    DEFAULTS,
    _add_data_args,
    _add_data_root,
    _add_device_arg,
    _add_fast_arg,
    _add_output_args,
    _add_report_args,
    _add_train_args,
    _float_in,
    _nonneg_int,
    _positive_float,
    _positive_int,
)
from osrkit.cli.global_flags import add_global_flags, allow_global_flags_anywhere
from osrkit.perf.speed import SpeedOptions
from osrkit.protocols import Context, group_names
from osrkit.scorers import SCORERS
from osrkit.serve.app import ServeOptions
from osrkit.serve.worker import WORKERS


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message instead of the usage block; an option the
    subcommand does not have is named there, with the nearest ones it has."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen_subparser(self, parsed)
            command.error(f"unrecognized arguments: {' '.join(extras)}{_nearest_options(command, extras)}")
        return parsed


def _chosen_subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser that ``args`` went through (``osrkit perf speed``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                return _chosen_subparser(chosen, args)
    return parser


def _nearest_options(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """'; did you mean --max-train?' for the unknown options among ``extras`` that are
    close to options ``parser`` has ('' when none is)."""
    known = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    nearest: list[str] = []
    for extra in (e.partition("=")[0] for e in extras if e.startswith("-")):
        ratios = {o: difflib.SequenceMatcher(None, extra, o).ratio() for o in known}
        best = max(ratios.values(), default=0.0)
        # the closest, and those nearly as close (a typo is close to one option, not three)
        close = sorted((o for o, r in ratios.items() if r >= max(0.6, best - 0.1)), key=lambda o: -ratios[o])
        nearest += [o for o in close[:3] if o not in nearest]
    return f"; did you mean {' or '.join(nearest)}?" if nearest else ""


def build_parser() -> argparse.ArgumentParser:
    """The ``osrkit`` parser: global flags, then one subcommand per job."""
    parser = _Parser(
        prog="osrkit", description="Open-set recognition: classify known classes, reject unknown inputs."
    )
    parser.add_argument("--version", action="version", version=f"osrkit {__version__}")
    add_global_flags(parser, top=True)
    _add_data_root(parser, top=True)
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
        description="Train the classifier (and the autoencoder, where the backbone has one) on known "
        "classes, calibrate "
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
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        help="image files (PNG, JPEG, ...; any size, gray or RGB) or folders of them",
    )
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
    _add_serve_parser(sub)
    _add_perf_parser(sub)
    _add_protocol_parser(sub)
    allow_global_flags_anywhere(parser)
    return parser


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP (POST /v1/predict), with micro-batching",
        description="Serve a model folder (or, with --backend onnx, its ONNX export) over HTTP: "
        "POST /v1/predict (multipart files in the field 'files', or JSON {\"images\": [base64]}), "
        "GET /v1/model, /healthz, /readyz and the OpenAPI page /docs. Concurrent requests are "
        "scored together. Needs the serve extra: pip install 'osrkit[serve]'.",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `osrkit train` (or an .onnx)")
    d = ServeOptions()
    p.add_argument(
        "--host", default=d.host, help="address to listen on (default: %(default)s, this machine only)"
    )
    p.add_argument("--port", type=_nonneg_int, default=d.port, help="port (default: %(default)s)")
    p.add_argument("--backend", choices=("torch", "onnx"), default=d.backend, help="(default: %(default)s)")
    _add_device_arg(p)
    p.add_argument("--no-batching", action="store_true", help="score each request on its own")
    p.add_argument(
        "--max-batch",
        type=_positive_int,
        default=d.max_batch,
        metavar="N",
        help="images per batch (default: %(default)s)",
    )
    p.add_argument(
        "--max-wait-ms",
        type=_float_in(0, 1000),
        default=d.max_wait_ms,
        metavar="MS",
        help="how long a request waits for others to batch with (default: %(default)s)",
    )
    p.add_argument(
        "--max-request-mb",
        type=_float_in(0, 1024, lo_open=True),
        default=d.max_request_bytes / 2**20,
        metavar="MB",
        help="largest request body (default: %(default)s)",
    )
    p.add_argument(
        "--max-images",
        type=_positive_int,
        default=d.max_images,
        metavar="N",
        help="images per request (default: %(default)s)",
    )
    p.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=d.max_pixels,
        metavar="N",
        help="pixels per image, checked from its header before decoding; larger images get a 413 "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--request-timeout",
        type=_float_in(0, 3600, lo_open=True),
        default=d.request_timeout_s,
        metavar="S",
        help="seconds for a request's headers and body to arrive; slower clients get a 408 and "
        "are disconnected (default: %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=_positive_int,
        default=d.max_connections,
        metavar="N",
        help="open connections and requests in flight; more get a 503 (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=_nonneg_int,
        default=d.threads,
        metavar="N",
        help="torch threads for scoring (default: 0 = one less than the usable cores, at least 1)",
    )
    p.add_argument(
        "--worker",
        choices=WORKERS,
        default=d.worker,
        help="score in a worker process with its own GIL, or on a thread of the server "
        "(default: %(default)s)",
    )


def _add_protocol_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "protocol",
        aliases=["benchmark"],  # the name before 0.2; goes in 0.3 (CHANGELOG)
        help="how well osrkit recognises: the field's open-set protocols (AUROC, F1, ...): mnist "
        "(seed, mnist-splits, crosr, near-far), cifar10 (splits, far, train-speed), all",
        description="Run a standard open-set evaluation protocol (or all of them). Each writes "
        "DIR/<name>.json and DIR/<name>.md, ending in one line per target; trained models are "
        "cached in DIR/cache/ and reused when data, classes, config and seed match.",
    )
    groups = group_names()
    p.add_argument(
        "name",
        choices=[*groups["all"], *groups],
        metavar="NAME",
        help=f"{', '.join(groups['all'])}, or a group: "
        + "; ".join(f"{g} ({', '.join(n)})" if g != "all" else "all" for g, n in groups.items()),
    )
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
        "--budget",
        type=_positive_float,
        metavar="PFLOP",
        help="training budget in PFLOP of a colour model trained from scratch on CIFAR-10's 10 classes "
        "(sets its epochs, the same on any CPU; the splits' 6-class models get the same per image; "
        "default: the recipe's 11 epochs, 0.34 PFLOP; the published runs use 0.4)",
    )
    p.add_argument(
        "--decision-scorer",
        default=Context.decision_scorer,
        metavar="SCORER",
        help="scorer whose calibrated threshold makes the decisions (default: each model's "
        "pre-declared default: fusion for the digit models, max_logit_knn for the colour ones, "
        "from scratch or pretrained)",
    )
    p.add_argument("--max-train", type=_positive_int, help="subsample MNIST train (quick checks only)")
    p.add_argument("--max-test", type=_positive_int, help="subsample every test set (quick checks only)")
    _add_fast_arg(p)


def _add_perf_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perf",
        aliases=["bench"],  # the name before 0.2; goes in 0.3 (CHANGELOG)
        help="how fast osrkit runs on this machine: speed (training, scoring, latency) or serve "
        "(HTTP load); for accuracy see `protocol`",
        description="Measure osrkit's speed on this machine; prints a table ending in one line per target.",
    )
    measurements = p.add_subparsers(dest="measurement", required=True, metavar="MEASUREMENT")
    b = measurements.add_parser(
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
        "--skip-all-scorers",
        action="store_true",
        help="do not also time `osrkit run --scorers all` beside the default run",
    )
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

    b = measurements.add_parser(
        "serve",
        help="load on `osrkit serve`: requests/s and latency at concurrency 1, 8, 64",
        description="Start `osrkit serve` in a child process and load it from a client on "
        "loopback, with micro-batching on and off, at concurrency 1, 8 and 64 (one image per "
        "request); compares images/s with in-process score_samples at the same batch size. "
        "Writes DIR/serve.json and DIR/serve.md.",
    )
    b.add_argument("--out", default="results", metavar="DIR", help="results folder (default: %(default)s)")
    _add_data_root(b)
    b.add_argument(
        "--model", metavar="MODEL_DIR", help="serve this model (default: train a small digit model)"
    )
    b.add_argument(
        "--requests", type=_positive_int, default=2000, metavar="N", help="requests per setting, at most"
    )
    b.add_argument(
        "--seconds", type=_positive_float, default=15.0, metavar="S", help="seconds per setting, at most"
    )
