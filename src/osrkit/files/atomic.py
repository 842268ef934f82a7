"""Atomic file writing: a file or folder is either fully written or not there at all.

Temporary names: ``.NAME.XXXXXXXX.tmp`` (a file), ``.NAME.XXXXXXXX.partial`` (a folder),
``.NAME.XXXXXXXX.old`` (the previous version while it is swapped out) beside ``NAME``,
and ``.staging-XXXXXXXX`` inside a staged output folder. A process killed with SIGKILL
leaves them behind; the next write of the same ``NAME`` (or into the same staged folder)
removes its own kind only, and only those no live writer holds.

Which ones are abandoned: every writer holds an exclusive ``flock`` on its temporary
file or folder for as long as it exists, and the kernel drops that lock when the
process dies, however it dies. A temporary whose lock can be taken and which has not
changed for ``STALE_GRACE_S`` (the moment between ``mkdtemp`` and ``flock``) is
abandoned. A pid check would wrongly trust a reused pid and means nothing on storage
other machines share; an age alone would either keep a killed run's debris for a long
time or remove a slow writer's live folder. Where locks are unavailable (no ``fcntl``,
a filesystem without ``flock``), only temporaries unchanged for ``STALE_UNLOCKED_S`` go.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: abandoned temporaries are told by their age alone
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

STALE_GRACE_S = 10.0  # an unlocked temporary younger than this may be a writer's, not yet locked
STALE_UNLOCKED_S = 3600.0  # without locks: older than any one write or report takes
_RANDOM = "[a-z0-9_]{8}"  # the random part tempfile puts in mkstemp/mkdtemp names
# Where writing an output fails for a reason the user can fix, the error names the path.
_PATH_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


def _read_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which races with threads.
_UMASK = _read_umask()


def _lock(fd: int) -> int | None:
    """An exclusive ``flock`` on open ``fd`` (a dup of it, held until closed): the mark of a
    live writer (module docstring). None where locks are unavailable."""
    if fcntl is None:
        return None
    held = os.dup(fd)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(held)
        return None
    return held


def _lock_path(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return _lock(fd)
    finally:
        os.close(fd)


def _unlock(held: int | None) -> None:
    if held is not None:
        os.close(held)


def _abandoned(path: Path, now: float) -> bool:
    """Whether no live writer holds temporary ``path`` (module docstring)."""
    try:
        age = now - path.lstat().st_mtime
    except OSError:
        return False
    if fcntl is None:
        return age > STALE_UNLOCKED_S
    if age < STALE_GRACE_S:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # a symlink or something unreadable: not ours to remove
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live writer holds it
    except OSError:  # this filesystem has no flock
        return age > STALE_UNLOCKED_S
    finally:
        os.close(fd)
    return True


def remove_stale(folder: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the entries of ``folder`` whose whole name matches ``pattern`` and that no
    live writer holds; returns what was removed."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        return []
    now = time.time()
    removed = [Path(e.path) for e in entries if pattern.fullmatch(e.name) and _abandoned(Path(e.path), now)]
    for path in removed:
        _remove(path)
    if removed:
        log.info("removed what interrupted writes left: %s", ", ".join(str(p) for p in removed))
    return removed


def remove_stale_siblings(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries an interrupted write of ``path`` left beside it (its own
    ``.NAME.XXXXXXXX.tmp``/``.partial``; a ``.old`` stash only while ``path`` exists,
    since until the swap completes the stash is the only copy)."""
    path = Path(path)
    name = re.escape(path.name)
    removed = remove_stale(path.parent, re.compile(rf"\.{name}\.{_RANDOM}\.(?:tmp|partial)"))
    if path.exists():
        removed += remove_stale(path.parent, re.compile(rf"\.{name}\.{_RANDOM}\.old"))
    return removed


def _naming(exc: OSError, path: Path) -> OSError:
    """``exc``, naming ``path`` where it names no file (a full disk's write error does not)."""
    if exc.filename is None and exc.errno in _PATH_ERRNOS:
        return OSError(exc.errno, exc.strerror, str(path))
    return exc


def os_error_line(exc: OSError) -> str:
    """One line for an ``OSError`` from writing or reading outside the data readers: what
    went wrong, the path, what to do."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}; free some space or choose another --out"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{exc.strerror or 'permission denied'}{where}; check its permissions or choose another path"
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}; check the path and free space"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename; an error
    for a full disk or a refused permission names ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _naming(exc, path) from None
    held = _lock(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the usual file mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise _naming(exc, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        _unlock(held)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every float that is NaN or infinite replaced by None, so that it
    writes as valid JSON (``null``; Python's ``NaN`` literal is not JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically; NaN and infinity as ``null``."""
    return atomic_write_text(path, json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n")


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
    removed and ``path`` is left as it was. One killed outright (SIGKILL) is removed by
    the next ``atomic_directory`` or ``atomic_write_bytes`` of the same ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_siblings(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    held = _lock_path(tmp)
    try:
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; give the usual folder mode
        yield tmp
        if path.exists() and not overwrite:
            raise FileExistsError(path)
        replace_path(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        _unlock(held)


STAGING = re.compile(rf"\.staging-{_RANDOM}")


@contextmanager
def staged_outputs(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a staging folder inside ``folder``; when the block succeeds, every entry
    written there replaces the entry of the same name in ``folder``.

    Nothing in ``folder`` changes if the block fails or is interrupted, so a previous
    run's outputs survive until the new ones are complete. The staging folders of
    processes killed outright (SIGKILL) are removed here, the live ones of concurrent
    writers kept (module docstring).
    """
    folder = Path(folder)
    created = []  # the folders made here, innermost first: removed again if the block fails
    top = folder
    while not top.exists():
        created.append(top)
        top = top.parent
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, STAGING)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    held = _lock_path(stage)
    done = False
    try:
        os.chmod(stage, 0o777 & ~_UMASK)
        yield stage
        for entry in sorted(stage.iterdir()):
            replace_path(entry, folder / entry.name)
        done = True
    finally:
        _unlock(held)
        shutil.rmtree(stage, ignore_errors=True)
        if not done:
            for made in created:
                with contextlib.suppress(OSError):  # only if nothing else was put there
                    made.rmdir()


def png_data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI, for pages that must open offline."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
