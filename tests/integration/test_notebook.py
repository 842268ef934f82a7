"""notebooks/quickstart.ipynb: committed without outputs, and it runs top to bottom (with
``OSRKIT_NOTEBOOK_SMALL=1``: tiny subsets, one epoch) in a Jupyter kernel. Its rendered
copy, docs/notebook.md (written by ``make docs-notebook``), holds its cells as they are."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

# An integration test: CI runs it after the default suite (make test-integration).
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
RENDERED = REPO / "docs" / "notebook.md"
CODE_BLOCK = re.compile(r"^```python\n(?P<code>.*?)^```", re.M | re.S)
FIGURE = re.compile(r"!\[[^\]]*\]\((?P<path>notebook_files/[^)\s]+)\)")
TIMEOUT_S = 600  # per cell


def test_notebook_is_committed_without_outputs():
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert len(code) >= 8
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]
    assert "OSRKIT_NOTEBOOK_SMALL" in code[0].source


def test_the_rendered_copy_holds_the_notebooks_cells():
    """docs/notebook.md is up to date in structure: the notebook's code cells in order and
    its text, each figure it links present and none left over. The outputs themselves are
    not compared: numbers and figures differ a little from one CPU to another."""
    nbformat = pytest.importorskip("nbformat")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    text = RENDERED.read_text()
    stale = "docs/notebook.md is out of date: run `make docs-notebook` and commit what it writes"
    rendered_code = [m.group("code").rstrip("\n") for m in CODE_BLOCK.finditer(text)]
    assert rendered_code == [c.source.rstrip("\n") for c in nb.cells if c.cell_type == "code"], stale
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert cell.source.strip() in text, f"{stale}; missing: {cell.source[:60]!r}"
    figures = FIGURE.findall(text)
    assert len(figures) >= 5 + 4  # 3 + 2 figures, and 2 + 2 explained images
    on_disk = {f"notebook_files/{p.name}" for p in (RENDERED.parent / "notebook_files").iterdir()}
    assert set(figures) == on_disk, stale
    assert "Traceback" not in text  # render.py writes nothing from a failed run


def test_notebook_runs_top_to_bottom(shared_data, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # the notebook works from its folder's parent, as from a checkout's root
    (tmp_path / "notebooks").mkdir()
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    monkeypatch.setenv("OSRKIT_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("OSRKIT_DATA", str(shared_data))
    monkeypatch.setenv("PYTHONPATH", str(REPO / "src"))  # this checkout's osrkit in the kernel
    # a kernel spec for this interpreter's ipykernel (a plain "python3" may find another Python)
    spec = tmp_path / "jupyter" / "kernels" / "osrkit-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "osrkit", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=TIMEOUT_S,
        kernel_name="osrkit-test",
        resources={"metadata": {"path": str(tmp_path / "notebooks")}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5 + 4  # 3 + 2 figures, and 2 + 2 explained images
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "examples/cat.png: unknown" in text  # the digit model rejects the cat
    assert "backbone: efficientnet_lite0" in text  # photos get the pretrained network
    assert (tmp_path / "runs" / "notebook" / "report.html").is_file()


def test_render_writes_only_the_figures_the_page_links(tmp_path, monkeypatch):
    """An image offered as PNG and JPEG (as a PIL image is) is linked once: the other file
    is not written, so docs/notebook_files/ holds what docs/notebook.md shows and no more."""
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbconvert")
    monkeypatch.syspath_prepend(str(REPO / "notebooks"))
    import render

    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
    jpeg = "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="
    cell = nbformat.v4.new_code_cell("image")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png, "image/jpeg": jpeg})]
    nb = nbformat.v4.new_notebook(cells=[cell])
    render.render(nb, docs=tmp_path)
    written = sorted(p.name for p in (tmp_path / "notebook_files").iterdir())
    assert len(written) == 1 and written[0].endswith(".png")
    assert FIGURE.findall((tmp_path / "notebook.md").read_text()) == [f"notebook_files/{written[0]}"]
