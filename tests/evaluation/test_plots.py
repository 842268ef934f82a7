import numpy as np
import pytest
from PIL import Image

from osrkit.evaluation import plots


def is_png(path) -> tuple[int, int]:
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


@pytest.fixture
def scores():
    rng = np.random.default_rng(0)
    known = {
        "msp": rng.random(200) * 0.1,
        "reconstruction": rng.random(200) * 0.01,
        "combined": rng.normal(0, 0.5, 200),
    }
    unknown = {
        "msp": 0.3 + rng.random(100) * 0.5,
        "reconstruction": 0.05 + rng.random(100),
        "combined": rng.normal(3, 1, 100),
    }
    return known, unknown


def test_embeddings_plot(tmp_path):
    rng = np.random.default_rng(0)
    features = np.r_[rng.normal(0, 1, (60, 16)), rng.normal(4, 1, (30, 16))]
    labels = np.r_[np.arange(60) % 3, -np.ones(30, int)]
    path = plots.plot_embeddings(features, labels, ["a", "b", "c"], tmp_path / "e.png")
    w, h = is_png(path)
    assert w > 2 * h * 0.8  # two panels side by side


def test_embed_features_is_seeded():
    x = np.random.default_rng(1).normal(size=(40, 8))
    a, b = plots.embed_features(x, seed=3), plots.embed_features(x, seed=3)
    np.testing.assert_allclose(a["t-SNE"], b["t-SNE"])
    assert a["PCA"].shape == (40, 2)


def test_roc_histogram_reconstruction_confusion(tmp_path, scores):
    known, unknown = scores
    is_png(plots.plot_roc(known, unknown, {k: 0.9 for k in known}, tmp_path / "roc.png"))
    is_png(
        plots.plot_score_histograms(
            known, unknown, {"msp": 0.1, "reconstruction": 0.01, "combined": 1.0}, tmp_path / "h.png"
        )
    )
    imgs = np.random.default_rng(0).random((4, 1, 28, 28))
    is_png(plots.plot_reconstructions(imgs, imgs, imgs[:3], imgs[:3], tmp_path / "r.png"))
    cm = np.diag([5, 6, 7]) + 1
    is_png(plots.plot_confusion(cm, ["x", "y"], tmp_path / "c.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.png", "h.png", "r.png", "roc.png"]


EIGHT = ("msp", "max_logit", "energy", "mahalanobis", "knn", "vim", "reconstruction", "fusion")


def _eight():
    rng = np.random.default_rng(3)
    k = {name: np.abs(rng.normal(1, 0.3, 200)) for name in EIGHT}
    u = {name: np.abs(rng.normal(3, 1.0, 100)) for name in EIGHT}
    return k, u


def _extent(fig, artists):
    renderer = fig.canvas.get_renderer()
    return [a.get_window_extent(renderer) for a in artists if a.get_visible() and a.get_text()]


def test_histogram_rows_keep_labels_clear_of_the_titles_below():
    """Each row's x-axis label and tick labels stay clear of the titles of the row below."""
    k, u = _eight()
    fig = plots.histograms_figure(k, u, {name: 2.0 for name in EIGHT}, "MNIST test", "CIFAR-10 test")
    fig.canvas.draw()
    axes = np.asarray(fig.axes).reshape(2, 4)
    below = _extent(fig, [ax.title for ax in axes[1]])
    assert len(below) == 4
    for ax in axes[0]:
        texts = [ax.xaxis.label, *ax.get_xticklabels()]
        for box in _extent(fig, texts):
            assert not any(box.overlaps(title) for title in below), ax.get_title()
    plots.plt.close(fig)


def test_roc_legend_leaves_the_curves_visible():
    """The legend sits outside both panels (it covered the curves inside the left one)."""
    k, u = _eight()
    fig = plots.roc_figure(k, u, {name: 0.9 for name in EIGHT})
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert len(legend.get_texts()) == len(EIGHT)
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent(renderer))
    plots.plt.close(fig)


def test_histograms_of_scores_that_barely_differ_have_no_offset_label():
    """A model that learned nothing scores every image alike (1 - max softmax 0.6667 give
    or take 1e-5): matplotlib wrote the axis as an offset ("1e-6-1.7606e-1") over the
    axis title. The ticks are plain numbers now, clear of each other and of the title."""
    rng = np.random.default_rng(0)
    k = {"msp": 0.6667 + rng.random(200) * 1e-5, "energy": -1.0986 + rng.random(200) * 1e-6}
    u = {"msp": 0.6667 + rng.random(100) * 1e-5, "energy": -1.0986 + rng.random(100) * 1e-6}
    fig = plots.histograms_figure(k, u, {"msp": 0.66670, "energy": -1.0986})
    fig.canvas.draw()
    for ax in fig.axes:
        assert ax.xaxis.get_offset_text().get_text() == "", ax.get_title()
        lo, hi = sorted(ax.get_xlim())
        shown = [t for t, x in zip(ax.get_xticklabels(), ax.get_xticks()) if lo <= x <= hi]
        ticks = _extent(fig, shown)
        assert len(ticks) >= 2
        assert not any(a.overlaps(b) for i, a in enumerate(ticks) for b in ticks[i + 1 :]), ax.get_title()
        (label,) = _extent(fig, [ax.xaxis.label])
        assert not any(t.overlaps(label) for t in ticks)
    plots.plt.close(fig)
