"""Scoring a trained model on its unknown sets, the K-known split protocols, summaries and
Markdown tables."""

from __future__ import annotations

import statistics

from osrkit.data.imageset import ImageSet
from osrkit.evaluation.evaluate import evaluate, score_set
from osrkit.protocols.context import Context
from osrkit.protocols.unknowns import split_classes
from osrkit.recognizer.estimator import OpenSetRecognizer
from osrkit.training.config import TrainConfig

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


def run_splits(
    ctx: Context,
    train: ImageSet,
    test: ImageSet,
    splits: tuple[tuple[int, ...], ...],
    config: TrainConfig | None = None,
    metrics: tuple[str, ...] = ("auroc", "oscr"),
    sort_classes: bool = False,
) -> dict:
    """The K known / rest unknown protocol over ``splits`` (known class indices): per split
    a recognizer trained on the known classes of ``train`` (``ctx.recognizer``, cached),
    scored on ``test``'s known classes against its others; then mean and std per scorer
    and ``metrics``. ``sort_classes`` trains each class set in ascending order, so that two
    splits holding the same classes share one model."""
    rows, d = [], None
    for known in splits:
        classes = tuple(sorted(known)) if sort_classes else known
        tr, _ = split_classes(train, classes)
        k, u = split_classes(test, classes)
        model = ctx.recognizer(tr, config)
        d = model.decision_scorer_
        res = score_sets(model, k, {"other classes": u})["other classes"]
        rows.append({"known_classes": list(known), "unknown_count": len(u), "known_count": len(k)} | res)
    summary = summarise_splits(rows, metrics)
    return {
        "decision_scorer": d,
        "splits": rows,
        "summary": summary,
        "closed_set_accuracy": mean_std([sp["closed_set_accuracy"] for sp in rows]),
        "best_scorer": max(summary, key=lambda s: summary[s]["auroc"][0]),
    }


def summarise_splits(splits: list[dict], metrics: tuple[str, ...] = ("auroc", "oscr")) -> dict:
    """Per scorer and metric, ``(mean, population std)`` over the splits."""
    summary: dict = {}
    for s in splits[0]["scorers"]:
        for metric in metrics:
            summary.setdefault(s, {})[metric] = mean_std([sp["scorers"][s][metric] for sp in splits])
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
