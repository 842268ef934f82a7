"""Scoring a trained model on its unknown sets, summarising splits, and Markdown tables."""

from __future__ import annotations

import statistics

from ..data.imageset import ImageSet
from ..evaluation import evaluate, score_set
from ..recognizer import OpenSetRecognizer

METRICS = ("auroc", "fpr_at_95_tpr", "aupr_in", "aupr_out", "oscr", "macro_f1")


def score_sets(recognizer: OpenSetRecognizer, known: ImageSet, unknowns: dict[str, ImageSet]) -> dict:
    """Every scorer's metrics on ``known`` against each unknown set."""
    out = {}
    known_scored = score_set(recognizer, known)  # once, not once per unknown set
    for name, unknown in unknowns.items():
        m = evaluate(recognizer, known, unknown, known_scored=known_scored).metrics
        out[name] = {
            "count": len(unknown),
            "closed_set_accuracy": m["closed_set_accuracy"],
            "scorers": {
                s: {k: v[k] for k in (*METRICS, "known_accept_rate")} for s, v in m["scorers"].items()
            },
        }
    return out


def summarise_splits(splits: list[dict], metrics: tuple[str, ...] = ("auroc", "oscr")) -> dict:
    """Per scorer and metric, ``(mean, population std)`` over the splits."""
    summary: dict = {}
    for s in splits[0]["scorers"]:
        for metric in metrics:
            values = [sp["scorers"][s][metric] for sp in splits]
            summary.setdefault(s, {})[metric] = (statistics.mean(values), statistics.pstdev(values))
    return summary


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.pstdev(values)


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: the first column left-aligned, the others right-aligned."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def fmt(metric: str, value: float) -> str:
    """Five decimals where the targets live near 1 (AUROC, AUPR), four elsewhere."""
    return f"{value:.5f}" if metric.startswith(("auroc", "aupr")) else f"{value:.4f}"


def sets_table(sets: dict, metrics: tuple[str, ...] = METRICS) -> list[str]:
    rows = []
    for set_name, s in sets.items():
        for scorer, m in s["scorers"].items():
            rows.append([set_name, scorer, *(fmt(k, m[k]) for k in metrics)])
    return table(["unknown set", "scorer", *metrics], rows)


def splits_tables(r: dict) -> list[str]:
    """Mean ± std per scorer, closed-set accuracy, then one row per split."""
    rows = [[s, *(f"{100 * v[m][0]:.2f} ± {100 * v[m][1]:.2f}" for m in v)] for s, v in r["summary"].items()]
    metrics = list(next(iter(r["summary"].values())))
    lines = table(["scorer", *(f"{m.upper()} % (mean ± std)" for m in metrics)], rows)
    acc = r["closed_set_accuracy"]
    lines += ["", f"Closed-set accuracy {100 * acc[0]:.2f} ± {100 * acc[1]:.2f} %.", ""]
    per = [
        [str(sp["known_classes"]), f"{sp['closed_set_accuracy']:.4f}"]
        + [f"{sp['scorers'][s]['auroc']:.5f}" for s in r["summary"]]
        for sp in r["splits"]
    ]
    return lines + table(["known classes", "closed-set acc", *(f"{s} AUROC" for s in r["summary"])], per)
