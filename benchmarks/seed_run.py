"""Wall time and peak memory of the default `osrkit run` (what `make run` does), with the
seed protocol's targets checked from the metrics it wrote.

    python benchmarks/seed_run.py [--out runs/bench]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from osrkit.io import atomic_write_json

RESULTS = Path(__file__).parent / "results"

TARGETS = [  # (name, measured key, goal, direction)
    ("wall time (s)", "wall_s", 300.0, "max"),
    ("peak memory (GB)", "peak_rss_gb", 4.0, "max"),
    ("closed-set accuracy", "closed_set_accuracy", 0.993, "min"),
    ("combined AUROC", "combined_auroc", 0.999, "min"),
    ("combined FPR@95%TPR", "combined_fpr95", 0.005, "max"),
    ("combined macro-F1", "combined_macro_f1", 0.97, "min"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("extra", nargs="*", help="extra `osrkit run` options")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "osrkit", "-q", "run", "--out", args.out, "--overwrite", *args.extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    m = json.loads((Path(args.out) / "metrics.json").read_text())
    c = m["scorers"]["combined"]
    measured = {
        "wall_s": wall,
        "peak_rss_gb": peak_kb / 1024**2,
        "closed_set_accuracy": m["closed_set_accuracy"],
        "combined_auroc": c["auroc"],
        "combined_fpr95": c["fpr_at_95_tpr"],
        "combined_macro_f1": c["macro_f1"],
        "timing_s": m["timing_s"],
        "cpu_count": os.cpu_count(),
    }
    print(
        "| scorer | AUROC | AUPR-in | AUPR-out | FPR@95%TPR | OSCR | macro-F1 "
        "| known accepted | unknown rejected |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in m["scorers"].items():
        print(
            f"| {name} | {s['auroc']:.5f} | {s['aupr_in']:.5f} | {s['aupr_out']:.5f} | "
            f"{s['fpr_at_95_tpr']:.4f} | {s['oscr']:.4f} | {s['macro_f1']:.4f} | "
            f"{s['known_accept_rate']:.4f} | {s['unknown_reject_rate']:.4f} |"
        )
    print(f"\nclosed-set accuracy {m['closed_set_accuracy']:.4f}; stage times (s): {m['timing_s']}\n")
    for name, key, goal, direction in TARGETS:
        value = measured[key]
        ok = value <= goal if direction == "max" else value >= goal
        print(
            f"target {name}: {value:.5g} (goal {'<=' if direction == 'max' else '>='} {goal}) "
            f"{'ok' if ok else 'short'}"
        )
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "seed_run.json", measured | {"metrics": m})


if __name__ == "__main__":
    main()
