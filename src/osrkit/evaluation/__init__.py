"""Evaluation of a fitted recognizer: metrics on known and unknown test images, the
figures, the mistakes gallery and the offline HTML report.

``evaluate`` scores a known and an unknown test set; from its ``Evaluation``,
``metrics_table`` gives the per-scorer metrics as a table, ``write_figures`` draws the
figures, ``confident_mistakes`` picks the gallery of the decision's most confident mistakes
and ``write_report`` puts them all in one HTML page.
"""

from osrkit.evaluation.evaluate import Evaluation, evaluate
from osrkit.evaluation.figures import ReportOptions, write_figures
from osrkit.evaluation.gallery import Gallery, confident_mistakes
from osrkit.evaluation.report import MetricsTable, metrics_table, write_report

__all__ = [
    "Evaluation",
    "Gallery",
    "MetricsTable",
    "ReportOptions",
    "confident_mistakes",
    "evaluate",
    "metrics_table",
    "write_figures",
    "write_report",
]
