"""What ``--overwrite`` (``overwrite=True``) may replace: osrkit's own outputs only.

An existing output is replaced only when osrkit recognisably wrote it:

- a model folder: its ``config.json`` starts with ``"format": "osrkit-recognizer"`` (every
  format version writes that first; read from the first bytes only, so a model folder
  whose config is damaged further on is still osrkit's and can be replaced);
- a run or evaluation folder's ``metrics.json``, ``report.html`` and ``plots/``: only in a
  folder whose ``metrics.json`` is osrkit's (closed-set accuracy, counts and per-scorer
  metrics) or whose ``model/`` is an osrkit model folder; ``model/`` must itself be one;
- an ONNX file: its metadata says ``osrkit_format: "osrkit-onnx"``;
- an empty folder, or nothing at all.

Anything else is refused in one line naming a file in it, before any work is done.
Files that are not among the outputs (a ``notes.txt`` beside ``metrics.json``) are never
touched: the outputs replace only the entries of their own names.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from osrkit.errors import ConfigError, OutputExistsError
from osrkit.files.integrity import ONNX_FORMAT_KEY, onnx_metadata

MODEL_FORMAT = "osrkit-recognizer"
ONNX_FORMAT = "osrkit-onnx"
_MODEL_MARKER = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"format"\s*:\s*"' + MODEL_FORMAT.encode() + rb'"')
_HEAD_BYTES = 256
_METRICS_KEYS = {"closed_set_accuracy", "counts", "scorers"}
_MAX_METRICS_BYTES = 64 * 2**20  # far above any metrics.json osrkit writes


def is_model_folder(path: Path) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` osrkit wrote."""
    try:
        with open(path / "config.json", "rb") as fh:
            return bool(_MODEL_MARKER.match(fh.read(_HEAD_BYTES)))
    except OSError:
        return False


def _is_metrics_file(path: Path) -> bool:
    try:
        if path.stat().st_size > _MAX_METRICS_BYTES:
            return False
        metrics = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(metrics, dict) and metrics.keys() >= _METRICS_KEYS


def is_run_folder(path: Path) -> bool:
    """Whether folder ``path`` holds the outputs of ``osrkit run`` or ``osrkit evaluate``."""
    return _is_metrics_file(path / "metrics.json") or is_model_folder(path / "model")


def is_onnx_export(path: Path) -> bool:
    """Whether file ``path`` is an ONNX graph that ``osrkit export`` wrote."""
    try:
        value = onnx_metadata(path.read_bytes()).get(ONNX_FORMAT_KEY)
    except (OSError, ValueError):
        return False
    return value == json.dumps(ONNX_FORMAT)


def _is_empty_dir(path: Path) -> bool:
    try:
        return path.is_dir() and not path.is_symlink() and not any(path.iterdir())
    except OSError:
        return False


def _a_file_in(path: Path) -> Path:
    """A file to name in the refusal: ``path`` itself, or the first one found below it."""
    if not path.is_dir() or path.is_symlink():
        return path
    for root, dirs, files in os.walk(path):
        dirs.sort()
        if files:
            return Path(root) / sorted(files)[0]
    return path


def _refuse(entry: Path, what: str) -> OutputExistsError:
    return OutputExistsError(
        f"--overwrite replaces only osrkit's outputs, and {entry} is not {what} (it holds "
        f"{_a_file_in(entry)}); move it away or choose another output path"
    )


def check_replaceable_model(path: Path) -> None:
    """Refuse to replace ``path`` unless it is absent, an empty folder or an osrkit model folder."""
    if path.exists() and not _is_empty_dir(path) and not is_model_folder(path):
        raise _refuse(path, "an osrkit model folder")


def check_replaceable_outputs(folder: Path, names: Iterable[str], models: Iterable[str] = ()) -> None:
    """Refuse to replace the entries ``names`` of ``folder`` unless each is osrkit's: the
    ``models`` among them must be model folders, the others need ``folder`` to be an osrkit
    run folder (see the module docstring)."""
    models = set(models)
    run = None
    for name in names:
        entry = folder / name
        if not (entry.exists() or entry.is_symlink()) or _is_empty_dir(entry):
            continue
        if name in models:
            check_replaceable_model(entry)
            continue
        run = is_run_folder(folder) if run is None else run
        if not run:
            raise _refuse(entry, "in an osrkit run folder (no osrkit metrics.json or model/)")


def check_replaceable_onnx(path: Path) -> None:
    """Refuse to replace file ``path`` unless it is absent or an osrkit ONNX export."""
    if path.exists() and not is_onnx_export(path):
        raise _refuse(path, "an osrkit ONNX export")


def check_onnx_output(path: Path, overwrite: bool, filename: str = "model.onnx") -> None:
    """Refuse an ONNX output path that cannot or must not be written, before exporting:
    a folder, an existing file without ``overwrite``, a file that is not osrkit's."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the .onnx file to write, e.g. {path / filename}")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    check_replaceable_onnx(path)
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise ConfigError(f"cannot write {path}: {parent} is not a folder")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {path}: folder {parent} is not writable")
