"""The command line with colour images of any size, new model options and their bad values."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from osrkit import OpenSetRecognizer
from osrkit.cli import main


def _colour_folder(root, n_per_class: int, seed: int, classes=("red", "green", "blue"), size=(36, 44)):
    """Photo-like colour images of mixed sizes: class = the dominant colour of a square."""
    rng = np.random.default_rng(seed)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            h, w = size[0] + rng.integers(0, 8), size[1] + rng.integers(0, 8)
            img = (rng.random((h, w, 3)) * 60).astype(np.uint8)
            r, c = rng.integers(0, h - 16), rng.integers(0, w - 16)
            img[r : r + 16, c : c + 16, k % 3] = 230
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(9)
    unknown = root / "unknown" / "grey"
    unknown.mkdir(parents=True)
    for i in range(40):
        Image.fromarray((100 + rng.random((40, 40)) * 40).astype(np.uint8)).save(unknown / f"{i}.jpg")
    return {
        "train": _colour_folder(root / "train", 80, 0),
        "known": _colour_folder(root / "known", 20, 1),
        "unknown": root / "unknown",
    }


def test_colour_folder_run_gets_a_colour_model(tmp_path, colour_folders, capsys):
    """From scratch (--no-pretrained): colour_cnn with its recipe; the pretrained default is
    tested in test_pretrained.py and by the README's own-data block."""
    out = tmp_path / "run"
    args = ["-q", "run", "--no-pretrained", "--out", str(out), "--train", str(colour_folders["train"])]
    args += ["--known"]
    args += [str(colour_folders["known"]), "--unknown", str(colour_folders["unknown"])]
    args += [
        "--epochs",
        "1",
        "--val-size",
        "60",
        "--batch-size",
        "32",
        "--embed-samples",
        "50",
        "--device",
        "cpu",
    ]
    assert main(args) == 0, capsys.readouterr().err
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["format_version"] == 3 and cfg["backbone"]["name"] == "colour_cnn"
    assert cfg["input_spec"]["channels"] == 3 and cfg["input_spec"]["resize"] == "shorter_side_crop"
    assert cfg["autoencoder"] is None and cfg["decision_scorer"] == "max_logit_knn"
    assert cfg["training"]["crop_padding"] == 2 and cfg["training"]["hflip_prob"] == 0.5
    assert cfg["training"]["optimizer"] == "sgd" and cfg["training"]["rotation_degrees"] == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "reconstruction" not in metrics["scorers"] and "max_logit" in metrics["scorers"]
    assert not (out / "plots" / "reconstructions.png").exists()
    # the model's health, checked after training: in metrics.json, the model folder and the report
    health = metrics["health"]
    assert health["checked"] == ["accuracy", "validation_curve", "optimizer_steps", "predicted_classes"]
    assert cfg["health"] == health
    assert ("class='health'" in (out / "report.html").read_text()) == (not health["ok"])
    # predict takes a grey JPEG of another size and a colour PNG, with the model's spec
    files = [
        str(next(colour_folders["unknown"].rglob("*.jpg"))),
        str(next(colour_folders["known"].rglob("*.png"))),
    ]
    capsys.readouterr()
    assert main(["predict", str(out / "model"), *files, "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 2 and set(rows[0]["scores"]) == set(cfg["scorers"])
    assert all(r["decided_by"]["max_logit_knn"] in ("max_logit", "knn") for r in rows)  # a fusion decides
    model = OpenSetRecognizer.from_pretrained(out / "model")
    assert [r["class_index"] for r in rows] == model.predict(files).tolist()


def test_a_colour_model_that_learned_nothing_says_so(tmp_path, caplog, capsys):
    """The issue's small colour folder whose model ended at chance, with a flat validation
    curve, and nothing said so: three classes of the same kind of image (no class can be
    told from another) give one warning line per failed check, and the model folder keeps
    them."""
    train = tmp_path / "same"
    for name in ("cat", "dog", "frog"):  # every class the same: a square of the same colour
        _colour_folder(train, 40, seed=len(name) + ord(name[0]), classes=(name,))
    out = tmp_path / "model"
    args = ["train", "--no-pretrained", "--out", str(out), "--train", str(train), "--device", "cpu"]
    args += ["--epochs", "3", "--val-size", "45", "--batch-size", "16"]
    with caplog.at_level("WARNING", logger="osrkit"):
        assert main(args) == 0, capsys.readouterr().err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("model health: ")]
    health = json.loads((out / "config.json").read_text())["health"]
    assert health["ok"] is False and len(lines) == len(health["warnings"])
    assert "accuracy" in {w["check"] for w in health["warnings"]}
    assert any("near chance" in line for line in lines)


def test_gray_path_for_colour_data_and_autoencoder_option(tmp_path, colour_folders, capsys):
    out = tmp_path / "m"
    args = ["-q", "train", "--out", str(out), "--train", str(colour_folders["train"]), "--channels", "1"]
    args += ["--image-size", "28", "--backbone", "small_cnn", "--epochs", "1", "--ae-epochs", "1"]
    args += ["--val-size", "60", "--device", "cpu"]
    assert main(args) == 0, capsys.readouterr().err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["input_spec"]["channels"] == 1 and cfg["input_spec"]["height"] == 28
    assert cfg["autoencoder"] is not None and cfg["decision_scorer"] == "fusion"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--image-size", "0"], "image size must be N or HxW"),
        (["--image-size", "axb"], "expected N or HxW"),
        (["--channels", "2"], "must be 1 (grayscale) or 3 (RGB)"),
        (["--backbone", "resnet9000"], "invalid choice: 'resnet9000'"),
        (["--decision-scorer", "nope"], "invalid choice: 'nope'"),
        (["--scorers", "msp,nope"], "unknown scorer 'nope'; registered scorers: class_reconstruction, "),
        (["--scorers", ","], "--scorers needs registered scorer names"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--crop-padding", "-1"], "must be >= 0"),
    ],
)
def test_bad_model_flags_are_one_line(tmp_path, flags, message, capsys):
    try:
        code = main(["train", "--out", str(tmp_path / "never"), *flags])
    except SystemExit as exc:  # argparse's own errors exit
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "never").exists()


def test_odd_image_size_with_autoencoder_fails_before_training(tmp_path, colour_folders, capsys):
    args = [
        "train",
        "--out",
        str(tmp_path / "m"),
        "--train",
        str(colour_folders["train"]),
        "--image-size",
        "30",
    ]
    args += ["--autoencoder", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "divisible by 4" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
