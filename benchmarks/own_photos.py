"""A few hundred photos per class, tried as a new user would: the README's own-data command
exactly as written, default options, timed end to end.

The folders are laid out from the shared CIFAR-10 copy: ``my_train`` holds the first 300
JPEG training photos (by file name) of three classes, ``my_test`` every test photo of those
classes (3,000 PNGs) and ``my_unknown`` every test photo of the other seven (7,000). The
known classes are the first three of CIFAR-10's list (airplane, automobile, bird), fixed
before any run; nothing is chosen by looking at the unknowns.

    python benchmarks/own_photos.py [--per-class 300] [--out benchmarks/results]

Writes ``own_photos.json`` and ``own_photos.md`` (closed-set accuracy, the decision
scorer's AUROC and FPR at 95% TPR, wall time, the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from osrkit.data.root import resolve_data_root
from osrkit.files.atomic import atomic_write_json, atomic_write_text
from osrkit.hardware import machine_info

KNOWN = ("airplane", "automobile", "bird")


def lay_out(root: Path, cifar: Path, per_class: int) -> None:
    """``my_train``, ``my_test`` and ``my_unknown`` under ``root``, as the README lays them out."""
    classes = sorted(p.name for p in (cifar / "test").iterdir() if p.is_dir())
    for name in KNOWN:
        (root / "my_train" / name).mkdir(parents=True)
        for f in sorted((cifar / "train" / name).iterdir())[:per_class]:
            shutil.copy(f, root / "my_train" / name / f.name)
        (root / "my_test").mkdir(exist_ok=True)
        (root / "my_test" / name).symlink_to((cifar / "test" / name).resolve())
    for name in classes:
        if name not in KNOWN:
            (root / "my_unknown").mkdir(exist_ok=True)
            (root / "my_unknown" / name).symlink_to((cifar / "test" / name).resolve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    cifar = Path(resolve_data_root(None)) / "CIFAR10"
    work = Path(tempfile.mkdtemp(prefix="own_photos_"))
    try:
        lay_out(work, cifar, args.per_class)
        osrkit = Path(sys.executable).with_name("osrkit")
        command = "osrkit run --train my_train --known my_test --unknown my_unknown --out runs/mine"
        t0 = time.perf_counter()
        done = subprocess.run([str(osrkit), *command.split()[1:]], cwd=work, env=os.environ.copy())
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            sys.exit(f"the run failed (exit {done.returncode})")
        metrics = json.loads((work / "runs/mine/metrics.json").read_text())
        config = json.loads((work / "runs/mine/model/config.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    d = metrics["decision_scorer"]
    result = {
        "command": command,
        "known_classes": list(KNOWN),
        "train_per_class": args.per_class,
        "counts": metrics["counts"],
        "backbone": config["backbone"],
        "training": config["training"],
        "decision_scorer": d,
        "closed_set_accuracy": metrics["closed_set_accuracy"],
        "decision_auroc": metrics["scorers"][d]["auroc"],
        "decision_fpr_at_95_tpr": metrics["scorers"][d]["fpr_at_95_tpr"],
        "auroc": {s: m["auroc"] for s, m in metrics["scorers"].items()},
        "wall_s": wall,
        "machine": machine_info(),
    }
    out = Path(args.out)
    atomic_write_json(out / "own_photos.json", result)
    lines = [
        f"# A few hundred photos per class ({args.per_class} a class, {', '.join(KNOWN)})",
        "",
        f"`{command}` on folders laid out by `benchmarks/own_photos.py`; {result['machine']['cpu']}, "
        f"{result['machine']['torch_threads']} threads.",
        "",
        "| backbone | closed-set acc | decision | AUROC | FPR@95%TPR | wall |",
        "|---|---:|---|---:|---:|---:|",
        f"| {config['backbone']['name']} | {result['closed_set_accuracy']:.4f} | `{d}` | "
        f"{result['decision_auroc']:.4f} | {result['decision_fpr_at_95_tpr']:.4f} | {wall:.0f} s |",
        "",
        "AUROC of every scorer: " + ", ".join(f"`{s}` {v:.4f}" for s, v in result["auroc"].items()),
    ]
    atomic_write_text(out / "own_photos.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
