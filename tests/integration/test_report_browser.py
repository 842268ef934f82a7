"""report.html in a real browser (headless Chromium): every figure loads, nothing is
fetched from a network, no console errors, and the page shows its content."""

import io

import numpy as np
import pytest
from PIL import Image

from osrkit.evaluation import ReportOptions
from osrkit.jobs.pipeline import evaluate_to_folder
from tests.browser import visit
from tests.conftest import synthetic_set
from tests.evaluation.test_gallery import mixed_unknowns

# An integration test: CI runs it after the default suite (make test-integration).
pytestmark = pytest.mark.integration


def test_report_opens_offline_in_chromium(fitted, tmp_path):
    evaluate_to_folder(
        fitted, synthetic_set(200, seed=12), mixed_unknowns(), tmp_path, ReportOptions(embed_samples=120)
    )
    report = tmp_path / "report.html"
    page = visit(report)
    figures = len(list((tmp_path / "plots").glob("*.png")))
    html = report.read_text()
    assert figures == 5
    # the five figures and the gallery's thumbnails, each decoded by the browser
    assert len(page.image_widths) == html.count("<img ") > figures
    assert all(w > 0 for w in page.image_widths), page.image_widths
    assert page.console_errors == []
    assert [u for u in page.requests if not u.startswith(("file:", "data:"))] == []
    assert "Metrics per scorer" in page.text and "Most confident mistakes" in page.text
    shot = np.asarray(Image.open(io.BytesIO(page.screenshot)).convert("L"), dtype=float)
    assert shot.shape[0] > 2000 and shot.std() > 20  # a long page with figures, not a blank one


def test_a_broken_figure_is_caught(tmp_path):
    """The check itself: an image that does not decode, or one fetched from a server,
    shows up."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>x</p><img src='data:image/png;base64,AAAA'>"
        "<img src='http://127.0.0.1:9/figure.png'></body></html>"
    )
    seen = visit(page)
    assert seen.image_widths == [0, 0]
    assert any(u.startswith("http://127.0.0.1:9/") for u in seen.requests)
    assert seen.console_errors  # the failed load
