"""Data-root resolution (osrkit.data.root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from osrkit.data.root import ENV_VAR, candidate_roots, resolve_data_root
from osrkit.errors import DataError


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No $OSRKIT_DATA, and the working directory is an empty tmp folder ``tmp_path/work``."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def test_env_var_name():
    assert ENV_VAR == "OSRKIT_DATA"


def test_explicit_path(clean_env, tmp_path):
    target = tmp_path / "mydata"
    target.mkdir()
    (clean_env / "data").mkdir()  # ignored: the explicit path wins
    assert resolve_data_root(target) == target
    assert resolve_data_root(str(target)) == target


def test_explicit_path_beats_env(clean_env, monkeypatch, tmp_path):
    target = tmp_path / "mydata"
    target.mkdir()
    env = tmp_path / "envdata"
    env.mkdir()
    monkeypatch.setenv(ENV_VAR, str(env))
    assert resolve_data_root(target) == target


def test_explicit_missing_path(clean_env, tmp_path):
    with pytest.raises(DataError, match="--data-root") as info:
        resolve_data_root(tmp_path / "nowhere")
    assert "nowhere" in str(info.value)


def test_explicit_path_is_a_file(clean_env, tmp_path):
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(DataError):
        resolve_data_root(f)


def test_env_var_used(clean_env, monkeypatch, tmp_path):
    env = tmp_path / "envdata"
    env.mkdir()
    (clean_env / "data").mkdir()  # ignored: $OSRKIT_DATA wins over ./data
    monkeypatch.setenv(ENV_VAR, str(env))
    assert resolve_data_root() == env
    assert candidate_roots() == [env]


def test_env_var_points_nowhere(clean_env, monkeypatch, tmp_path):
    (clean_env / "data").mkdir()  # no silent fallback to ./data
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "gone"))
    with pytest.raises(DataError, match=r"\$OSRKIT_DATA") as info:
        resolve_data_root()
    assert "gone" in str(info.value)


def test_empty_env_var_is_ignored(clean_env, monkeypatch):
    (clean_env / "data").mkdir()
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve_data_root().resolve() == (clean_env / "data").resolve()


def test_local_data_folder(clean_env, tmp_path):
    (clean_env / "data").mkdir()
    (tmp_path / "shared" / "data").mkdir(parents=True)  # ./data is preferred
    assert resolve_data_root().resolve() == (clean_env / "data").resolve()


def test_shared_data_folder(clean_env, tmp_path):
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert resolve_data_root().resolve() == shared.resolve()


def test_data_file_is_not_a_folder(clean_env, tmp_path):
    (clean_env / "data").write_text("not a folder")
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    assert resolve_data_root().resolve() == shared.resolve()


def test_neither_exists_returns_local_data(clean_env):
    root = resolve_data_root()
    assert root == Path("data")
    assert not root.exists()  # not created: downloads create it later


def test_candidate_roots_default(clean_env):
    assert candidate_roots() == [Path("data"), Path("..") / "shared" / "data"]
