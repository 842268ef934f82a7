import re

import numpy as np
from PIL import Image

from osrkit.evaluation import metrics_table
from osrkit.evaluation.report import decision_rules, render_report, write_report

METRICS = {
    "closed_set_accuracy": 0.99,
    "counts": {"known": 10, "unknown": 5},
    "datasets": {"known": "MNIST <test>", "unknown": "CIFAR-10"},
    "accept_rate_target": 0.95,
    "decision_scorer": "combined",
    "thresholds": {"combined_members": {"msp": 0.0171, "reconstruction": 0.01155}},
    "scorers": {
        name: {
            "auroc": 0.9,
            "aupr_in": 0.8,
            "aupr_out": 0.7,
            "fpr_at_95_tpr": 0.1,
            "oscr": 0.85,
            "macro_f1": 0.9,
            "known_accept_rate": 0.95,
            "unknown_reject_rate": 0.9,
            "threshold": 0.5,
        }
        for name in ("msp", "reconstruction", "combined")
    },
}


def test_report_embeds_figures_and_needs_no_network(tmp_path):
    figs = {}
    for name in ("roc", "hist"):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / f"{name}.png")
        figs[name] = tmp_path / f"{name}.png"
    path = write_report(tmp_path / "report.html", METRICS, figs, {"k": "v"})
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert html.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html)  # nothing fetched from a network
    assert "<script" not in html
    assert "MNIST &lt;test&gt;" in html  # escaped
    assert html.count("<tr>") == 4  # header + three scorers
    assert "msp &gt; 0.0171, reconstruction &gt; 0.01155" in html  # the fusion's member cut-offs
    assert "0.90000" in html and "0.8500" in html  # AUROC 5 decimals, OSCR 4


def test_one_rule_per_scorer_in_the_units_of_its_table_row():
    """The report stated the combined rule with member thresholds that differed from the
    table's rows for the same scorers, without saying why; now every scorer has one rule
    with its own row's threshold, and a fusion's rule names its members' cut-offs."""
    metrics = METRICS | {
        "scorers": {
            name: METRICS["scorers"]["msp"] | {"threshold": t}
            for name, t in (("msp", 0.6182), ("reconstruction", 0.03495), ("combined", 1.0))
        }
    }
    rules = decision_rules(metrics)
    assert set(rules) == {"msp", "reconstruction", "combined"}
    assert "(MSP (1 - max softmax)) is above 0.6182" in rules["msp"]
    assert "(reconstruction MSE) is above 0.03495" in rules["reconstruction"]
    assert "msp > 0.0171, reconstruction > 0.01155" in rules["combined"]
    assert "threshold 1 in its row" in rules["combined"]
    html = render_report(metrics, {})
    for name, row in metrics["scorers"].items():  # the rule's threshold is the table row's
        shown = format(row["threshold"], ".4g")
        table_row = re.search(rf"<tr><td>{name}</td>(.*?)</tr>", html).group(1)
        assert table_row.endswith(f"<td>{shown}</td>")  # the threshold column, last
        assert f"above {shown}." in rules[name] or f"hence the threshold {shown} in its row" in rules[name]
    assert html.index("<code>combined</code> (decides)") < html.index("<code>msp</code>")


def test_render_is_deterministic():
    assert render_report(METRICS, {}) == render_report(METRICS, {})


def test_metrics_table_rows_text_markdown_and_html():
    table = metrics_table(METRICS)
    assert table.columns[:3] == ["scorer", "AUROC", "AUPR-in"]
    assert [row["scorer"] for row in table.rows] == ["msp", "reconstruction", "combined"]
    assert table.rows[0]["AUROC"] == "0.90000" and table.rows[0]["threshold"] == "0.5"
    lines = str(table).splitlines()
    assert len(lines) == 2 + 3 and set(lines[1]) == {"-"}
    assert len({len(line) for line in lines}) == 1  # aligned
    assert lines[2].startswith("msp ") and lines[2].endswith("0.5")
    md = table.to_markdown().splitlines()
    assert md[0].startswith("| scorer | AUROC |") and md[1].startswith("| :--- | ---: |")
    assert md[2].startswith("| msp | 0.90000 |")
    html = table._repr_html_()
    assert html == table.to_html() and html.count("<tr>") == 4
    assert html in render_report(METRICS, {})  # the report's table is this one


UNHEALTHY = {
    "ok": False,
    "warnings": [
        {
            "check": "accuracy",
            "message": "closed-set accuracy on the 90 known validation images is 0.333, near chance <0.333>",
            "advice": "train longer (--epochs)",
        }
    ],
    "checked": ["accuracy"],
    "measured": {},
}


def test_an_unhealthy_model_gets_a_banner_at_the_top():
    html = render_report(METRICS | {"health": UNHEALTHY}, {})
    assert html.count("class='health'") == 1
    body = html.split("<body>", 1)[1]
    assert body.index("class='health'") < body.index("Known test images")  # above everything else
    assert "near chance &lt;0.333&gt;" in html and "train longer (--epochs)" in html


def test_a_healthy_model_or_one_of_unknown_health_gets_no_banner():
    healthy = {"ok": True, "warnings": [], "checked": ["accuracy"], "measured": {}}
    for metrics in (METRICS | {"health": healthy}, METRICS):
        html = render_report(metrics, {})
        assert "class='health'" not in html and "may be no good" not in html
