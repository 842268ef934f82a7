"""The documentation site builds with ``mkdocs build --strict`` (any warning, a broken link
or anchor, a docstring mkdocstrings cannot render, fails it), as ``make docs`` builds it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# An integration test: CI runs it after the default suite (make test-integration).
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BUILD_TIMEOUT_S = 300


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-5000:]}"
    assert "WARNING" not in proc.stderr.replace("NO_MKDOCS_2_WARNING", ""), proc.stderr[-5000:]
    # the API reference holds the estimator's methods, inherited ones included
    reference = (site / "reference" / "osrkit" / "index.html").read_text()
    for name in ("osrkit.OpenSetRecognizer.fit", "osrkit.OpenSetRecognizer.predict", "osrkit.explain"):
        assert f'id="{name}"' in reference, name
    # the benchmarks page includes BENCHMARKS.md rather than a copy of it
    assert (REPO / "docs" / "benchmarks.md").read_text().strip() == '--8<-- "BENCHMARKS.md"'
    assert 'id="test-suite"' in (site / "benchmarks" / "index.html").read_text()
    # the rendered notebook comes with its figures
    assert list((site / "notebook_files").glob("*.png"))
