"""Failures that leave nothing behind: outputs checked before any data is loaded, no
empty or partial output folder after a failed command, one class refused in one line."""

from __future__ import annotations

import numpy as np
import pytest

from osrkit import OpenSetRecognizer
from osrkit.errors import ConfigError
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import synthetic_digits, write_folder


def test_run_with_mismatched_classes_leaves_no_output_folder(tmp_path, capsys, synthetic_folders):
    out = tmp_path / "runs" / "new"
    code, _, err = run_cli(
        capsys,
        "run",
        "--out",
        out,
        "--train",
        synthetic_folders["train"],
        "--known",
        synthetic_folders["unknown"],
        "--unknown",
        synthetic_folders["unknown"],
    )
    assert code == 2
    assert_one_line_error(err, "differ from the training classes")
    assert not (tmp_path / "runs").exists()


def test_evaluate_with_other_classes_leaves_no_output_folder(fitted, tmp_path, capsys, synthetic_folders):
    model = fitted.save_pretrained(tmp_path / "m")
    out = tmp_path / "eval"
    code, _, err = run_cli(
        capsys,
        "evaluate",
        model,
        "--out",
        out,
        "--known",
        synthetic_folders["unknown"],
        "--unknown",
        synthetic_folders["unknown"],
    )
    assert code == 2 and "differ" in err
    assert not out.exists()


def test_train_into_an_existing_file_fails_before_training(tmp_path, capsys, monkeypatch):
    import osrkit.recognizer.fitting as fitting

    monkeypatch.setattr(fitting, "train_classifier", lambda *a, **k: pytest.fail("trained before the check"))
    target = tmp_path / "model"
    target.write_text("not a folder")
    code, _, err = run_cli(capsys, "train", "--out", target, "--overwrite", "--max-train", 100)
    assert code == 2
    assert_one_line_error(err, "is a file; choose a folder with --out")
    assert target.read_text() == "not a folder" and not (tmp_path / "model.checkpoints").exists()


def test_a_single_class_folder_is_refused_in_one_line(tmp_path):
    images, _ = synthetic_digits(60)
    root = write_folder(tmp_path / "one", images, np.zeros(60, int), ["cats"])
    from osrkit import load_dataset

    data = load_dataset(str(root))
    with pytest.raises(ConfigError, match="holds one class \\('cats'\\).*at least 2 known classes"):
        OpenSetRecognizer(data.class_names).fit(data, {"epochs": 1, "val_size": 10})
