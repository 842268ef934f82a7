import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from osrkit import OpenSetRecognizer
from osrkit.cli import main
from osrkit.data.idx import write_idx
from osrkit.scorers import FusionScorer
from osrkit.scorers.selection import DEFAULT_SCORERS
from tests.conftest import synthetic_digits

DEFAULT_SET = (*DEFAULT_SCORERS, *FusionScorer.DEFAULT_MEMBERS, "fusion")

TINY = [
    "--epochs",
    "1",
    "--ae-epochs",
    "1",
    "--val-size",
    "500",
    "--batch-size",
    "32",
    "--embed-samples",
    "300",
]
METRIC_KEYS = {
    "auroc",
    "aupr_in",
    "aupr_out",
    "fpr_at_95_tpr",
    "oscr",
    "macro_f1",
    "known_accept_rate",
    "unknown_reject_rate",
}


def interrupted(*args, **kwargs):
    raise KeyboardInterrupt


def folder_run_args(folders: dict, out: Path) -> list:
    """`osrkit run` on the synthetic image folders, one quick epoch each."""
    return [
        "run",
        "--out",
        out,
        "--train",
        folders["train"],
        "--known",
        folders["known"],
        "--unknown",
        folders["unknown"],
        "--epochs",
        1,
        "--ae-epochs",
        1,
        "--val-size",
        200,
        "--embed-samples",
        100,
    ]


def run_cli(capsys, *args):
    code = main(["-q", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *needles: str):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("osrkit")
    for needle in needles:
        assert needle in lines[0], lines[0]


def check_run_folder(out: Path) -> dict:
    for name in (
        "model/config.json",
        "model/classifier.safetensors",
        "model/autoencoder.safetensors",
        "metrics.json",
        "report.html",
        "plots/embeddings.png",
        "plots/roc.png",
        "plots/score_histograms.png",
        "plots/reconstructions.png",
        "plots/confusion_matrix.png",
    ):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["closed_set_accuracy"] <= 1
    assert set(m["counts"]) == {"known", "unknown"}
    # the default scorer set: the decision scorer (fusion, with its members) and kNN
    assert set(m["scorers"]) == set(DEFAULT_SET) <= set(m["thresholds"])
    for scorer in m["scorers"].values():
        assert set(scorer) >= METRIC_KEYS
        assert all(0.0 <= scorer[k] <= 1.0 for k in METRIC_KEYS)
    return m


def test_run_end_to_end_on_real_data(shared_data, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        capsys,
        "run",
        "--out",
        out,
        "--data-root",
        shared_data,
        "--max-train",
        4000,
        "--max-known",
        1000,
        "--max-unknown",
        1000,
        *TINY,
    )
    assert code == 0
    m = check_run_folder(out)
    assert m["counts"] == {"known": 1000, "unknown": 1000}
    assert m["closed_set_accuracy"] > 0.8  # one short epoch already learns digits
    assert m["decision_scorer"] == "fusion" and m["scorers"]["fusion"]["auroc"] > 0.9
    assert "closed-set accuracy" in stdout and "fusion" in stdout
    # a second run into the same folder is refused without --overwrite
    code, _, err = run_cli(capsys, "run", "--out", out, "--data-root", shared_data, *TINY)
    assert code == 2
    assert_one_line_error(err, "already holds", "--overwrite")


def test_run_train_evaluate_predict_on_image_folders(synthetic_folders, tmp_path, capsys):
    f = synthetic_folders
    out = tmp_path / "run"
    args = ["--train", f["train"], "--known", f["known"], "--unknown", f["unknown"]]
    code, _, err = run_cli(
        capsys,
        "run",
        "--out",
        out,
        *args,
        "--epochs",
        2,
        "--ae-epochs",
        2,
        "--val-size",
        200,
        "--batch-size",
        64,
        "--embed-samples",
        200,
    )
    assert code == 0, err
    m = check_run_folder(out)
    assert m["counts"] == {"known": 300, "unknown": 200}
    assert m["class_names"] == [f"c{k}" for k in range(10)]

    # train + evaluate as separate steps
    model_dir = tmp_path / "model"
    code, stdout, err = run_cli(
        capsys,
        "train",
        "--out",
        model_dir,
        "--train",
        f["train"],
        "--epochs",
        1,
        "--ae-epochs",
        1,
        "--val-size",
        200,
    )
    assert code == 0, err
    assert "saved model" in stdout and not (tmp_path / "model.checkpoints").exists()
    code, _, err = run_cli(
        capsys,
        "evaluate",
        model_dir,
        "--out",
        tmp_path / "eval",
        "--known",
        f["known"],
        "--unknown",
        f["unknown"],
        "--embed-samples",
        100,
    )
    assert code == 0, err
    assert (tmp_path / "eval" / "report.html").is_file()
    code, _, err = run_cli(capsys, "train", "--out", model_dir, "--train", f["train"])
    assert code == 2
    assert_one_line_error(err, "already holds model", "--overwrite")


def test_predict_prints_json_lines_for_any_image(tmp_path, capsys, fitted):
    model_dir = fitted.save_pretrained(tmp_path / "model")
    digits, labels = synthetic_digits(2, seed=4)
    paths = []
    big = Image.fromarray(digits[0]).resize((280, 280), Image.Resampling.NEAREST)
    big.save(tmp_path / "big_gray.png")
    Image.fromarray(digits[1]).convert("RGB").save(tmp_path / "rgb.jpg", quality=95)
    Image.fromarray((np.random.default_rng(0).random((32, 48, 3)) * 255).astype(np.uint8)).save(
        tmp_path / "noise.png"
    )
    paths = [tmp_path / "big_gray.png", tmp_path / "rgb.jpg", tmp_path / "noise.png"]
    code, out, err = run_cli(capsys, "predict", model_dir, *paths)
    assert code == 0, err
    rows = [json.loads(line) for line in out.strip().splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for r in rows:
        assert set(r) == {
            *("path", "label", "class_index", "known", "decision"),
            *("scores", "thresholds", "margins", "decided_by"),
        }
        assert set(r["scores"]) == set(r["thresholds"]) == set(r["margins"]) == set(fitted.scorers_)
        assert r["known"] == (r["label"] != "unknown") == (r["class_index"] != -1)
        assert r["thresholds"] == pytest.approx(fitted.thresholds_)
        for name, score in r["scores"].items():
            assert r["margins"][name] == pytest.approx(r["thresholds"][name] - score)
        # the decision explained: its scorer, score, threshold and margin, and its sign
        d = r["decision"]
        assert d["scorer"] == fitted.decision_scorer
        assert (d["score"], d["threshold"]) == (r["scores"][d["scorer"]], r["thresholds"][d["scorer"]])
        assert r["known"] == (d["margin"] >= 0)
        # a fusion names the member that decided: the one highest against its threshold,
        # so it is over its threshold exactly when the fusion rejected the image
        assert set(r["decided_by"]) == set(fitted.fusions)
        assert d["decided_by"] == r["decided_by"][d["scorer"]]
        member = d["decided_by"]
        assert member in fitted.scorers_[d["scorer"]].members
        assert d["member_score"] == r["scores"][member]
        assert d["member_threshold"] == fitted.scorers_[d["scorer"]].member_thresholds()[member]
        assert (d["member_score"] > d["member_threshold"]) == (not r["known"])
    assert rows[0]["class_index"] in (labels[0], -1)
    assert rows[2]["known"] is False
    # same decision as the Python API
    model = OpenSetRecognizer.from_pretrained(model_dir)
    assert [r["class_index"] for r in rows] == model.predict(paths).tolist()


def test_predict_unreadable_image_is_one_line_error(tmp_path, capsys, fitted):
    model_dir = fitted.save_pretrained(tmp_path / "model")
    (tmp_path / "notes.png").write_text("not an image")
    code, out, err = run_cli(capsys, "predict", model_dir, tmp_path / "notes.png")
    assert code == 2 and out == ""
    assert_one_line_error(err, "notes.png", "not a readable image")
    code, _, err = run_cli(capsys, "predict", tmp_path / "nomodel", tmp_path / "notes.png")
    assert code == 2
    assert_one_line_error(err, "nomodel does not exist")
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "predict", tmp_path / "empty", tmp_path / "notes.png")
    assert code == 2
    assert_one_line_error(err, "not an osrkit model folder")


def test_missing_dataset_is_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--out", tmp_path / "o", "--data-root", tmp_path, *TINY)
    assert code == 2
    assert_one_line_error(err, "missing dataset file", "md5", "--download")
    assert not (tmp_path / "o" / "model").exists()


def test_corrupt_dataset_is_one_line_error(tmp_path, capsys):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    x, y = synthetic_digits(20)  # valid IDX files, but not the published MNIST bytes
    write_idx(raw / "train-images-idx3-ubyte.gz", x)
    write_idx(raw / "train-labels-idx1-ubyte.gz", y.astype(np.uint8))
    code, _, err = run_cli(capsys, "run", "--out", tmp_path / "o", "--data-root", tmp_path, *TINY)
    assert code == 2
    assert_one_line_error(
        err, "train-images-idx3-ubyte.gz", "md5", "expected f68b3c2dcbeaaa9fbdd348bbdeb94873"
    )


def test_missing_data_root_is_one_line_error(tmp_path, capsys):
    code, _, err = run_cli(capsys, "run", "--out", tmp_path / "o", "--data-root", tmp_path / "nope")
    assert code == 2
    assert_one_line_error(err, "is not a folder")


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--batch-size", "abc"], "--batch-size"),
        (["--max-train", "0"], "--max-train"),
        (["--hflip", "1.5"], "--hflip"),
        (["--rotation", "-10"], "--rotation"),
        (["--accept-rate", "0"], "--accept-rate"),
        (["--lr", "-1"], "--lr"),
        (["--no-such-flag"], "unrecognized"),
    ],
)
def test_bad_flags_are_one_line_errors(flags, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run", *flags])
    assert exc.value.code == 2
    assert_one_line_error(capsys.readouterr().err, needle)


def test_interrupt_leaves_no_model_folder_and_resumes(synthetic_folders, tmp_path, capsys, monkeypatch):
    import osrkit.recognizer.fitting as recognizer_module

    out = tmp_path / "run"
    args = folder_run_args(synthetic_folders, out)

    monkeypatch.setattr(recognizer_module, "train_autoencoder", interrupted)
    code, _, err = run_cli(capsys, *args)
    assert code == 130
    assert_one_line_error(err, "interrupted", "resume")
    assert not (out / "model").exists() and not (out / "metrics.json").exists()
    assert (out / "checkpoints" / "classifier.pt").is_file()
    assert not list(out.glob(".*partial"))
    monkeypatch.undo()
    # resumes from the checkpoint: its INFO line, caught at the logger (the CLI sets the
    # log's level and handlers itself)
    import osrkit.training.loop as loop

    said = []
    monkeypatch.setattr(loop.log, "info", lambda msg, *a: said.append(msg % a))
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "classifier: resuming from checkpoint after epoch 1" in said
    check_run_folder(out)


def test_train_and_known_must_differ(tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "run", "--out", tmp_path / "o", "--train", "mnist:test", "--known", "MNIST"
    )
    assert code == 2
    assert_one_line_error(err, "same data", "mnist:test")


def test_unwritable_output_is_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "run", "--out", tmp_path / "afile" / "sub", *TINY)
    assert code == 2
    assert_one_line_error(err, "cannot write to output folder")


def test_console_script_entry_point():
    result = subprocess.run([sys.executable, "-m", "osrkit", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("osrkit ")


def test_interrupted_overwrite_keeps_previous_run(synthetic_folders, tmp_path, capsys, monkeypatch):
    import osrkit.jobs.pipeline as pipeline_module

    out = tmp_path / "run"
    args = folder_run_args(synthetic_folders, out)
    assert run_cli(capsys, *args)[0] == 0
    before = (out / "metrics.json").read_text()

    monkeypatch.setattr(pipeline_module, "write_report", interrupted)  # fails at the very end
    code, _, _ = run_cli(capsys, *args, "--overwrite", "--seed", 1)
    assert code == 130
    assert (out / "metrics.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoints",
        "metrics.json",
        "model",
        "plots",
        "report.html",
    ]
    assert len(list((out / "plots").glob("*.png"))) == 5


def test_sigterm_is_handled_like_ctrl_c(synthetic_folders, tmp_path):
    """A terminated `osrkit run` leaves checkpoints, no staging folder and no model."""
    import signal
    import time

    out = tmp_path / "run"
    args = [str(a) for a in folder_run_args(synthetic_folders, out)]
    args[args.index("--epochs") + 1] = "50"
    proc = subprocess.Popen([sys.executable, "-m", "osrkit", "-q", *args], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (out / "checkpoints" / "classifier.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints"]


def test_no_fast_does_not_leak_into_the_calling_process(monkeypatch, capsys):
    """main(["--no-fast", ...]) once left OSRKIT_FAST=0 behind, turning the fast paths off
    for every later model built in the same Python process."""
    import os

    monkeypatch.delenv("OSRKIT_FAST", raising=False)
    main(["--no-fast", "perf", "speed", "--skip-run", "--model", "missing"])
    assert "OSRKIT_FAST" not in os.environ
    monkeypatch.setenv("OSRKIT_FAST", "1")
    main(["--no-fast", "perf", "speed", "--skip-run", "--model", "missing"])
    assert os.environ["OSRKIT_FAST"] == "1"
