"""How to adapt the pretrained network: closed-set accuracy per CPU-minute.

The issue asks how ``efficientnet_lite0`` should adapt to a user's photos, chosen by
measured accuracy per CPU-minute. This script trains each way on the same few hundred
photos per class (the folders ``benchmarks/own_photos.py`` lays out: 300 CIFAR-10
training JPEGs of airplane, automobile and bird) and measures, on every test photo of those
three classes, the closed-set accuracy against the CPU time spent (user + system time of
this process, all threads, so that a machine shared with other jobs inflates it less than
wall time):

- a linear head on frozen ImageNet features computed once (``from_classifier(head=...)``);
- fine-tuning at 96, 128 and 160 px with the first 6 blocks frozen (128 px is the default);
- fine-tuning with 12 blocks frozen, and with none;
- each fine-tuned network scored with and without test-time flips.

Only known images are used: the choice it informs must not look at unknowns.

    python benchmarks/adaptation_curve.py [--per-class 300] [--out benchmarks/results]

Writes ``adaptation_curve.json`` and ``adaptation_curve.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from own_photos import lay_out  # noqa: E402

from osrkit import InputSpec, OpenSetRecognizer  # noqa: E402
from osrkit.data.folder import read_image_folder  # noqa: E402
from osrkit.data.root import resolve_data_root  # noqa: E402
from osrkit.files.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from osrkit.hardware import machine_info
from osrkit.models.pretrained import LITE_NORMALIZATION, imagenet_network  # noqa: E402
from osrkit.protocols.results import table  # noqa: E402
from osrkit.training.recipe import size_recipe  # noqa: E402

FINE_TUNED = {  # key: (label, backbone options)
    "128-6": ("fine-tune, 128 px, 6 blocks frozen (default)", {"resolution": 128, "freeze": 6}),
    "128-12": ("fine-tune, 128 px, 12 blocks frozen", {"resolution": 128, "freeze": 12}),
    "96-6": ("fine-tune, 96 px, 6 blocks frozen", {"resolution": 96, "freeze": 6}),
    "160-6": ("fine-tune, 160 px, 6 blocks frozen", {"resolution": 160, "freeze": 6}),
    "128-0": ("fine-tune, 128 px, nothing frozen", {"resolution": 128, "freeze": 0}),
}


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    c0, t0 = time.process_time(), time.perf_counter()  # process time: user + system, all threads
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - t0


def accuracy(model: OpenSetRecognizer, test) -> float:
    outputs = model.outputs(test.to_spec(model.input_spec_))
    return float(np.mean(outputs.predictions == test.labels.numpy()))


def frozen_head(train, test) -> dict:
    """A new linear head on frozen ImageNet features at 128 px, computed once."""
    spec = InputSpec(3, 128, 128, mean=LITE_NORMALIZATION.mean, std=LITE_NORMALIZATION.std)

    def fit() -> OpenSetRecognizer:
        net = imagenet_network("efficientnet_lite0")
        model = OpenSetRecognizer.from_classifier(
            net, spec, train.class_names, "_avg_pooling", backbone="efficientnet_lite0", head="_fc"
        )
        return model.fit(train.to_spec(spec))

    model, cpu, wall = timed(fit)
    acc, cpu_test, wall_test = timed(lambda: accuracy(model, test.to_spec(spec)))
    return {
        "method": "linear head on frozen features, 128 px (computed once)",
        "train_cpu_s": cpu,
        "train_wall_s": wall,
        "accuracy": acc,
        "test_cpu_s": cpu_test,
    }


def fine_tuned(label: str, options: dict, train, test) -> list[dict]:
    recipe = size_recipe("efficientnet_lite0", len(train), len(train.class_names))

    def fit() -> OpenSetRecognizer:
        model = OpenSetRecognizer(train.class_names, backbone="efficientnet_lite0", backbone_options=options)
        return model.fit(train, recipe.config)

    model, cpu, wall = timed(fit)
    rows = []
    for tta in (True, False):
        model.classifier_.flip_tta = tta
        model._engine = None  # the inference engine copies the network: rebuilt with the new setting
        acc, cpu_test, _ = timed(lambda: accuracy(model, test))
        rows.append(
            {
                "method": f"{label}, test flips {'on' if tta else 'off'}",
                "options": options,
                "recipe": recipe.describe("efficientnet_lite0"),
                "train_cpu_s": cpu,
                "train_wall_s": wall,
                "accuracy": acc,
                "test_cpu_s": cpu_test,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--methods",
        default=",".join(["frozen", *FINE_TUNED]),
        help="comma-separated: frozen (the head on frozen features) and any of " + ", ".join(FINE_TUNED),
    )
    args = parser.parse_args()
    methods = args.methods.split(",")
    unknown = set(methods) - {"frozen", *FINE_TUNED}
    if unknown:
        parser.error(f"unknown method {sorted(unknown)[0]!r}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cifar = Path(resolve_data_root(None)) / "CIFAR10"
    work = Path(tempfile.mkdtemp(prefix="adaptation_"))
    rows: list[dict] = []
    try:
        lay_out(work, cifar, args.per_class)
        train = read_image_folder(work / "my_train")
        test = read_image_folder(work / "my_test", class_names=train.class_names, spec=train.spec)
        for key in methods:
            if key == "frozen":
                rows.append(frozen_head(train, test))
            else:
                rows.extend(fine_tuned(*FINE_TUNED[key], train, test))
            print(json.dumps(rows[-1], indent=1), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "train_per_class": args.per_class,
        "rows": rows,
        "machine": machine_info(),
        "load_average": os.getloadavg(),
    }
    out = Path(args.out)
    atomic_write_json(out / "adaptation_curve.json", result)
    lines = [
        f"# Adapting efficientnet_lite0: accuracy per CPU-minute ({args.per_class} photos a class)",
        "",
        f"{result['machine']['cpu']}, {result['machine']['torch_threads']} threads; known test "
        f"photos only ({len(test)}).",
        "",
        *table(
            ["method", "closed-set acc", "training CPU-min", "test CPU-s"],
            [
                [
                    r["method"],
                    f"{r['accuracy']:.4f}",
                    f"{r['train_cpu_s'] / 60:.1f}",
                    f"{r['test_cpu_s']:.0f}",
                ]
                for r in rows
            ],
        ),
    ]
    atomic_write_text(out / "adaptation_curve.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
