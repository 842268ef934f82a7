"""The figures of an evaluation, as ``osrkit run`` puts them in its report: t-SNE and PCA of
the penultimate features, ROC curves, score histograms with the thresholds, reconstructions
and the open-set confusion matrix (each drawn by a function of ``osrkit.evaluation.plots``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from osrkit.evaluation.evaluate import Evaluation
from osrkit.evaluation.plots import (
    plot_confusion,
    plot_embeddings,
    plot_reconstructions,
    plot_roc,
    plot_score_histograms,
)
from osrkit.recognizer.estimator import OpenSetRecognizer

log = logging.getLogger(__name__)

MIN_EMBED_POINTS = 10


@dataclass
class ReportOptions:
    """How many points the embeddings plot and how many reconstructions are shown."""

    embed_samples: int = 2000
    reconstructions: int = 10
    seed: int = 0


def write_figures(
    ev: Evaluation,
    recognizer: OpenSetRecognizer,
    folder: str | os.PathLike,
    options: ReportOptions = ReportOptions(),
) -> dict[str, Path]:
    """Write every figure of an evaluation into ``folder``; returns name -> path."""
    folder = Path(folder)
    rng = np.random.default_rng(options.seed)
    n_known = min(len(ev.known), max(1, options.embed_samples * 2 // 3))
    n_unknown = min(len(ev.unknown), max(1, options.embed_samples - n_known))
    ki = np.sort(rng.choice(len(ev.known), n_known, replace=False))
    ui = np.sort(rng.choice(len(ev.unknown), n_unknown, replace=False))
    features = np.concatenate([ev.known_outputs.features[ki], ev.unknown_outputs.features[ui]])
    labels = np.r_[ev.known.labels.numpy()[ki], np.full(n_unknown, -1)]
    m = ev.metrics
    figures: dict[str, Path] = {}
    if len(features) >= MIN_EMBED_POINTS:
        figures["t-SNE and PCA of penultimate features"] = plot_embeddings(
            features, labels, recognizer.class_names_, folder / "embeddings.png", options.seed
        )
    else:
        log.warning("only %d test images: no t-SNE/PCA plot (needs %d)", len(features), MIN_EMBED_POINTS)
    figures["ROC curves"] = plot_roc(
        ev.known_scores,
        ev.unknown_scores,
        {k: v["auroc"] for k, v in m["scorers"].items()},
        folder / "roc.png",
    )
    figures["score histograms"] = plot_score_histograms(
        ev.known_scores,
        ev.unknown_scores,
        recognizer.thresholds_,
        folder / "score_histograms.png",
        ev.known.name,
        ev.unknown.name,
    )
    if recognizer.has_autoencoder:
        # shown in random order, so every class has a chance to appear
        kr = ev.known.subset(rng.permutation(ki)[: options.reconstructions]).as_float()
        ur = ev.unknown.subset(rng.permutation(ui)[: options.reconstructions]).as_float()
        figures["reconstructions"] = plot_reconstructions(
            kr.numpy(),
            recognizer.reconstruct(kr).numpy(),
            ur.numpy(),
            recognizer.reconstruct(ur).numpy(),
            folder / "reconstructions.png",
        )
    name = recognizer.decision_scorer_
    figures[f"confusion matrix ({name} scorer)"] = plot_confusion(
        np.asarray(m["scorers"][name]["confusion_matrix"]),
        recognizer.class_names_,
        folder / "confusion_matrix.png",
        f"open-set confusion matrix, {name} scorer",
    )
    return figures
