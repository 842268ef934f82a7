"""``--overwrite`` replaces only osrkit's outputs (issue 22): a folder that osrkit did not
write is refused in one line naming a file in it, before any work, and nothing of it is lost."""

from __future__ import annotations

import json

import pytest

from osrkit.errors import OutputExistsError
from osrkit.files.ownership import check_replaceable_model, is_model_folder, is_run_folder
from osrkit.jobs.pipeline import EVALUATION_OUTPUTS, check_output_dir
from tests.cli.test_cli import assert_one_line_error, folder_run_args, run_cli

METRICS = {"closed_set_accuracy": 0.9, "counts": {"known": 1, "unknown": 1}, "scorers": {}}


def _user_folder(path):
    """The issue's folder: notes.txt and sub/y, nothing of osrkit's."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    (path / "sub" / "y").write_text("mine too")
    return path


def _untouched(path) -> bool:
    return (path / "notes.txt").read_text() == "mine" and (path / "sub" / "y").read_text() == "mine too"


def test_train_overwrite_refuses_a_folder_osrkit_did_not_write(synthetic_folders, tmp_path, capsys):
    out = _user_folder(tmp_path / "notes")
    args = ["train", "--out", out, "--train", synthetic_folders["train"], "--overwrite"]
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert_one_line_error(err, "not an osrkit model folder", "notes.txt", "--overwrite")
    assert _untouched(out) and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]


def test_run_overwrite_refuses_outputs_in_a_folder_osrkit_did_not_write(synthetic_folders, tmp_path, capsys):
    out = _user_folder(tmp_path / "notes")
    (out / "plots").mkdir()
    (out / "plots" / "holiday.png").write_bytes(b"png")
    code, _, err = run_cli(capsys, *folder_run_args(synthetic_folders, out), "--overwrite")
    assert code == 2
    assert_one_line_error(err, "holiday.png", "not in an osrkit run folder")
    assert _untouched(out) and (out / "plots" / "holiday.png").read_bytes() == b"png"


def test_check_output_dir_allows_osrkit_run_folders_old_and_new(tmp_path):
    out = tmp_path / "run"
    (out / "plots").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")  # never replaced: not an output name
    (out / "metrics.json").write_text(json.dumps(METRICS))  # an old run folder: no marker file needed
    assert is_run_folder(out)
    check_output_dir(out, overwrite=True, outputs=EVALUATION_OUTPUTS)
    (out / "metrics.json").write_text('{"other": "tool"}')
    with pytest.raises(OutputExistsError, match="metrics.json"):
        check_output_dir(out, overwrite=True, outputs=EVALUATION_OUTPUTS)


def test_a_run_folders_model_must_be_an_osrkit_model(tmp_path):
    out = tmp_path / "run"
    (out / "model").mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(METRICS))
    (out / "model" / "weights.h5").write_bytes(b"keras")
    with pytest.raises(OutputExistsError, match=r"not an osrkit model folder.*weights\.h5"):
        check_output_dir(out, overwrite=True)
    (out / "model" / "weights.h5").unlink()
    check_output_dir(out, overwrite=True)  # an empty folder is fine


def test_model_folder_marker(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    assert not is_model_folder(model)
    (model / "config.json").write_text('{"format": "osrkit-recognizer", "format_version": 3, "damaged')
    assert is_model_folder(model)  # damaged further on: still osrkit's, replaceable
    check_replaceable_model(model)
    (model / "config.json").write_text('{"name": "format: osrkit-recognizer"}')
    assert not is_model_folder(model)
    with pytest.raises(OutputExistsError, match="config.json"):
        check_replaceable_model(model)
