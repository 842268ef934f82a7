"""Wall time and peak memory of the default `osrkit run` (what `make run` does), with the
digits baseline's targets (protocol ``seed``) checked on the model's decision scorer.

    python benchmarks/seed_run.py [--out runs/bench] [extra `osrkit run` options]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from osrkit.evaluation.report import target_line
from osrkit.files.atomic import atomic_write_json
from osrkit.perf.speed import DIGITS_BASELINE_TARGETS, timed_run

RESULTS = Path(__file__).parent / "results"

# (name, measured key, goal, direction): run time and memory, then the digits baseline's
TARGETS = [
    ("wall-time-s", "wall_s", 300.0, "max"),
    ("peak-memory-gb", "peak_rss_gb", 4.0, "max"),
    *((key.replace("_", "-"), key, goal, d) for key, (goal, d) in DIGITS_BASELINE_TARGETS.items()),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("extra", nargs="*", help="extra `osrkit run` options")
    args = parser.parse_args()
    measured = timed_run(Path(args.out), None, args.extra) | {"cpu_count": os.cpu_count()}
    m = json.loads((Path(args.out) / "metrics.json").read_text())
    print(
        "| scorer | AUROC | AUPR-in | AUPR-out | FPR@95%TPR | OSCR | macro-F1 "
        "| known accepted | unknown rejected |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in m["scorers"].items():
        label = f"**{name}** (decision)" if name == m["decision_scorer"] else name
        print(
            f"| {label} | {s['auroc']:.5f} | {s['aupr_in']:.5f} | {s['aupr_out']:.5f} | "
            f"{s['fpr_at_95_tpr']:.4f} | {s['oscr']:.4f} | {s['macro_f1']:.4f} | "
            f"{s['known_accept_rate']:.4f} | {s['unknown_reject_rate']:.4f} |"
        )
    print(f"\nclosed-set accuracy {m['closed_set_accuracy']:.4f}; stage times (s): {m['timing_s']}\n")
    for name, key, goal, direction in TARGETS:
        print(target_line(f"seed-run-{name}", measured[key], goal, direction, ".5g"))
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "seed_run.json", measured | {"metrics": m})


if __name__ == "__main__":
    main()
