"""One table of every scorer's AUROC on digits and on photographs, with each model's
default decision scorer marked: the evidence behind ``osrkit.scorers.selection.default_decision_scorer``.

Reads what the other benchmarks wrote (run them first): ``osrkit protocol all --out
benchmarks/results`` (the MNIST protocols) and ``python benchmarks/cifar_split0.py``.

    python benchmarks/decision_table.py [--results DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from osrkit.files.atomic import atomic_write_text
from osrkit.scorers.selection import report_order

RESULTS = Path(__file__).parent / "results"


def rows(results: Path) -> list[tuple[str, str, dict[str, float]]]:
    """(data, decision scorer, AUROC per scorer) for every unknown set."""
    out = []
    for name in ("seed", "near-far", "crosr"):
        r = json.loads((results / f"{name}.json").read_text())
        for unknown, s in r["sets"].items():
            if name == "near-far" and unknown == "CIFAR-10":
                continue  # the digits baseline's set (protocol seed), listed once
            out.append((f"digits: MNIST vs {unknown} ({name})", r["decision_scorer"], _auroc(s["scorers"])))
    r = json.loads((results / "mnist-splits.json").read_text())
    mean = {k: v["auroc"][0] for k, v in r["summary"].items()}
    out.append(("digits: 6/4 MNIST splits, mean of 5 (mnist-splits)", r["decision_scorer"], mean))
    for m in json.loads((results / "cifar_split0.json").read_text())["results"]:
        label = f"photographs: CIFAR-10 split 0, {m['model']} ({m['input_spec']})"
        out.append((label, m["decision_scorer"], m["auroc"]))
    return out


def _auroc(scorers: dict) -> dict[str, float]:
    return {k: v["auroc"] for k, v in scorers.items()}


def render(table: list[tuple[str, str, dict[str, float]]]) -> str:
    names = [n for n in report_order() if any(n in a for _, _, a in table)]
    lines = [
        "| data (protocol) | default decision | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    for label, decision, auroc in table:
        best = max(auroc.values())
        cells = []
        for n in names:
            if n not in auroc:
                cells.append("n/a")
                continue
            text = f"{auroc[n]:.4f}"
            text = f"**{text}**" if n == decision else text
            cells.append(text + (" (best)" if auroc[n] == best else ""))
        lines.append(f"| {label} | `{decision}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    text = render(rows(args.results))
    atomic_write_text(args.results / "decision_table.md", text)
    print(text)


if __name__ == "__main__":
    main()
