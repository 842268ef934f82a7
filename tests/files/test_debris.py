"""No debris (issue 22): what a killed writer leaves (``.NAME.XXXXXXXX.partial``/``.tmp``/
``.old`` beside an output, ``.staging-XXXXXXXX`` inside a run folder) is removed by the next
write of the same output, and nothing else: not other outputs' temporaries, not a live
writer's, not the user's files. Errors for a full disk or a refused permission name the path."""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import sys
import textwrap
import time

import pytest

import osrkit.files.atomic as oio
from osrkit.files.atomic import (
    STALE_GRACE_S,
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    os_error_line,
    staged_outputs,
)


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def _age(path, seconds: float = 3 * STALE_GRACE_S) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


def _debris(folder, name: str, kind: str = "partial"):
    path = folder / f".{name}.abcd_123.{kind}"
    if kind == "tmp":
        path.write_bytes(b"half")
    else:
        path.mkdir()
        (path / "half.bin").write_bytes(b"half")
    _age(path)
    return path


def test_atomic_directory_removes_its_own_abandoned_partials_only(tmp_path):
    _debris(tmp_path, "model")
    _debris(tmp_path, "model", "tmp")
    others = [
        _debris(tmp_path, "other"),  # another output's
        _debris(tmp_path, "model.v2"),  # a name that merely starts alike
        tmp_path / ".model.notours.partial",  # not tempfile's naming
        tmp_path / "model.partial",
    ]
    for p in others[2:]:
        p.mkdir()
        _age(p)
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "f").write_text("x")
    assert names(tmp_path) == sorted(["model", *(p.name for p in others)])


def test_a_live_writers_partial_is_kept(tmp_path):
    live = _debris(tmp_path, "model")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as its writer holds it
    try:
        with atomic_directory(tmp_path / "model", overwrite=True) as tmp:
            (tmp / "f").write_text("x")
    finally:
        os.close(fd)
    assert live.is_dir()
    with atomic_directory(tmp_path / "model", overwrite=True) as tmp:  # its writer gone
        (tmp / "f").write_text("y")
    assert not live.exists()


def test_a_young_unlocked_partial_is_kept(tmp_path):
    """Between mkdtemp and flock a writer's folder is unlocked: the grace period covers it."""
    young = _debris(tmp_path, "model")
    _age(young, 0)
    with atomic_directory(tmp_path / "model") as tmp:
        (tmp / "f").write_text("x")
    assert young.is_dir()


def test_staged_outputs_remove_abandoned_staging_folders_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".staging-abcd_123"
    stale.mkdir()
    _age(stale)
    (out / ".staging-notes").mkdir()  # not tempfile's naming: the user's
    (out / "notes.txt").write_text("mine")
    with staged_outputs(out) as stage:
        (stage / "metrics.json").write_text("{}")
    assert names(out) == [".staging-notes", "metrics.json", "notes.txt"]


def test_stale_old_stash_is_removed_only_while_its_output_exists(tmp_path):
    stash = _debris(tmp_path, "model", "old")
    with atomic_directory(tmp_path / "other") as tmp:  # another name: untouched
        (tmp / "f").write_text("x")
    assert stash.exists()
    atomic_write_bytes(tmp_path / "model", b"x")  # "model" missing: the stash may be its only copy
    assert stash.exists()
    atomic_write_bytes(tmp_path / "model", b"y")
    assert not stash.exists()


def test_atomic_write_removes_abandoned_temporary_files(tmp_path):
    _debris(tmp_path, "model.onnx", "tmp")
    atomic_write_bytes(tmp_path / "model.onnx", b"graph")
    assert names(tmp_path) == ["model.onnx"]


def test_killed_writer_leaves_a_partial_the_next_write_removes(tmp_path):
    """SIGKILL: no handler runs; the kernel drops the writer's lock, so its folder is known abandoned."""
    target = tmp_path / "model"
    child = textwrap.dedent(
        f"""
        import time
        from osrkit.files.atomic import atomic_directory
        with atomic_directory({str(target)!r}) as tmp:
            (tmp / "half.bin").write_bytes(b"half")
            print("ready", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    (partial,) = tmp_path.glob(".model.*.partial")
    _age(partial)  # past the grace period, yet locked: a live writer's
    with atomic_directory(tmp_path / "other") as tmp:
        pass
    with atomic_directory(target) as tmp:
        (tmp / "f").write_text("x")
    assert partial.exists()
    target_after = names(target)
    proc.kill()
    proc.wait()
    _age(partial)
    with atomic_directory(target, overwrite=True) as tmp:
        (tmp / "f").write_text("y")
    assert not partial.exists()
    assert target_after == ["f"]
    assert names(tmp_path) == ["model", "other"]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name


def test_full_disk_error_names_the_path(tmp_path, monkeypatch):
    monkeypatch.setattr(oio.os, "fsync", _no_space)
    path = tmp_path / "run" / "metrics.json"
    with pytest.raises(OSError) as info:
        atomic_write_json(path, {"a": 1})
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    line = os_error_line(info.value)
    assert str(path) in line and "free some space" in line
    assert names(path.parent) == []  # no temporary left


def test_permission_error_names_the_path(tmp_path, monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(oio.os, "fsync", refused)
    with pytest.raises(OSError) as info:
        atomic_write_bytes(tmp_path / "w.bin", b"x")
    assert info.value.filename == str(tmp_path / "w.bin")
    assert str(tmp_path / "w.bin") in os_error_line(info.value)


def test_cli_full_disk_is_one_line_naming_the_path(synthetic_folders, tmp_path, monkeypatch, capsys):
    """The disk fills while `osrkit train` writes its first checkpoint: one line names the file."""
    from tests.cli.test_cli import assert_one_line_error, run_cli

    monkeypatch.setattr(oio.os, "fsync", _no_space)
    out = tmp_path / "model"
    args = ["train", "--out", out, "--train", synthetic_folders["train"], "--max-train", 300]
    code, _, err = run_cli(capsys, *args, "--epochs", 1, "--ae-epochs", 1, "--val-size", 100)
    assert code == 2
    assert_one_line_error(err, "no space left", str(tmp_path / "model.checkpoints"), "free some space")
    assert not out.exists()
