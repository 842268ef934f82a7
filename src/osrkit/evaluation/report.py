"""The per-scorer metrics table (``metrics_table``), and a self-contained HTML report: that
table and every figure embedded (opens offline)."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path

from osrkit.evaluation.evaluate import Evaluation
from osrkit.evaluation.gallery import Gallery, render_gallery
from osrkit.files.atomic import atomic_write_text, png_data_uri
from osrkit.scorers import scorer_label

METRIC_COLUMNS = [
    ("auroc", "AUROC"),
    ("aupr_in", "AUPR-in"),
    ("aupr_out", "AUPR-out"),
    ("fpr_at_95_tpr", "FPR@95%TPR"),
    ("oscr", "OSCR"),
    ("macro_f1", "macro-F1 (K+1)"),
    ("known_accept_rate", "known accepted"),
    ("unknown_reject_rate", "unknown rejected"),
    ("threshold", "threshold"),
]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1.5em 0}img{max-width:100%;border:1px solid #eee}figcaption{color:#555}
code,pre{background:#f6f6f6;padding:2px 4px}pre{padding:8px;overflow:auto}
.gallery{display:flex;flex-wrap:wrap;gap:12px}.mistake{margin:0;width:128px;font-size:12px}
.mistake img{display:block;width:64px;image-rendering:pixelated}
.health{background:#fff4e5;border:2px solid #d9822b;padding:0.5em 1em;margin:1em 0}
.health h2{margin:0.2em 0;color:#a84300}
"""


def metrics_table_rows(metrics: dict) -> list[list[str]]:
    """Rows ``[scorer, value, ...]`` of the per-scorer metrics, formatted for display."""
    formats = {"auroc": ".5f", "aupr_in": ".5f", "aupr_out": ".5f", "threshold": ".4g"}
    return [
        [name] + [format(m[key], formats.get(key, ".4f")) for key, _ in METRIC_COLUMNS]
        for name, m in metrics["scorers"].items()
    ]


@dataclass(frozen=True)
class MetricsTable:
    """The per-scorer metrics as displayed: ``columns`` (``scorer``, then each metric's
    label) and ``rows``, one dict per scorer of formatted values keyed by column.

    ``str(table)`` is the aligned plain-text table ``osrkit run`` prints, ``to_markdown()``
    a Markdown table and ``to_html()`` the report's HTML table, which a notebook displays.
    """

    columns: list[str]
    rows: list[dict[str, str]]

    def _cells(self) -> list[list[str]]:
        return [[row[c] for c in self.columns] for row in self.rows]

    def __str__(self) -> str:
        rows = [self.columns, *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        lines = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)

    def to_markdown(self) -> str:
        """The table in Markdown, the metric columns right-aligned."""
        rows = [self.columns, [":---"] + ["---:"] * (len(self.columns) - 1), *self._cells()]
        return "\n".join("| " + " | ".join(r) + " |" for r in rows)

    def to_html(self) -> str:
        """The table as one HTML ``<table>``, values escaped."""
        e = html.escape
        head = "".join(f"<th>{e(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in self._cells())
        return f"<table><tr>{head}</tr>{body}</table>"

    def _repr_html_(self) -> str:  # what Jupyter displays
        return self.to_html()


def metrics_table(evaluation: Evaluation | dict) -> MetricsTable:
    """The per-scorer metrics of ``evaluation`` (an ``Evaluation``, or its ``metrics``
    dict as ``metrics.json`` holds it) as a ``MetricsTable``."""
    metrics = evaluation.metrics if isinstance(evaluation, Evaluation) else evaluation
    columns = ["scorer"] + [label for _, label in METRIC_COLUMNS]
    return MetricsTable(columns, [dict(zip(columns, row)) for row in metrics_table_rows(metrics)])


def decision_rules(metrics: dict) -> dict[str, str]:
    """One rule per scorer, as plain text, with the threshold of its table row: when that
    scorer alone would call an input unknown. A fusion's rule lists the cut-off of each
    member within it (joint calibration: they differ from the members' own rows)."""
    members_of = metrics.get("thresholds", {})
    rules = {}
    for name, row in metrics["scorers"].items():
        t = row["threshold"]
        members = members_of.get(f"{name}_members")
        if members:
            cuts = ", ".join(f"{m} > {v:.4g}" for m, v in members.items())
            rules[name] = (
                f"unknown when any member is above its cut-off within this fusion: {cuts}. The "
                f"fusion's score is its members' largest, each rescaled so that its cut-off is 1, "
                f"hence the threshold {t:.4g} in its row. The cut-offs share the rejection budget "
                f"(together they accept {metrics['accept_rate_target']:.0%} of known validation "
                "images), so each is looser than the member's own row."
            )
        else:
            rules[name] = f"unknown when its score ({scorer_label(name)}) is above {t:.4g}."
    return rules


def render_rules(metrics: dict) -> str:
    """The decision rules as an HTML list, the deciding scorer's first and in bold."""
    e, decision = html.escape, metrics["decision_scorer"]
    rules = decision_rules(metrics)
    order = sorted(rules, key=lambda n: n != decision)
    items = "".join(
        f"<li>{'<b>' if n == decision else ''}<code>{e(n)}</code>"
        f"{' (decides)' if n == decision else ''}: {e(rules[n])}{'</b>' if n == decision else ''}</li>"
        for n in order
    )
    return f"<h2>Decision rules</h2><p>Scores: larger means more likely unknown.</p><ul>{items}</ul>"


def render_health(metrics: dict) -> str:
    """The banner at the top of the report when a health check failed (``health`` in
    ``metrics``, see ``osrkit.recognizer.health``): each finding and what to try; empty
    for a healthy model, or one whose health is not known."""
    health = metrics.get("health")
    if not health or health.get("ok", True):
        return ""
    e = html.escape
    items = "".join(
        f"<li>{e(w['message'])}. <i>Try:</i> {e(w['advice'])}.</li>" for w in health.get("warnings", [])
    )
    return (
        "<div class='health' role='alert'><h2>This model may be no good</h2><p>Checks on the known "
        f"validation images (no unknowns needed) failed:</p><ul>{items}</ul></div>"
    )


def _img(path: Path) -> str:
    return png_data_uri(path.read_bytes())


def render_report(
    metrics: dict,
    figures: dict[str, Path],
    config: dict | None = None,
    title: str = "osrkit open-set recognition report",
    gallery: Gallery | None = None,
) -> str:
    """The report as one HTML string with the figures (and the ``gallery`` of the most
    confident mistakes, when given) inlined as data URIs."""
    e = html.escape
    counts, datasets = metrics["counts"], metrics.get("datasets", {})
    summary = (
        f"<p>Known test images: <b>{counts['known']}</b> ({e(str(datasets.get('known', '')))}); "
        f"unknown test images: <b>{counts['unknown']}</b> ({e(str(datasets.get('unknown', '')))}). "
        f"Closed-set accuracy on knowns: <b>{metrics['closed_set_accuracy']:.4f}</b>. "
        f"Thresholds were calibrated on known validation images only, to accept "
        f"{metrics['accept_rate_target']:.0%} of them; decisions use the "
        f"<code>{e(metrics['decision_scorer'])}</code> scorer.</p>"
    )
    summary += render_rules(metrics)
    figs = "".join(
        f'<figure><img alt="{e(name)}" src="{_img(path)}"><figcaption>{e(name)}</figcaption></figure>'
        for name, path in figures.items()
    )
    mistakes = render_gallery(gallery) if gallery is not None else ""
    cfg = f"<h2>Configuration</h2><pre>{e(_pretty(config))}</pre>" if config else ""
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(title)}</title>"
        f"<style>{_CSS}</style></head><body><h1>{e(title)}</h1>{render_health(metrics)}{summary}"
        f"<h2>Metrics per scorer</h2>{metrics_table(metrics).to_html()}"
        f"<p>Scores: larger means more likely unknown. AUROC, AUPR-out: unknowns positive; "
        f"AUPR-in: knowns positive; FPR@95%TPR: unknowns accepted when 95% of knowns are; "
        f"OSCR: area under correct-classification rate vs false-positive rate.</p>"
        f"<h2>Figures</h2>{figs}{mistakes}{cfg}</body></html>\n"
    )


def _pretty(obj: object) -> str:
    return json.dumps(obj, indent=2, default=str)


def write_report(
    path: str | os.PathLike,
    metrics: dict,
    figures: dict[str, Path],
    config: dict | None = None,
    gallery: Gallery | None = None,
) -> Path:
    """Write ``report.html`` atomically."""
    return atomic_write_text(path, render_report(metrics, figures, config, gallery=gallery))


def target_line(
    name: str, value: float, goal: float, direction: str = "min", fmt: str = ".5f", unit: str = ""
) -> str:
    """``target <name>: <measured> (goal <sign> <goal>) ok|short``; ``direction`` is ``min``
    (at least the goal) or ``max`` (at most)."""
    ok = value <= goal if direction == "max" else value >= goal
    sign = "<=" if direction == "max" else ">="
    return f"target {name}: {value:{fmt}}{unit} (goal {sign} {goal:g}{unit}) {'ok' if ok else 'short'}"
