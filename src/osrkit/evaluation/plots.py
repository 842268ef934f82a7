"""Figures for an evaluation. Each function writes one PNG atomically and returns its path."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from osrkit.files.atomic import atomic_write_bytes  # noqa: E402
from osrkit.scorers import SCORERS, scorer_label  # noqa: E402

log = logging.getLogger(__name__)

UNKNOWN_COLOR = "#222222"


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    buf = io.BytesIO()
    # a constrained layout already fits everything in; "tight" would draw the figure twice
    tight = None if fig.get_layout_engine() is not None else "tight"
    fig.savefig(buf, format="png", dpi=110, bbox_inches=tight)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def embed_features(features: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D t-SNE and PCA embeddings of ``features`` (seeded)."""
    pca = PCA(n_components=2, random_state=seed).fit_transform(features)
    perplexity = float(min(30.0, max(1.0, (len(features) - 1) / 3)))  # must stay below n
    tsne = TSNE(
        n_components=2, init="pca", perplexity=perplexity, random_state=seed, max_iter=750
    ).fit_transform(features)
    return {"t-SNE": tsne, "PCA": pca}


def plot_embeddings(
    features: np.ndarray, labels: np.ndarray, class_names: list[str], path: str | os.PathLike, seed: int = 0
) -> Path:
    """t-SNE and PCA side by side; knowns coloured by class (label >= 0), unknowns (-1) dark."""
    embeddings = embed_features(features, seed)
    fig, axes = plt.subplots(1, 2, figsize=(13, 6))
    cmap = plt.get_cmap("tab10" if len(class_names) <= 10 else "tab20")
    for ax, (title, xy) in zip(axes, embeddings.items()):
        unk = labels < 0
        ax.scatter(
            xy[unk, 0],
            xy[unk, 1],
            s=6,
            c=UNKNOWN_COLOR,
            marker="x",
            alpha=0.5,
            linewidths=0.6,
            label="unknown",
        )
        for k, name in enumerate(class_names):
            sel = labels == k
            if sel.any():
                ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=cmap(k % cmap.N), alpha=0.7, label=name)
        ax.set_title(f"{title} of penultimate features")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=3, fontsize=8)
    return _save(fig, path)


def roc_figure(
    known_scores: dict[str, np.ndarray],
    unknown_scores: dict[str, np.ndarray],
    aurocs: dict[str, float],
) -> plt.Figure:
    """The ROC figure of ``plot_roc``: two panels and one legend below them, outside the
    axes, so that no curve is hidden behind it."""
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), layout="constrained")
    for name in known_scores:
        k, u = known_scores[name], unknown_scores[name]
        y = np.r_[np.zeros(len(k)), np.ones(len(u))]
        fpr, tpr, _ = roc_curve(y, np.r_[k, u])
        for ax in axes:
            ax.plot(fpr, tpr, label=f"{scorer_label(name)}  AUROC {aurocs[name]:.5f}")
    axes[0].plot([0, 1], [0, 1], ls=":", c="gray")
    axes[1].set_xscale("log")
    axes[1].set_xlim(1e-4, 1)
    for ax, title in zip(axes, ("ROC", "ROC, log false-positive rate")):
        ax.set_xlabel("false-positive rate (knowns rejected)")
        ax.set_ylabel("true-positive rate (unknowns rejected)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 3), fontsize=7)
    return fig


def plot_roc(
    known_scores: dict[str, np.ndarray],
    unknown_scores: dict[str, np.ndarray],
    aurocs: dict[str, float],
    path: str | os.PathLike,
) -> Path:
    """ROC curves (unknown = positive) of every scorer, linear and log false-positive axis."""
    return _save(roc_figure(known_scores, unknown_scores, aurocs), path)


def histograms_figure(
    known_scores: dict[str, np.ndarray],
    unknown_scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
    known_name: str = "known",
    unknown_name: str = "unknown",
) -> plt.Figure:
    """The figure of ``plot_score_histograms``, laid out by matplotlib's constrained
    layout so that a row's axis labels stay clear of the titles of the row below."""
    names = list(known_scores)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 4 * rows), squeeze=False, layout="constrained")
    fig.get_layout_engine().set(h_pad=0.1, hspace=0.08)
    for ax in axes.flat[len(names) :]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        k, u, t = known_scores[name], unknown_scores[name], thresholds[name]
        scorer = SCORERS.get(name)
        log_scale = scorer.log_scale if scorer is not None else name != "combined"
        if log_scale:  # positive scores spanning decades read best on a log axis
            k, u, t = (np.log10(np.maximum(v, 1e-12)) for v in (k, u, t))
        bins = np.linspace(min(k.min(), u.min()), max(k.max(), u.max()), 80)
        ax.hist(k, bins=bins, alpha=0.6, label=known_name, color="tab:blue", density=True)
        ax.hist(u, bins=bins, alpha=0.6, label=unknown_name, color="tab:red", density=True)
        ax.axvline(t, color="k", ls="--", label="threshold")
        ax.set_title(scorer_label(name))
        ax.set_xlabel(("log10 " if log_scale else "") + "score (larger = more likely unknown)")
        ax.set_yscale("log")
        # Scores that barely differ (a model that learned nothing scores all alike) would get
        # an offset label ("1e-6-1.7606e-1") over the axis title: plain numbers instead, few
        # enough to fit side by side.
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4, steps=[1, 2, 2.5, 5, 10]))
        ax.legend(fontsize=7)
    return fig


def plot_score_histograms(
    known_scores: dict[str, np.ndarray],
    unknown_scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
    path: str | os.PathLike,
    known_name: str = "known",
    unknown_name: str = "unknown",
) -> Path:
    """One histogram per scorer, known vs unknown, with the calibrated threshold drawn."""
    return _save(histograms_figure(known_scores, unknown_scores, thresholds, known_name, unknown_name), path)


def plot_reconstructions(
    known: np.ndarray,
    known_rec: np.ndarray,
    unknown: np.ndarray,
    unknown_rec: np.ndarray,
    path: str | os.PathLike,
) -> Path:
    """Rows: known inputs, their reconstructions, unknown inputs, their reconstructions
    (images ``(n, C, H, W)`` or ``(n, H, W)`` in [0, 1])."""
    n = max(len(known), len(unknown))
    rows = [
        ("known", known),
        ("reconstruction", known_rec),
        ("unknown", unknown),
        ("reconstruction", unknown_rec),
    ]
    fig, axes = plt.subplots(4, n, figsize=(1.1 * n, 5.0), squeeze=False)
    for r, (title, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(imgs):
                img = np.asarray(imgs[c])
                if img.ndim == 3 and img.shape[0] == 3:  # (3, H, W) colour
                    ax.imshow(img.transpose(1, 2, 0).clip(0, 1))
                else:
                    ax.imshow(img.reshape(img.shape[-2:]), cmap="gray", vmin=0, vmax=1)
                if r % 2 == 1:
                    src = rows[r - 1][1][c]
                    ax.set_title(f"{np.mean((imgs[c] - src) ** 2):.3f}", fontsize=7)
        axes[r, 0].text(
            -0.15, 0.5, title, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=9
        )
    fig.suptitle("inputs and autoencoder reconstructions (MSE above each)", fontsize=10)
    return _save(fig, path)


def plot_confusion(
    matrix: np.ndarray,
    class_names: list[str],
    path: str | os.PathLike,
    title: str = "open-set confusion matrix",
) -> Path:
    """(K+1)x(K+1) confusion matrix with an "unknown" row and column, counts annotated."""
    matrix = np.asarray(matrix)
    names = [*class_names, "unknown"]
    fig, ax = plt.subplots(figsize=(0.55 * len(names) + 3, 0.55 * len(names) + 2))
    im = ax.imshow(matrix + 1, cmap="Blues", norm=LogNorm(vmin=1, vmax=matrix.max() + 1))
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(names)):
        for j in range(len(names)):
            if matrix[i, j]:
                ax.text(
                    j,
                    i,
                    str(matrix[i, j]),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if matrix[i, j] > matrix.max() / 8 else "black",
                )
    fig.colorbar(im, ax=ax, fraction=0.046, label="count + 1 (log)")
    return _save(fig, path)
