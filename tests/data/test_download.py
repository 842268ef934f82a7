"""Checksummed dataset files (osrkit.data.download); downloads use file:// URLs only."""

from __future__ import annotations

import hashlib

import pytest

from osrkit.data.download import RemoteFile, download, ensure_file, md5sum, verify_md5
from osrkit.errors import ChecksumError, DataError

CONTENT = b"pretend this is MNIST\n" * 1000
CONTENT_MD5 = hashlib.md5(CONTENT).hexdigest()
WRONG_MD5 = "0123456789abcdef0123456789abcdef"


def put(path, data=CONTENT):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def source_url(tmp_path, data=CONTENT, name="served.gz"):
    """A file outside the data root, reachable offline through a file:// URL."""
    src = put(tmp_path / "server" / name, data)
    return src.resolve().as_uri()


def test_md5sum_matches_hashlib(tmp_path):
    data = bytes(range(256)) * 5000  # more than one chunk with a small chunk size
    path = put(tmp_path / "f.bin", data)
    assert md5sum(path) == hashlib.md5(data).hexdigest()
    assert md5sum(path, chunk=1000) == hashlib.md5(data).hexdigest()
    assert md5sum(str(path)) == hashlib.md5(data).hexdigest()
    empty = put(tmp_path / "empty", b"")
    assert md5sum(empty) == "d41d8cd98f00b204e9800998ecf8427e"


def test_verify_md5(tmp_path):
    path = put(tmp_path / "f")
    verify_md5(path, CONTENT_MD5)
    verify_md5(path, None)  # no checksum known: accepted
    with pytest.raises(ChecksumError):
        verify_md5(path, WRONG_MD5)


def test_ensure_file_present_and_correct(tmp_path):
    put(tmp_path / "MNIST" / "raw" / "x.gz")
    remote = RemoteFile("MNIST/raw/x.gz", CONTENT_MD5, ("file:///nonexistent/x.gz",))
    assert ensure_file(tmp_path, remote) == tmp_path / "MNIST" / "raw" / "x.gz"
    assert ensure_file(tmp_path, remote, allow_download=True) == tmp_path / "MNIST" / "raw" / "x.gz"


def test_ensure_file_without_md5(tmp_path):
    put(tmp_path / "x.gz", b"anything")
    assert ensure_file(tmp_path, RemoteFile("x.gz", None)) == tmp_path / "x.gz"


def test_ensure_file_wrong_md5(tmp_path):
    put(tmp_path / "MNIST" / "raw" / "x.gz")
    remote = RemoteFile("MNIST/raw/x.gz", WRONG_MD5, ("file:///nonexistent/x.gz",))
    with pytest.raises(ChecksumError) as info:
        ensure_file(tmp_path, remote)
    message = str(info.value)
    assert CONTENT_MD5 in message
    assert WRONG_MD5 in message
    assert "x.gz" in message
    assert (tmp_path / "MNIST" / "raw" / "x.gz").read_bytes() == CONTENT  # not deleted


def test_ensure_file_missing_without_download(tmp_path):
    remote = RemoteFile("KMNIST/raw/t10k-images-idx3-ubyte.gz", CONTENT_MD5, ("file:///nowhere/x.gz",))
    with pytest.raises(DataError) as info:
        ensure_file(tmp_path, remote)
    message = str(info.value)
    assert "KMNIST/raw/t10k-images-idx3-ubyte.gz" in message
    assert CONTENT_MD5 in message
    assert "--download" in message
    assert not (tmp_path / "KMNIST").exists()


def test_ensure_file_missing_without_urls(tmp_path):
    remote = RemoteFile("notMNIST/raw/t10k-labels-idx1-ubyte.gz", CONTENT_MD5)
    for allow in (False, True):
        with pytest.raises(DataError) as info:
            ensure_file(tmp_path, remote, allow_download=allow)
        message = str(info.value)
        assert "by hand" in message
        assert "--download" not in message
        assert "notMNIST/raw/t10k-labels-idx1-ubyte.gz" in message
        assert CONTENT_MD5 in message


def test_download_through_file_url(tmp_path):
    root = tmp_path / "data"
    remote = RemoteFile("MNIST/raw/x.gz", CONTENT_MD5, (source_url(tmp_path),))
    path = ensure_file(root, remote, allow_download=True)
    assert path == root / "MNIST" / "raw" / "x.gz"
    assert path.read_bytes() == CONTENT
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.gz"]  # no temp files left
    assert ensure_file(root, remote) == path  # now present: no download needed


def test_download_falls_back_to_next_url(tmp_path):
    root = tmp_path / "data"
    urls = ((tmp_path / "missing.gz").as_uri(), source_url(tmp_path))
    path = ensure_file(root, RemoteFile("x.gz", CONTENT_MD5, urls), allow_download=True)
    assert path.read_bytes() == CONTENT


def test_download_with_wrong_md5_leaves_nothing(tmp_path):
    root = tmp_path / "data"
    remote = RemoteFile("MNIST/raw/x.gz", WRONG_MD5, (source_url(tmp_path),))
    with pytest.raises(DataError) as info:
        ensure_file(root, remote, allow_download=True)
    message = str(info.value)
    assert "could not download" in message
    assert WRONG_MD5 in message
    assert CONTENT_MD5 in message  # the actual md5 of what came down
    dest = root / "MNIST" / "raw"
    assert list(dest.iterdir()) == []  # neither x.gz nor a .x.gz.*.download temp file


def test_download_all_urls_fail(tmp_path):
    root = tmp_path / "data"
    urls = ((tmp_path / "a.gz").as_uri(), (tmp_path / "b.gz").as_uri())
    with pytest.raises(DataError) as info:
        ensure_file(root, RemoteFile("x.gz", CONTENT_MD5, urls), allow_download=True)
    message = str(info.value)
    assert "a.gz" in message
    assert "b.gz" in message
    assert "by hand" in message or "place it at" in message
    assert [p.name for p in root.iterdir()] == []


def test_download_function_replaces_atomically(tmp_path):
    dest = put(tmp_path / "d" / "file.bin", b"old")
    with pytest.raises(ChecksumError):
        download(source_url(tmp_path), dest, WRONG_MD5)
    assert dest.read_bytes() == b"old"  # a failed download keeps the previous file
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]
    assert download(source_url(tmp_path), dest, CONTENT_MD5) == dest
    assert dest.read_bytes() == CONTENT
    assert sorted(p.name for p in dest.parent.iterdir()) == ["file.bin"]
