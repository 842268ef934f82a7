"""``osrkit perf speed``: how fast osrkit trains and scores on this CPU, measured side by
side in one run.

Absolute times on shared machines are noisy, so every comparison is made within one
process, variants interleaved, and reported as a ratio:

- training throughput of our loop against a conventional per-sample ``Dataset`` +
  ``DataLoader`` loop for the same model, batch size and augmentation
  (``osrkit.perf.training_speed``);
- scoring throughput of the whole recognizer (both networks, every scorer, the decision)
  at batch sizes 1, 64 and 1024, with and without the fast paths, and the achieved
  GFLOP/s against this machine's float32 ``torch.mm`` rate;
- single-image latency of the predict path;
- the metrics with the inference fast paths on and off, on the digits baseline's data
  (MNIST test against CIFAR-10);
- wall time and peak memory of the default ``osrkit run``.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from osrkit._deprecation import renamed
from osrkit.data.catalog import load_dataset
from osrkit.errors import ConfigError
from osrkit.evaluation.evaluate import evaluate
from osrkit.evaluation.report import target_line
from osrkit.files.atomic import atomic_write_json, atomic_write_text
from osrkit.hardware import elapsed, machine_info, mm_gflops, native_bf16
from osrkit.models import backbone_entry
from osrkit.models.registry import PRETRAINED_DEFAULT
from osrkit.perf.pretrained_speed import pretrained_speed, render_pretrained
from osrkit.perf.training_speed import training_speed
from osrkit.recognizer.engine import FastPaths
from osrkit.recognizer.estimator import OpenSetRecognizer

log = logging.getLogger(__name__)

# The digits baseline's goals (the project's first issue), on the decision scorer of the
# default `osrkit run`: metric -> (goal, direction).
DIGITS_BASELINE_TARGETS = {
    "closed_set_accuracy": (0.993, "min"),
    "decision_auroc": (0.999, "min"),
    "decision_fpr_at_95_tpr": (0.005, "max"),
    "decision_macro_f1": (0.97, "min"),
}


@dataclass
class SpeedOptions:
    """What ``osrkit perf speed`` measures and on how much data."""

    data_root: str | None = None
    train_images: int = 7680  # images per training-throughput measurement (60 batches of 128)
    repeats: int = 3  # interleaved repetitions; the median is reported
    latency_calls: int = 1000
    model: str | None = None  # model folder to score with; default: the one `osrkit run` trains
    run: bool = True  # time the default `osrkit run` end to end
    all_scorers: bool = True  # ... and `osrkit run --scorers all` beside it
    compare_training: bool = False  # also run `osrkit run --no-fast` and compare its metrics
    compile: bool = False  # also measure torch.compile (a rejected fast path, BENCHMARKS.md)
    eval_images: int | None = None  # known/unknown test images for the metric comparison
    pretrained: bool = True  # also the pretrained backbone's forward and training (where installed)


# ----------------------------------------------------------------------------- the machine


def forward_flops(recognizer: OpenSetRecognizer) -> int:
    """FLOPs of one image's forward pass through the classifier and the autoencoder
    (2 per multiply-accumulate of convolutions and matrix products, as counted by
    ``torch.utils.flop_counter``)."""
    x = torch.zeros(1, *recognizer.input_spec_.shape)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        recognizer.classifier_.forward_with_features(x)
        if recognizer.autoencoder_ is not None:
            recognizer.autoencoder_(x)
    return int(counter.get_total_flops())


# ----------------------------------------------------------------------------- scoring
def score_and_decide(recognizer: OpenSetRecognizer, x: torch.Tensor) -> np.ndarray:
    """The whole recognizer on a batch: both networks, every scorer, the decision."""
    outputs = recognizer.outputs(x)
    return recognizer.decide(outputs, scores=recognizer.scores_from_outputs(outputs))


def scoring_throughput(recognizer: OpenSetRecognizer, images: torch.Tensor, batch: int) -> float:
    """Images/s of ``score_and_decide`` on uint8 images, in batches of ``batch``."""
    chunks = list(images.split(batch))
    if batch == 1:
        chunks = chunks[:2000]
    score_and_decide(recognizer, chunks[0])  # builds the engine, warms oneDNN up
    n = sum(len(c) for c in chunks)
    return n / elapsed(lambda: [score_and_decide(recognizer, c) for c in chunks])


def latency_ms(recognizer: OpenSetRecognizer, images: torch.Tensor, calls: int) -> tuple[float, float]:
    """p50 and p99 of ``recognizer.predict`` on one uint8 image of the model's spec, in ms."""
    recognizer.predict(images[0])
    times = []
    for i in range(calls):
        img = images[i % len(images)]
        t = time.perf_counter()
        recognizer.predict(img)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3)


def compiled_throughput(recognizer: OpenSetRecognizer, images: torch.Tensor) -> tuple[float, float]:
    """(compile seconds, images/s at batch 1024) of the engine under ``torch.compile``."""
    engine = recognizer.engine()
    clf, ae = engine.classifier, engine.autoencoder
    engine.classifier = torch.compile(clf)
    engine.autoencoder = torch.compile(ae) if ae is not None else None
    try:
        compile_s = elapsed(lambda: score_and_decide(recognizer, images[:1024]))
        rate = scoring_throughput(recognizer, images, 1024)
    finally:
        engine.classifier, engine.autoencoder = clf, ae
    return compile_s, rate


def metric_drift(recognizer: OpenSetRecognizer, known, unknown) -> dict:
    """Metrics of the same model on ``known`` vs ``unknown`` with the fast paths on and off."""
    saved = recognizer.fast_paths
    out = {}
    try:
        for label, paths in (("off", FastPaths.off()), ("on", FastPaths())):
            recognizer.fast_paths = paths
            m = evaluate(recognizer, known, unknown).metrics
            out[label] = {"closed_set_accuracy": m["closed_set_accuracy"]} | {
                f"{name}_{key}": s[key]
                for name, s in m["scorers"].items()
                for key in ("auroc", "known_accept_rate")
            }
    finally:
        recognizer.fast_paths = saved
    out["max_abs_diff"] = max(abs(out["on"][k] - out["off"][k]) for k in out["off"])
    return out


# ----------------------------------------------------------------------------- end to end
def timed_run(out: Path, data_root: str | None, extra: list[str]) -> dict:
    """Wall time and peak memory of ``osrkit run`` in a child process, and its metrics."""
    cmd = [sys.executable, "-m", "osrkit", "-q", "run", "--out", str(out), "--overwrite", *extra]
    if data_root:
        cmd += ["--data-root", data_root]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k != "OSRKIT_FAST"}  # the default run, fast paths on
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise ConfigError(f"`{' '.join(cmd[2:])}` failed: {proc.stderr.strip().splitlines()[-1:]}")
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # max over children, KiB
    m = json.loads((out / "metrics.json").read_text())
    decision = m.get("decision_scorer", "combined")
    c = m["scorers"][decision]
    return {
        "wall_s": wall,
        "peak_rss_gb": peak_kb / 1024**2,
        "peak_rss_is_max_of_earlier_children": before >= peak_kb,
        "timing_s": m["timing_s"],
        "closed_set_accuracy": m["closed_set_accuracy"],
        "decision_scorer": decision,
        "scorers": len(m["scorers"]),
        "decision_auroc": c["auroc"],
        "decision_fpr_at_95_tpr": c["fpr_at_95_tpr"],
        "decision_macro_f1": c["macro_f1"],
        "msp_auroc": m["scorers"]["msp"]["auroc"],
    }


# ----------------------------------------------------------------------------- the report
def render(r: dict) -> str:
    """The Markdown table and target lines of a speed result."""
    mi = r["machine"]
    lines = [
        f"# osrkit perf speed ({mi['cpu']}; {mi['cores']} cores, {mi['torch_threads']} torch threads; "
        f"torch {mi['torch']}; native bf16: {mi['native_bf16']})",
        "",
        f"float32 torch.mm 2048x2048: {r['mm_fp32_gflops']:.1f} GFLOP/s; bfloat16: "
        f"{r['mm_bf16_gflops']:.1f} GFLOP/s. One image's forward pass (classifier + autoencoder): "
        f"{r['flops_per_image'] / 1e6:.2f} MFLOP.",
        "",
        "| measurement | value | ratio |",
        "|---|---:|---:|",
    ]
    tr = r["training_img_s"]
    base = next(iter(tr.values()))
    for name, v in tr.items():
        lines.append(f"| training, {name} | {v:,.0f} img/s | {v / base:.2f}x |")
    for batch, v in r["scoring_img_s"].items():
        off = v["off"]
        lines.append(f"| scoring batch {batch}, fast paths off | {off:,.0f} img/s | 1.00x |")
        lines.append(
            f"| scoring batch {batch}, fast paths on ({r['fast_paths']}) | {v['on']:,.0f} img/s | "
            f"{v['on'] / off:.2f}x |"
        )
    lines.append(
        f"| achieved GFLOP/s at batch 1024 (fast) | {r['achieved_gflops']:.1f} | "
        f"{r['mm_fraction']:.2f} of fp32 mm, {r.get('mm_bf16_fraction', float('nan')):.2f} of bf16 mm |"
    )
    if "compile" in r:
        c = r["compile"]
        lines.append(
            f"| scoring batch 1024, torch.compile on top (compile {c['compile_s']:.1f} s) | "
            f"{c['img_s']:,.0f} img/s | {c['img_s'] / r['scoring_img_s']['1024']['on']:.2f}x of fast |"
        )
    for label, (p50, p99) in r["latency_ms"].items():
        lines.append(f"| single-image predict, fast paths {label}: p50 / p99 | {p50:.2f} / {p99:.2f} ms | |")
    d = r["metric_drift"]
    lines.append(
        f"| seed metrics, fast paths on vs off: largest difference | {d['max_abs_diff']:.5f} | "
        f"{len(d['off'])} metrics |"
    )
    flags = {"run": "", "run_all_scorers": " --scorers all", "run_no_fast": " --no-fast"}
    for label, flag in flags.items():
        if label in r:
            e = r[label]
            what = f"`osrkit run{flag}`"
            ratio = f"{e['wall_s'] / r['run']['wall_s']:.2f}x of the default" if label != "run" else ""
            lines.append(
                f"| {what}: wall / peak memory ({e['scorers']} scorers) | {e['wall_s']:.1f} s / "
                f"{e['peak_rss_gb']:.2f} GB | train {e['timing_s'].get('train', 0):.1f} s {ratio} |"
            )
            lines.append(
                f"| {what}: closed-set acc / {e['decision_scorer']} AUROC / FPR95 / macro-F1 / MSP AUROC | "
                f"{e['closed_set_accuracy']:.4f} / {e['decision_auroc']:.5f} / "
                f"{e['decision_fpr_at_95_tpr']:.4f} / {e['decision_macro_f1']:.4f} / {e['msp_auroc']:.4f} | |"
            )
    if "pretrained" in r:
        lines += render_pretrained(r["pretrained"])
    lines += ["", *r["targets"]]
    return "\n".join(lines) + "\n"


def targets(r: dict) -> list[str]:
    """One ``target`` line per goal of a speed result (``evaluation.report.target_line``)."""
    tr = list(r["training_img_s"].values())
    out = [
        target_line("training-speedup", tr[-1] / tr[0], 3.0, "min", ".2f", "x"),
        target_line("scoring-throughput-batch-1024", r["scoring_img_s"]["1024"]["on"], 10_000, "min", ",.0f"),
        target_line("fraction-of-fp32-mm-rate", r["mm_fraction"], 0.30, "min", ".2f"),
        target_line("single-image-latency-p50", r["latency_ms"]["on"][0], 2.0, "max", ".2f", " ms"),
        target_line("fast-path-metric-drift", r["metric_drift"]["max_abs_diff"], 0.001, "max", ".5f"),
    ]
    if "pretrained" in r:
        p = r["pretrained"]
        best = max(v["mm_fraction"] for v in p["forward"].values())
        out.append(target_line("pretrained-forward-fraction-of-mm-rate", best, 0.40, "min", ".2f"))
        step = p["training"]["freeze 0"]["mm_fraction"]
        out.append(target_line("pretrained-training-fraction-of-mm-rate", step, 0.40, "min", ".2f"))
    if "run" in r:
        e = r["run"]
        out.append(target_line("run-wall-time", e["wall_s"], 180, "max", ".1f", " s"))
        for key, (goal, direction) in DIGITS_BASELINE_TARGETS.items():
            # the lines keep their "seed-" names: results files and BENCHMARKS.md quote them
            out.append(target_line(f"seed-{key.replace('_', '-')}", e[key], goal, direction, ".5g"))
    return out


def speed(out_dir: str | os.PathLike = "results", options: SpeedOptions = SpeedOptions()) -> dict:
    """Run every measurement; write ``out_dir/speed.json`` and ``out_dir/speed.md``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A bad --model fails now, not after minutes of measurements.
    given = OpenSetRecognizer.from_pretrained(options.model) if options.model else None
    r: dict = {"machine": machine_info(), "options": options.__dict__}
    log.info("machine: %s", r["machine"])
    r["mm_fp32_gflops"] = mm_gflops()
    # Without native bfloat16 the product is emulated and a 2048^3 one takes minutes; a
    # 512^3 one measures the same (slow) rate in seconds.
    r["mm_bf16_gflops"] = mm_gflops(n=2048 if native_bf16() else 512, dtype=torch.bfloat16)

    train = load_dataset("mnist:train", options.data_root)

    log.info("timing the training loops")
    n = min(options.train_images, len(train))
    r["training_img_s"] = training_speed(train.images[:n], train.labels[:n], options.repeats)

    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        model_dir = options.model
        if options.run:
            log.info("timing `osrkit run`")
            r["run"] = timed_run(Path(tmp) / "run", options.data_root, [])
            model_dir = model_dir or str(Path(tmp) / "run" / "model")
            if options.all_scorers:
                log.info("timing `osrkit run --scorers all`")
                r["run_all_scorers"] = timed_run(
                    Path(tmp) / "run-all", options.data_root, ["--scorers", "all"]
                )
            if options.compare_training:
                r["run_no_fast"] = timed_run(Path(tmp) / "run-no-fast", options.data_root, ["--no-fast"])
        if model_dir is None:
            raise ConfigError("nothing to score with: pass --model MODEL_DIR or let the benchmark run")
        recognizer = given or OpenSetRecognizer.from_pretrained(model_dir)
    spec = recognizer.input_spec_  # the test sets in the scored model's spec
    known = load_dataset("mnist:test", options.data_root, input_spec=spec).take(options.eval_images, seed=0)
    unknown = load_dataset("cifar10", options.data_root, input_spec=spec).take(options.eval_images, seed=0)

    log.info("timing scoring")
    r["fast_paths"] = FastPaths().describe()
    r["flops_per_image"] = forward_flops(recognizer)
    images = known.images
    fast, off = FastPaths(), FastPaths.off()
    r["scoring_img_s"] = {}
    for batch in (1, 64, 1024):
        runs: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(options.repeats):
            for label, paths in (("off", off), ("on", fast)):
                recognizer.fast_paths = paths
                runs[label].append(scoring_throughput(recognizer, images, batch))
        r["scoring_img_s"][str(batch)] = {k: statistics.median(v) for k, v in runs.items()}
    r["achieved_gflops"] = r["flops_per_image"] * r["scoring_img_s"]["1024"]["on"] / 1e9
    r["mm_fraction"] = r["achieved_gflops"] / r["mm_fp32_gflops"]  # the yardstick
    r["mm_bf16_fraction"] = r["achieved_gflops"] / r["mm_bf16_gflops"]  # the arithmetic actually used
    r["latency_ms"] = {}
    for label, paths in (("off", off), ("on", fast)):
        recognizer.fast_paths = paths
        r["latency_ms"][label] = latency_ms(recognizer, images, options.latency_calls)
    if options.compile:
        recognizer.fast_paths = fast
        compile_s, rate = compiled_throughput(recognizer, images)
        r["compile"] = {"compile_s": compile_s, "img_s": rate}
    log.info("comparing metrics with fast paths on and off")
    r["metric_drift"] = metric_drift(recognizer, known, unknown)
    if options.pretrained and backbone_entry(PRETRAINED_DEFAULT).installed():
        log.info("timing the pretrained backbone")
        r["pretrained"] = pretrained_speed(r["mm_fp32_gflops"], r["mm_bf16_gflops"], repeats=options.repeats)
    r["targets"] = targets(r)
    atomic_write_json(out_dir / "speed.json", r)
    atomic_write_text(out_dir / "speed.md", render(r))
    return r


__getattr__ = renamed(__name__, {"SEED_TARGETS": "DIGITS_BASELINE_TARGETS"})
