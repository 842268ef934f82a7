"""CIFAR-10 split 0, the pretrained track, on the full training set: the first split of
``osrkit protocol cifar10-splits-pretrained`` on its own (known: airplane, automobile,
deer, frog, horse, truck; trained on the 30,000 JPEG training photos of those classes,
tested on all 10,000 PNG test photos), with the training FLOPs and the wall time.

    python benchmarks/pretrained_split0.py [--out benchmarks/results]

Writes ``pretrained_split0.json`` and ``pretrained_split0.md``. The trained network is
cached under ``OUT/cache`` as the protocol caches it, so the full protocol reuses it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from osrkit.data.spec import CIFAR10_SPEC
from osrkit.hardware import machine_info
from osrkit.models import create_backbone
from osrkit.perf.pretrained_speed import training_flops
from osrkit.protocols import CIFAR10_SPLITS, Context
from osrkit.protocols.results import run_splits, split_classes
from osrkit.training.recipe import size_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    out = Path(args.out)
    ctx = Context(out=out, pretrained=True, progress=True)
    train, test = ctx.data("cifar10:train", CIFAR10_SPEC), ctx.data("cifar10:test", CIFAR10_SPEC)
    t0 = time.perf_counter()
    r = run_splits(
        ctx, train, test, CIFAR10_SPLITS[:1], None, ("auroc", "oscr", "macro_f1"), sort_classes=True
    )
    wall = time.perf_counter() - t0
    split = r["splits"][0]
    d = r["decision_scorer"]
    known_train, _ = split_classes(train, tuple(sorted(CIFAR10_SPLITS[0])))
    config = ctx.sized_config(known_train)
    images = size_recipe(ctx.backbone(known_train), len(known_train), 6).train_images * config.epochs
    net = create_backbone(ctx.backbone(known_train), CIFAR10_SPEC, 6, pretrained=False)
    per_image = training_flops(net, CIFAR10_SPEC.shape)
    result = {
        "known_classes": [train.class_names[c] for c in CIFAR10_SPLITS[0]],
        "decision_scorer": d,
        "closed_set_accuracy": split["closed_set_accuracy"],
        "auroc": {s: v["auroc"] for s, v in split["scorers"].items()},
        "fpr_at_95_tpr": {s: v["fpr_at_95_tpr"] for s, v in split["scorers"].items()},
        "recipe": config.to_dict(),
        "training_gflop_per_image": per_image / 1e9,
        "training_images": images,
        "training_tflop": images * per_image / 1e12,
        "wall_s": wall,
        "machine": machine_info(),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "pretrained_split0.json").write_text(json.dumps(result, indent=2) + "\n")
    tflop = f"{result['training_tflop']:.1f} TFLOP of training ({images} images); "
    lines = [
        "# CIFAR-10 split 0, pretrained track (efficientnet_lite0), full training set",
        "",
        f"{result['machine']['cpu']}, {result['machine']['torch_threads']} threads; {tflop}"
        f"{wall:.0f} s wall (training, scoring and calibration).",
        "",
        f"closed-set accuracy {result['closed_set_accuracy']:.4f}; decision `{d}` (declared) AUROC "
        f"{result['auroc'][d]:.4f}, FPR@95%TPR {result['fpr_at_95_tpr'][d]:.4f}",
        "",
        "| scorer | AUROC | FPR@95%TPR |",
        "|---|---:|---:|",
        *[f"| `{s}` | {a:.4f} | {result['fpr_at_95_tpr'][s]:.4f} |" for s, a in result["auroc"].items()],
    ]
    (out / "pretrained_split0.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
