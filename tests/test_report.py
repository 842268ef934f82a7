import re

import numpy as np
from PIL import Image

from osrkit.report import render_report, write_report

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
    assert "below <b>0.9829</b>" in html and "above <b>0.01155</b>" in html
    assert "0.90000" in html and "0.8500" in html  # AUROC 5 decimals, OSCR 4


def test_render_is_deterministic():
    assert render_report(METRICS, {}) == render_report(METRICS, {})
