"""Checksummed files and their official download URLs."""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from osrkit.errors import ChecksumError, DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """A dataset file: its path under the data root, md5 and where to download it."""

    relpath: str
    md5: str | None
    urls: tuple[str, ...] = ()


def md5sum(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex md5 of a file."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_md5(path: Path, expected: str | None) -> None:
    """Raise ``ChecksumError`` when ``path``'s md5 differs from ``expected``."""
    if expected is None:
        return
    actual = md5sum(path)
    if actual != expected:
        raise ChecksumError(
            f"{path}: md5 is {actual}, expected {expected}; the file is corrupt or a different "
            f"version: delete it and download it again (--download) or replace it"
        )


def download(url: str, dest: Path, md5: str | None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``md5`` before the file appears."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".download", dir=dest.parent)
    try:
        log.info("downloading %s", url)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        verify_md5(Path(tmp), md5)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def ensure_file(root: Path, remote: RemoteFile, allow_download: bool = False) -> Path:
    """Return the verified local path of ``remote`` under ``root``, downloading it if allowed."""
    path = root / remote.relpath
    if path.is_file():
        verify_md5(path, remote.md5)
        return path
    md5_hint = f" (md5 {remote.md5})" if remote.md5 else ""
    if not allow_download or not remote.urls:
        how = "rerun with --download, or place it there" if remote.urls else "place it there by hand"
        raise DataError(
            f"missing dataset file {path}{md5_hint}: {how}, or point --data-root / "
            f"$OSRKIT_DATA at a folder that holds {remote.relpath}"
        )
    errors = []
    for url in remote.urls:
        try:
            return download(url, path, remote.md5)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ChecksumError) as exc:
            errors.append(f"{url}: {exc}")
            log.warning("download failed: %s: %s", url, exc)
    raise DataError(
        f"could not download {remote.relpath}{md5_hint} ({'; '.join(errors)}); "
        f"fetch it by hand and place it at {path}"
    )
