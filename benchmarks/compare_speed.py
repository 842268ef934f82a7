"""Side by side: the ratios of several ``osrkit perf speed`` runs (each a ``speed.json``),
and how each run's ratios compare with the first's. Runs of different commits on the same
machine, one right after the other, give the "no ratio more than 10% below" check.

    python benchmarks/compare_speed.py LABEL=path/speed.json LABEL=path/speed.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def ratios(r: dict) -> dict[str, float]:
    """Every ratio a speed run reports (what is compared across runs)."""
    out: dict[str, float] = {}
    train = list(r["training_img_s"].items())
    for name, v in train[1:]:
        out[f"training: {name.split(' (')[0]} / conventional"] = v / train[0][1]
    for batch, v in r["scoring_img_s"].items():
        out[f"scoring batch {batch}: fast / plain"] = v["on"] / v["off"]
    out["achieved fraction of fp32 mm (batch 1024, fast)"] = r["mm_fraction"]
    return out


def absolutes(r: dict) -> dict[str, str]:
    out = {
        "training, fast loop (img/s)": f"{list(r['training_img_s'].values())[-1]:,.0f}",
        "scoring batch 1024, fast (img/s)": f"{r['scoring_img_s']['1024']['on']:,.0f}",
        "single-image predict p50 / p99, fast (ms)": "{:.2f} / {:.2f}".format(*r["latency_ms"]["on"]),
        "seed metrics, fast vs plain: largest difference": f"{r['metric_drift']['max_abs_diff']:.5f}",
    }
    for key, flag in (("run", ""), ("run_all_scorers", " --scorers all")):
        if key in r:
            e = r[key]
            scorers = f", {e['scorers']} scorers" if "scorers" in e else ""
            out[f"`osrkit run{flag}` wall (s){' ' if flag else ''}"] = f"{e['wall_s']:.1f}{scorers}"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="LABEL=SPEED_JSON")
    args = parser.parse_args()
    runs = []
    for item in args.runs:
        label, _, path = item.partition("=")
        runs.append((label, json.loads(Path(path).read_text())))
    labels = [label for label, _ in runs]
    base = ratios(runs[0][1])
    print(
        "| ratio | "
        + " | ".join(labels)
        + " | "
        + " | ".join(f"{lb} / {labels[0]}" for lb in labels[1:])
        + " |"
    )
    print("|---|" + "---:|" * (2 * len(labels) - 1))
    worst = {}
    for key, v0 in base.items():
        values = [ratios(r)[key] for _, r in runs]
        rel = [v / v0 for v in values[1:]]
        for lb, x in zip(labels[1:], rel):
            worst[lb] = min(worst.get(lb, 9.0), x)
        cells = [f"{v:.2f}" for v in values] + [f"{x:.2f}" for x in rel]
        print(f"| {key} | " + " | ".join(cells) + " |")
    print()
    print("| measurement | " + " | ".join(labels) + " |")
    print("|---|" + "---:|" * len(labels))
    keys = dict.fromkeys(k for _, r in runs for k in absolutes(r))
    for key in keys:
        print(f"| {key} | " + " | ".join(absolutes(r).get(key, "-") for _, r in runs) + " |")
    print()
    for lb, x in worst.items():
        verdict = "ok" if x >= 0.9 else "short"
        print(f"target {lb}-ratios-within-10%-of-{labels[0]}: {x:.3f} (goal >= 0.9) {verdict}")


if __name__ == "__main__":
    main()
