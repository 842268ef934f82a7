"""How far the exported ONNX graph's scores are from the PyTorch runtime's, per scorer.

The graph runs the float32 reference path (no folded batch norm, no bfloat16); the
runtime's default fast paths fold batch norm and, on CPUs with native bfloat16 (AMX,
AVX-512 BF16), compute the networks in bfloat16. This script trains two small models on
real data (digits: ``small_cnn`` on 6,000 MNIST training images; colour: ``colour_cnn``
on 3,000 CIFAR-10 split-0 training images; every scorer fitted) and scores 1,000 test
images (half known, half unknown) with: the ONNX graph; the reference path; the fast
paths as this CPU resolves them; and the fast paths with bfloat16 forced on (emulated,
and slow, where the CPU lacks it, but numerically what an AMX machine computes).

Per scorer: the largest absolute difference from the ONNX scores, the same in units of
the scorer's known spread ``|threshold - median|`` of the validation scores (a fusion's
spread is 1 by construction), and how many decisions differ, with the largest
distance from the threshold (in spread units) at which one did.

    python benchmarks/onnx_gap.py [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from osrkit import FastPaths, ImageSet, OpenSetRecognizer, TrainConfig, load_dataset
from osrkit.export import OnnxRecognizer, export_onnx
from osrkit.files.atomic import atomic_write_json, atomic_write_text
from osrkit.hardware import native_bf16
from osrkit.protocols import split_classes
from osrkit.scorers import FusionScorer

RESULTS = Path(__file__).parent / "results"
KNOWN_CIFAR = (0, 1, 4, 6, 7, 9)


def _models() -> list[tuple[str, OpenSetRecognizer, ImageSet]]:
    out = []
    mnist = load_dataset("mnist:train").take(6000, seed=0)
    digits = OpenSetRecognizer(mnist.class_names, scorers="all", device="cpu")
    digits.fit(mnist, TrainConfig(epochs=2, ae_epochs=2, val_size=1000))
    known = load_dataset("mnist:test").take(500, seed=0)
    unknown = load_dataset("cifar10:test", input_spec=digits.input_spec_).take(500, seed=0)
    out.append(("digits (small_cnn, 1x28x28)", digits, _mix(known, unknown)))

    train, _ = split_classes(load_dataset("cifar10:train"), KNOWN_CIFAR)
    train = train.take(3000, seed=0)
    colour = OpenSetRecognizer(train.class_names, scorers="all", device="cpu")
    colour.fit(train, {"epochs": 2, "val_size": 600})
    known, unknown = split_classes(load_dataset("cifar10:test"), KNOWN_CIFAR)
    out.append(
        ("colour (colour_cnn, 3x32x32)", colour, _mix(known.take(500, seed=0), unknown.take(500, seed=0)))
    )
    return out


def _mix(known: ImageSet, unknown: ImageSet) -> np.ndarray:
    return np.concatenate([known.images.numpy(), unknown.images.numpy()])


def _spread(model: OpenSetRecognizer, name: str, val_scores: np.ndarray) -> float:
    if isinstance(model.scorers_[name], FusionScorer):
        return 1.0
    return max(abs(model.thresholds_[name] - float(np.median(val_scores))), 1e-12)


def measure(label: str, model: OpenSetRecognizer, images: np.ndarray, folder: Path) -> dict:
    onnx_path = export_onnx(model, folder / "model.onnx")
    graph = OnnxRecognizer(onnx_path).score_all(images)
    val = images[:500]  # the known half: the spread is measured on known images only
    paths = {
        "reference": FastPaths.off(),
        "fast (this CPU)": FastPaths(),
        "fast, bf16 forced": FastPaths(bf16=True),
    }
    rows: dict = {}
    for path_name, paths_value in paths.items():
        model.fast_paths = paths_value
        t0 = time.perf_counter()
        scores = model.score_all(images)
        seconds = time.perf_counter() - t0
        ref_known = model.score_all(val) if path_name == "reference" else None
        for name, s in scores.items():
            g, t = graph[name], model.thresholds_[name]
            spread = rows.get(name, {}).get("spread") or _spread(model, name, ref_known[name])
            flips = (g > t) != (s > t)
            rows.setdefault(name, {"spread": spread})[path_name] = {
                "max_abs": float(np.abs(g - s).max()),
                "max_in_spreads": float(np.abs(g - s).max() / spread),
                "decisions_differ": int(flips.sum()),
                "farthest_flip_in_spreads": float(np.abs(g[flips] - t).max() / spread)
                if flips.any()
                else 0.0,
            }
        rows.setdefault("_seconds", {})[path_name] = seconds
    model.fast_paths = FastPaths()
    return {"model": label, "images": len(images), "scorers": rows}


def render(results: list[dict], machine: str) -> str:
    lines = [
        "# ONNX graph vs PyTorch runtime: score gaps per scorer",
        "",
        f"Machine: {machine}. 1,000 test images per model (500 known, 500 unknown). Gap = the "
        "largest |ONNX - PyTorch| over the images; in spreads = divided by the scorer's "
        "|threshold - known median| (1 for a fusion). Flips = decisions (score > threshold) "
        "that differ, and the farthest from the threshold any of them lay, in spreads.",
        "",
        "| model | scorer | reference path: gap (spreads) | fast path here: gap (spreads), flips | "
        "bf16 forced: gap (spreads), flips, farthest flip |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        for name, row in r["scorers"].items():
            if name.startswith("_"):
                continue
            ref, fast, bf = row["reference"], row["fast (this CPU)"], row["fast, bf16 forced"]
            lines.append(
                f"| {r['model']} | {name} | {ref['max_abs']:.2e} ({ref['max_in_spreads']:.1e}) | "
                f"{fast['max_abs']:.2e} ({fast['max_in_spreads']:.1e}), {fast['decisions_differ']} | "
                f"{bf['max_abs']:.2e} ({bf['max_in_spreads']:.3f}), {bf['decisions_differ']}, "
                f"{bf['farthest_flip_in_spreads']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from osrkit.hardware import machine_info

    info = machine_info()
    machine = f"{info['cpu']}, native bf16: {native_bf16()}"
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, model, images) in enumerate(_models()):
            folder = Path(tmp) / str(i)
            folder.mkdir()
            results.append(measure(label, model, images, folder))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "onnx_gap.json", {"machine": machine, "results": results})
    text = render(results, machine)
    atomic_write_text(args.out / "onnx_gap.md", text)
    print(text)


if __name__ == "__main__":
    main()
