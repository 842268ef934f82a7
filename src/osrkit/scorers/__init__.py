"""Unknown-input scorers: larger score = more likely unknown.

One registry (``register_scorer``, ``list_scorers()``, ``scorer_entry(name)``,
``create_scorer(name, **params)``; ``make_scorer`` is its deprecated name for ``create_scorer``);
each scorer is a small torch module whose ``forward`` on named signals runs both in the
runtime and in the exported ONNX graph (see ``osrkit.scorers.base``). Adding a scorer is
one file here that defines a ``Scorer`` subclass decorated with ``@register_scorer``,
plus its import below (importing it registers it; reports order scorers by
``osrkit.scorers.selection.report_order``, not by import order).

Two kinds of fitting data (``osrkit.scorers.selection.fit_scorers`` keeps them apart): scorers
with parameters (``fits_on_reference``) are fitted on outputs of the known TRAINING
images; thresholds and the fusions are calibrated on known VALIDATION images.
"""

from osrkit.scorers.base import (
    SCORERS,
    SIGNAL_NEEDS,
    SIGNALS,
    ModelOutputs,
    Scorer,
    create_scorer,
    head_residual,
    least_squares_head,
    list_scorers,
    make_scorer,
    needs_of,
    register_scorer,
    scorer_class,
    scorer_entry,
    scorer_from_state,
    scorer_label,
)
from osrkit.scorers.fusion import (
    CombinedScorer,
    FusionScorer,
    LogitKnnFusionScorer,
    ReconFusionScorer,
    is_fusion,
)
from osrkit.scorers.knn import KNNScorer, kth_largest_column
from osrkit.scorers.logits import EnergyScorer, MaxLogitScorer, MSPScorer
from osrkit.scorers.mahalanobis import MahalanobisScorer
from osrkit.scorers.react import ReActScorer
from osrkit.scorers.reconstruction import MAX_PCA_PIXELS, ClassReconstructionScorer, ReconstructionScorer
from osrkit.scorers.vim import ViMScorer


def scorer_signals(name: str) -> frozenset[str]:
    """The signals the registered scorer ``name`` reads (a fusion: its members')."""
    return create_scorer(name).needs()


__all__ = [
    "MAX_PCA_PIXELS",
    "SCORERS",
    "SIGNALS",
    "SIGNAL_NEEDS",
    "ClassReconstructionScorer",
    "CombinedScorer",
    "EnergyScorer",
    "FusionScorer",
    "KNNScorer",
    "MSPScorer",
    "MahalanobisScorer",
    "MaxLogitScorer",
    "ModelOutputs",
    "ReActScorer",
    "LogitKnnFusionScorer",
    "ReconFusionScorer",
    "ReconstructionScorer",
    "Scorer",
    "ViMScorer",
    "is_fusion",
    "scorer_label",
    "head_residual",
    "kth_largest_column",
    "least_squares_head",
    "needs_of",
    "create_scorer",
    "list_scorers",
    "make_scorer",
    "register_scorer",
    "scorer_class",
    "scorer_entry",
    "scorer_from_state",
    "scorer_signals",
]
