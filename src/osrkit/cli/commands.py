"""The commands behind ``osrkit``: each takes parsed arguments and calls the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

from osrkit.cli.arguments import _job_data, _model_options, _train_overrides
from osrkit.data.folder import expand_image_paths
from osrkit.data.inputs import as_input_tensor
from osrkit.errors import ConfigError
from osrkit.evaluation import ReportOptions, metrics_table
from osrkit.export.onnx import export_onnx
from osrkit.jobs.pipeline import JobData, ModelOptions, evaluate_model, run, train_to_folder
from osrkit.jobs.predictions import input_spec_of, load_model, prediction_rows
from osrkit.perf.serve_load import ServeBenchOptions, serve_load
from osrkit.perf.serve_load import render as render_serve
from osrkit.perf.speed import SpeedOptions, render, speed
from osrkit.protocols import Context, group_names, run_protocol
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.serve import serve
from osrkit.serve.app import ServeOptions
from osrkit.training import distributed
from osrkit.training.config import TrainConfig


def format_summary(metrics: dict) -> str:
    """Plain-text table of the per-scorer metrics, for the end of a run."""
    c = metrics["counts"]
    return (
        f"closed-set accuracy {metrics['closed_set_accuracy']:.4f} on {c['known']} known "
        f"images; {c['unknown']} unknown images\n{metrics_table(metrics)}"
    )


def _training_job(args: argparse.Namespace) -> tuple[JobData, dict, ModelOptions]:
    """Data, training options and model options of `run`/`train`, the model options checked
    against the data's input spec before any data is loaded (an unknown device, a scorer
    the model cannot have, a size the autoencoder refuses). The spec is worked out once."""
    data, options = _job_data(args), _model_options(args)
    options.build(["check"], data.input_spec(), args.accept_rate)
    return data, _train_overrides(args), options


def _cmd_run(args: argparse.Namespace, progress: bool) -> int:
    with distributed.session(args.device) as args.device:  # under torchrun: join the group
        data, config, options = _training_job(args)
        report = ReportOptions(args.embed_samples, seed=args.seed)
        metrics = run(args.out, data, config, args.accept_rate, args.overwrite, progress, report, options)
        if distributed.is_main():
            _say_processes()
            print(format_summary(metrics))
            print(f"wrote {Path(args.out) / 'report.html'}, metrics.json, plots/ and model/")
    return 0


def _say_processes() -> None:
    """Under torchrun, how many processes trained (rank 0 says it for all)."""
    if distributed.world_size() > 1:
        print(f"trained by {distributed.world_size()} processes (torch.distributed)")


def _cmd_train(args: argparse.Namespace, progress: bool) -> int:
    with distributed.session(args.device) as args.device:  # under torchrun: join the group
        data, config, options = _training_job(args)
        model = train_to_folder(args.out, data, config, args.accept_rate, args.overwrite, progress, options)
        if distributed.is_main():
            _say_processes()
            print(f"saved model to {args.out}; thresholds: {json.dumps(model.thresholds_)}")
    return 0


def _cmd_evaluate(args: argparse.Namespace, progress: bool) -> int:
    model = OpenSetRecognizer.from_pretrained(args.model, device=args.device)
    options = ReportOptions(args.embed_samples, seed=args.seed)
    metrics = evaluate_model(model, _job_data(args), args.out, args.overwrite, progress, options)
    print(format_summary(metrics))
    print(f"wrote {Path(args.out) / 'report.html'}, metrics.json and plots/")
    return 0


def _cmd_predict(args: argparse.Namespace, progress: bool) -> int:
    model = load_model(args.model, args.backend, args.device)  # either backend, the same calls
    # Read every image first: one bad file fails the command before anything is printed.
    invert = True if args.invert else None
    spec = input_spec_of(model)
    paths = expand_image_paths(args.images)  # folders: every image below them
    rows = prediction_rows(model, as_input_tensor(paths, spec, invert), args.scorer)
    for path, row in zip(paths, rows):
        print(json.dumps({"path": str(path)} | row, allow_nan=False))  # rows hold null, never NaN
    return 0


def _cmd_export(args: argparse.Namespace, progress: bool) -> int:
    model = OpenSetRecognizer.from_pretrained(args.model)
    path = export_onnx(model, args.output, overwrite=args.overwrite)
    print(
        f"wrote {path} ({path.stat().st_size:,} bytes): the networks and scorers "
        f"{', '.join(model.scorers_)}; label/is_unknown decided by {model.decision_scorer_}"
    )
    return 0


def _cmd_perf(args: argparse.Namespace, progress: bool) -> int:
    if args.measurement == "serve":
        return _cmd_perf_serve(args, progress)
    if args.no_fast:
        raise ConfigError("perf speed compares the fast paths with the plain path itself; drop --no-fast")
    if args.skip_run and not args.model:
        raise ConfigError("--skip-run needs --model MODEL_DIR to score with")
    options = SpeedOptions(
        data_root=args.data_root,
        train_images=args.train_images,
        repeats=args.repeats,
        model=args.model,
        run=not args.skip_run,
        all_scorers=not args.skip_all_scorers,
        compare_training=args.compare_training,
        compile=args.compile,
        eval_images=args.eval_images,
    )
    result = speed(args.out, options)
    print(render(result), end="")
    print(f"wrote {Path(args.out) / 'speed.json'} and speed.md")
    return 0


def _cmd_perf_serve(args: argparse.Namespace, progress: bool) -> int:
    options = ServeBenchOptions(args.model, args.data_root, requests=args.requests, seconds=args.seconds)
    result = serve_load(args.out, options)
    print(render_serve(result), end="")
    print(f"wrote {Path(args.out) / 'serve.json'} and serve.md")
    return 0


def _cmd_protocol(args: argparse.Namespace, progress: bool) -> int:
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
        colour_overrides={"budget_pflop": args.budget} if args.budget else {},
    )
    names = group_names().get(args.name, [args.name])
    t0 = time.perf_counter()
    for name in names:
        run_protocol(name, ctx)
        print((Path(args.out) / f"{name}.md").read_text())
    if len(names) > 1:
        print(f"all protocols: {time.perf_counter() - t0:.1f} s; results in {args.out}/")
    return 0


def _cmd_serve(args: argparse.Namespace, progress: bool) -> int:
    options = ServeOptions(
        host=args.host,
        port=args.port,
        backend=args.backend,
        device=args.device,
        batching=not args.no_batching,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_request_bytes=int(args.max_request_mb * 2**20),
        max_images=args.max_images,
        max_pixels=args.max_pixels,
        request_timeout_s=args.request_timeout,
        max_connections=args.max_connections,
        threads=args.threads,
        worker=args.worker,
    )
    with contextlib.suppress(KeyboardInterrupt):  # SIGTERM or Ctrl-C: requests in flight finished
        serve(args.model, options)
    logging.getLogger("osrkit.serve").info("stopped")
    return 0


COMMANDS = {
    "run": _cmd_run,
    "train": _cmd_train,
    "evaluate": _cmd_evaluate,
    "predict": _cmd_predict,
    "export": _cmd_export,
    "serve": _cmd_serve,
    "perf": _cmd_perf,
    "protocol": _cmd_protocol,
}
