"""The quick-start notebook and the Python blocks of the README and docs/ use only osrkit's public API.

The public API is ``osrkit`` and the subpackages listed in ``PUBLIC_MODULES``: each has an
``__all__``, and a name is public when it is in its module's ``__all__``. Everything else
(``osrkit.jobs``, ``osrkit.evaluation.report``, a name starting with ``_``...) is internal:
it may move between releases, so the examples users copy must not import it.
"""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "quickstart.ipynb"
README = REPO / "README.md"
DOCS = REPO / "docs"  # the documentation site's pages

# The layers a Python program builds on. osrkit.protocols, osrkit.serve and osrkit.cli have
# an __all__ too, but are reached through the command line and are not listed here.
PUBLIC_MODULES = (
    "osrkit",
    "osrkit.data",
    "osrkit.models",
    "osrkit.scorers",
    "osrkit.training",
    "osrkit.recognizer",
    "osrkit.evaluation",
    "osrkit.export",
)
PYTHON_BLOCK = re.compile(r"^```python[^\n]*\n(?P<code>.*?)^```", re.M | re.S)


def public_names(module: str) -> set[str]:
    return set(importlib.import_module(module).__all__)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def sources() -> list[tuple[str, str]]:
    """(where, code) of every notebook code cell and python block of the README and docs/."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    found = [
        (f"{NOTEBOOK.name} cell {i}", "".join(c["source"]))
        for i, c in enumerate(cells)
        if c["cell_type"] == "code"
    ]
    for page in (README, *sorted(DOCS.glob("*.md"))):
        text = page.read_text()
        where = page.relative_to(REPO).as_posix()
        for m in PYTHON_BLOCK.finditer(text):
            found.append((f"{where} line {text.count(chr(10), 0, m.start()) + 1}", m.group("code")))
    return found


def check_attribute(module: str, chain: list[str]) -> str | None:
    """What is not public in ``module.chain[0].chain[1]...`` (None: all of it is)."""
    for attr in chain:
        if f"{module}.{attr}" in PUBLIC_MODULES:
            module = f"{module}.{attr}"
            continue
        if is_private(attr) or attr not in public_names(module):
            return f"{module}.{attr}"
        return None
    return None


def violations(code: str) -> list[str]:
    """The internal osrkit modules and names ``code`` imports or reaches through an
    imported public module's attributes, one line each."""
    # IPython's magics and shell escapes are not Python
    tree = ast.parse("\n".join("" if line.lstrip()[:1] in "%!" else line for line in code.splitlines()))
    bad, bound = [], {}  # bound: local name -> the public module it refers to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                path = alias.name
                if path.split(".")[0] != "osrkit":
                    continue
                if path not in PUBLIC_MODULES or any(is_private(p) for p in path.split(".")):
                    bad.append(f"line {node.lineno}: import {path}")
                elif alias.asname:
                    bound[alias.asname] = path
                else:
                    bound["osrkit"] = "osrkit"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] != "osrkit":
                continue
            if module not in PUBLIC_MODULES or any(is_private(p) for p in module.split(".")):
                bad.append(f"line {node.lineno}: from {module} import ...")
                continue
            for alias in node.names:
                if f"{module}.{alias.name}" in PUBLIC_MODULES:
                    bound[alias.asname or alias.name] = f"{module}.{alias.name}"
                elif alias.name == "*" or is_private(alias.name) or alias.name not in public_names(module):
                    bad.append(f"line {node.lineno}: from {module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.insert(0, base.attr)
                base = base.value
            if isinstance(base, ast.Name) and base.id in bound:
                internal = check_attribute(bound[base.id], chain)
                if internal:
                    bad.append(f"line {node.lineno}: {internal}")
    return sorted(set(bad))


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_public_modules_define_what_they_export(module):
    mod = importlib.import_module(module)
    assert mod.__all__, module
    missing = [name for name in mod.__all__ if not hasattr(mod, name)]
    assert not missing, f"{module}.__all__ names what it lacks: {missing}"


def test_the_notebook_readme_and_docs_use_only_the_public_api():
    found = sources()
    assert sum(where.startswith("README") for where, _ in found) >= 1  # the blocks were found
    assert sum(where.startswith("docs/") for where, _ in found) >= 5
    assert sum(where.startswith(NOTEBOOK.name) for where, _ in found) >= 8
    bad = [f"{where}, {v}" for where, code in found for v in violations(code)]
    assert not bad, "internal osrkit names (not in a public module's __all__):\n" + "\n".join(bad)


def test_internal_imports_are_caught():
    assert violations("from osrkit.evaluation import evaluate\nimport osrkit\nosrkit.explain") == []
    assert violations("import osrkit.evaluation as ev\nev.metrics_table") == []
    assert violations("from osrkit.jobs.pipeline import run") == [
        "line 1: from osrkit.jobs.pipeline import ..."
    ]
    assert violations("from osrkit.export import _quiet_export") == [
        "line 1: from osrkit.export import _quiet_export"
    ]
    assert violations("from osrkit.data import candidate_roots") == [
        "line 1: from osrkit.data import candidate_roots"
    ]
    assert violations("import osrkit\nosrkit.evaluation.report.write_report") == [
        "line 2: osrkit.evaluation.report"
    ]
    assert violations("import osrkit.data.root") == ["line 1: import osrkit.data.root"]


def test_explain_is_the_predict_row_with_the_fusion_cut_offs(fitted):
    import osrkit
    from osrkit.data import as_input_tensor
    from osrkit.errors import DataError
    from osrkit.jobs.predictions import prediction_rows
    from tests.conftest import synthetic_digits

    images = synthetic_digits(3, seed=5)[0]
    for scorer in (None, "msp"):
        for i in range(len(images)):
            row = osrkit.explain(fitted, images[i], scorer)
            x = as_input_tensor(images[i : i + 1], fitted.input_spec_)
            expected = prediction_rows(fitted, x, scorer)[0]
            decision = row["decision"]
            cuts = decision.pop("member_thresholds", None)
            assert row == expected
            if scorer is None:  # "combined", a fusion: every member's cut-off within it
                assert cuts == fitted.scorers_["combined"].member_thresholds()
                assert set(cuts) == set(fitted.scorers_["combined"].members)
            else:
                assert cuts is None
    assert osrkit.explain(fitted, REPO / "examples" / "cat.png")["decision"]["scorer"] == "combined"
    with pytest.raises(DataError, match="explain takes one image, got 3"):
        osrkit.explain(fitted, images)
