"""Atomic writes (osrkit.files.atomic): a file or folder is either complete or not there."""

from __future__ import annotations

import json
import os
import stat

import pytest

import osrkit.files.atomic as oio
from osrkit.files.atomic import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    staged_outputs,
)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes(tmp_path):
    path = tmp_path / "sub" / "dir" / "blob.bin"  # parents are created
    assert atomic_write_bytes(path, b"\x00\x01abc") == path
    assert path.read_bytes() == b"\x00\x01abc"
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new"
    assert names(path.parent) == ["blob.bin"]


def test_write_text_utf8(tmp_path):
    path = tmp_path / "report.md"
    assert atomic_write_text(str(path), "héllo ✓\n") == path
    assert path.read_bytes() == "héllo ✓\n".encode()
    assert names(tmp_path) == ["report.md"]


def test_write_json(tmp_path):
    path = tmp_path / "metrics.json"
    obj = {"b": [1, 2.5, None], "a": {"x": "y"}}
    atomic_write_json(path, obj)
    text = path.read_text()
    assert json.loads(text) == obj
    assert text.endswith("\n")
    assert text.index('"b"') < text.index('"a"')  # key order kept


def test_write_json_unserialisable_leaves_old(tmp_path):
    path = tmp_path / "m.json"
    atomic_write_json(path, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"ok": 1}
    assert names(tmp_path) == ["m.json"]


@pytest.mark.parametrize("writer", ["bytes", "text", "json"])
def test_failed_replace_leaves_old_content_and_no_temp(tmp_path, monkeypatch, writer):
    path = tmp_path / "out.json"
    path.write_text('"old"')

    def boom(src, dst):
        raise OSError("disk on fire")

    monkeypatch.setattr(oio.os, "replace", boom)
    with pytest.raises(OSError, match="disk on fire"):
        if writer == "bytes":
            atomic_write_bytes(path, b'"new"')
        elif writer == "text":
            atomic_write_text(path, '"new"')
        else:
            atomic_write_json(path, "new")
    monkeypatch.undo()
    assert path.read_text() == '"old"'
    assert names(tmp_path) == ["out.json"]


def test_interrupt_during_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "new.bin"

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(oio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"data")
    monkeypatch.undo()
    assert names(tmp_path) == []


def test_written_file_honours_umask(tmp_path):
    """An atomically written file gets the same permissions as a plain open() would give.

    tempfile.mkstemp creates files with mode 0600; the rename keeps that mode, so reports,
    metrics and checkpoints end up unreadable by group/others regardless of the umask.
    """
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "atomic.txt", "x")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "atomic.txt").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == 0o644


def test_atomic_directory_appears_after_block(tmp_path):
    target = tmp_path / "model"
    with atomic_directory(target) as tmp:
        assert tmp.is_dir()
        assert tmp != target
        assert tmp.parent == tmp_path
        (tmp / "config.json").write_text("{}")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"w")
        assert not target.exists()
    assert target.is_dir()
    assert (target / "config.json").read_text() == "{}"
    assert (target / "sub" / "w.bin").read_bytes() == b"w"
    assert not tmp.exists()
    assert names(tmp_path) == ["model"]


def test_atomic_directory_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "model"
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("x")
    assert (target / "f").read_text() == "x"


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_directory_exception_leaves_nothing(tmp_path, exc):
    target = tmp_path / "model"
    with pytest.raises(exc), atomic_directory(target) as tmp:
        (tmp / "half.bin").write_bytes(b"half")
        raise exc()
    assert not target.exists()
    assert names(tmp_path) == []  # no *.partial leftovers
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_atomic_directory_exception_keeps_existing(tmp_path, exc):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(exc), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        raise exc()
    assert names(target) == ["old.txt"]
    assert names(tmp_path) == ["model"]


def test_atomic_directory_overwrite(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
        assert (target / "old.txt").exists()  # untouched until the block ends
    assert names(target) == ["new.txt"]
    assert names(tmp_path) == ["model"]  # no .old-<pid> or .partial leftovers


def test_atomic_directory_no_overwrite(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(FileExistsError), atomic_directory(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert names(target) == ["old.txt"]
    assert names(tmp_path) == ["model"]


def test_atomic_directory_failed_swap_keeps_existing(tmp_path, monkeypatch):
    """If moving the new folder into place fails, the old folder must still be at ``path``.

    The overwrite branch first renames the old folder aside; if the second rename fails,
    the old folder has to be moved back.
    """
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")
    real_replace = os.replace
    calls = []

    def second_fails(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("rename failed")
        return real_replace(src, dst)

    monkeypatch.setattr(oio.os, "replace", second_fails)
    with pytest.raises(OSError, match="rename failed"), atomic_directory(target, overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    monkeypatch.undo()
    assert len(calls) >= 2
    assert target.is_dir()
    assert names(target) == ["old.txt"]
    assert not list(tmp_path.glob("*.partial"))


def test_atomic_directory_honours_umask(tmp_path):
    """The final folder gets the umask's permissions, not mkdtemp's private 0700."""
    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as tmp:
            (tmp / "f").write_text("x")
        (tmp_path / "plain").mkdir()
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "model").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o755


def test_staged_outputs_replace_only_on_success(tmp_path):

    (tmp_path / "metrics.json").write_text("old")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "old.png").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_outputs(tmp_path) as stage:
        (stage / "metrics.json").write_text("new")
        raise KeyboardInterrupt
    assert (tmp_path / "metrics.json").read_text() == "old"
    assert names(tmp_path) == ["metrics.json", "plots"]
    with staged_outputs(tmp_path) as stage:
        (stage / "metrics.json").write_text("new")
        (stage / "plots").mkdir()
        (stage / "plots" / "new.png").write_text("new")
    assert (tmp_path / "metrics.json").read_text() == "new"
    assert names(tmp_path / "plots") == ["new.png"]
    assert names(tmp_path) == ["metrics.json", "plots"]


def test_replace_path_is_collision_free(tmp_path):
    from osrkit.files.atomic import replace_path

    (tmp_path / ".model.old").mkdir()  # a stale stash from an earlier crash is no obstacle
    (tmp_path / "model").mkdir()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "w").write_text("1")
    replace_path(tmp_path / "new", tmp_path / "model")
    assert names(tmp_path / "model") == ["w"]


def test_staged_outputs_leave_no_folders_they_made_when_the_block_fails(tmp_path):
    """A failed evaluate --out a/b/c once left a/b behind: only the leaf was removed."""
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError), staged_outputs(tmp_path / "kept" / "a" / "b" / "c") as stage:
        (stage / "metrics.json").write_text("{}")
        raise RuntimeError("evaluation failed")
    assert list((tmp_path / "kept").iterdir()) == []
