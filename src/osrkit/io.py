"""Atomic file writing: a file or folder is either fully written or not there at all."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which races with threads.
_UMASK = _read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(src: Path, dst: Path) -> None:
    """Move file or folder ``src`` to ``dst``, replacing ``dst``; on failure ``dst`` is kept."""
    if not dst.exists():
        os.replace(src, dst)
        return
    # rename() may replace an empty folder, so a fresh mkdtemp is a collision-free stash
    stash = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
    if not dst.is_dir():
        stash.rmdir()
    os.replace(dst, stash)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(stash, dst)  # put the previous one back
        raise
    _remove(stash)


@contextmanager
def atomic_directory(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` only if the block succeeds.

    On any exception (including ``KeyboardInterrupt``) the temporary folder is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the usual folder mode
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(path)
        replace_path(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def staged_outputs(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder inside ``folder``; when the block succeeds, every entry
    written there replaces the entry of the same name in ``folder``.

    Nothing in ``folder`` changes if the block fails or is interrupted, so a previous
    run's outputs survive until the new ones are complete.
    """
    folder = Path(folder)
    created = []  # the folders made here, innermost first: removed again if the block fails
    top = folder
    while not top.exists():
        created.append(top)
        top = top.parent
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    done = False
    try:
        os.chmod(stage, 0o777 & ~_UMASK)
        yield stage
        for entry in sorted(stage.iterdir()):
            replace_path(entry, folder / entry.name)
        done = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if not done:
            for made in created:
                with contextlib.suppress(OSError):  # only if nothing else was put there
                    made.rmdir()


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, for pages that must open offline."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
