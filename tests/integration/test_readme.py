"""Every python and shell code block of README.md and of the documentation's pages
(docs/*.md, but the rendered notebook, whose cells test_notebook.py runs) runs as written.

Each block runs on its own, in a fresh folder holding what the examples expect:
``examples/`` (the repository's), ``models/mnist`` (a small model trained here on 2,000
MNIST digits, standing for the one ``osrkit train`` writes) and the image folders of
docs/own-data.md (``my_train``, ``my_test``, ``my_unknown``, from CIFAR-10 test images).
``osrkit`` on the PATH is this checkout's. A block preceded by
``<!-- readme-test: skip (reason) -->`` is left out; the marker is kept for blocks that
need the full data or minutes of training (and for ``pip install``/``make``).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import osrkit

# An integration test: CI runs it after the default suite (make test-integration).
pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
# the pages whose blocks run: all of docs/ but the rendered notebook (its cells are the
# notebook's, run by test_notebook.py) and the page that includes BENCHMARKS.md
DOCS = sorted(p for p in (REPO / "docs").glob("*.md") if p.name not in {"notebook.md", "benchmarks.md"})
RUNNABLE = {"python": "python", "bash": "bash", "sh": "bash", "console": "console"}
BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*(?P<marker>[^\n]*?)\s*-->\s*\n)?^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```",
    re.M | re.S,
)
SKIP = re.compile(r"skip \((?P<reason>[^)]+)\)")
BLOCK_TIMEOUT_S = 240
# what a block says it writes: --out DIR, save_pretrained("DIR"), an export's .onnx file
WRITES = re.compile(r"--out (?P<a>[\w/.-]+)|save_pretrained\(\"(?P<b>[^\"]+)\"\)|(?P<c>[\w/.-]+\.onnx)")


@dataclass
class Block:
    page: str  # README.md, or a page of docs/
    line: int
    lang: str
    code: str
    skip: str | None  # the marker's reason

    @property
    def id(self) -> str:
        return f"{self.page}:line{self.line}-{self.lang}"

    @property
    def where(self) -> str:
        return f"{self.page} block at line {self.line}"


def readme_blocks(text: str, page: str = "README.md") -> list[Block]:
    """The fenced code blocks of ``text`` (the page ``page``), with their line and skip marker."""
    blocks = []
    for m in BLOCK.finditer(text):
        marker, skip = m.group("marker"), None
        if marker is not None:
            found = SKIP.fullmatch(marker)
            if not found:
                raise ValueError(
                    f"{page} line {text.count(chr(10), 0, m.start()) + 1}: bad marker {marker!r}"
                )
            skip = found.group("reason")
        line = text.count("\n", 0, m.start("code"))
        blocks.append(Block(page, line, m.group("lang"), m.group("code"), skip))
    return blocks


def console_commands(code: str) -> str:
    """A console block's commands (the lines after ``$ ``); the rest is their output."""
    return "\n".join(line[2:] for line in code.splitlines() if line.startswith("$ "))


BLOCKS = [
    b
    for path in (README, *DOCS)
    for b in readme_blocks(path.read_text(), path.relative_to(REPO).as_posix())
    if b.lang in RUNNABLE
]


def test_the_readme_and_docs_have_runnable_blocks_and_few_skips():
    """Most shell and python blocks run; a skip gives its reason, one of those allowed."""
    assert {p.name for p in DOCS} >= {"quickstart.md", "own-data.md", "serving.md", "onnx.md"}
    run = [b for b in BLOCKS if b.skip is None]
    assert len(run) >= 8
    assert [b for b in run if b.page == "README.md" and b.lang == "python"]  # its short example
    for b in BLOCKS:
        assert b.skip is None or re.search(r"full data|minutes|installs packages", b.skip), b
    assert {b.lang for b in run} >= {"python", "bash"}
    with pytest.raises(ValueError, match="bad marker"):
        readme_blocks("<!-- readme-test: skip -->\n```bash\nls\n```\n")


@pytest.fixture(scope="module")
def workspace(shared_data, tmp_path_factory) -> Path:
    """What the examples of the README and of docs/ expect to find in the current folder."""
    from PIL import Image

    from osrkit import OpenSetRecognizer, TrainConfig, load_dataset

    root = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", root / "examples")
    train = load_dataset("mnist:train", shared_data).take(2000)
    config = TrainConfig(epochs=3, ae_epochs=1, val_size=300)  # closed-set accuracy about 0.9
    OpenSetRecognizer(train.class_names).fit(train, config).save_pretrained(root / "models" / "mnist")
    cifar = shared_data / "CIFAR10" / "test"
    # "Your own data": two known classes (train 100 each, test 30 each) and an unknown one
    plan = {
        "my_train": {"cat": range(0, 100), "dog": range(0, 100)},
        "my_test": {"cat": range(100, 130), "dog": range(100, 130)},
        "my_unknown": {"ship": range(0, 40)},
    }
    for folder, classes in plan.items():
        for name, index in classes.items():
            files = sorted((cifar / name).glob("*.png"))
            (root / folder / name).mkdir(parents=True)
            for i in index:
                Image.open(files[i]).save(root / folder / name / files[i].name)
    bin_dir = root / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "osrkit"  # this checkout's osrkit, whatever is installed
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m osrkit "$@"\n')
    shim.chmod(0o755)
    return root


def _env(workspace: Path, shared_data: Path) -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(osrkit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join([str(workspace / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    env["OSRKIT_DATA"] = str(shared_data)
    env["MPLBACKEND"] = "Agg"
    return env


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.skip is None], ids=lambda b: b.id)
def test_readme_block_runs(block, workspace, shared_data, tmp_path):
    if "osrkit serve" in block.code and not _port_free(8000):
        pytest.skip("port 8000, which the serve example uses, is taken on this machine")
    cwd = tmp_path / "cwd"
    shutil.copytree(workspace, cwd, ignore=shutil.ignore_patterns("bin"))
    if block.lang == "python":
        (cwd / "block.py").write_text(block.code)
        cmd = [sys.executable, "block.py"]
    else:
        code = console_commands(block.code) if block.lang == "console" else block.code
        (cwd / "block.sh").write_text("set -euo pipefail\n" + code)
        cmd = ["bash", "block.sh"]
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=_env(workspace, shared_data),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a server the block starts goes with it
    )
    try:
        out, _ = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        out, _ = proc.communicate()
        pytest.fail(f"{block.where} ran over {BLOCK_TIMEOUT_S} s:\n{out[-3000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
    assert proc.returncode == 0, f"{block.where} failed:\n{block.code}\n---\n{out[-3000:]}"
    for m in WRITES.finditer(block.code):
        written = cwd / next(g for g in m.groups() if g)
        assert written.exists(), f"{block.where} did not write {written.name}"
