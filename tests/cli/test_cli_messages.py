"""Messages that name the real cause (a device that is not there, a path that does not
exist, a mistyped dataset or option, one class), and the log the commands write."""

from __future__ import annotations

import importlib.util
import logging

import numpy as np
import pytest
import torch

from osrkit import OpenSetRecognizer
from osrkit.cli import main
from osrkit.cli.commands import COMMANDS
from osrkit.cli.logs import LineFormatter, cli_logging, log_level
from osrkit.cli.parser import build_parser
from osrkit.errors import ConfigError
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import synthetic_digits, write_folder


@pytest.fixture
def no_cuda(monkeypatch):
    """This machine as one without a CUDA GPU, wherever the tests run."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="module")
def model_dir(fitted, tmp_path_factory):
    return fitted.save_pretrained(tmp_path_factory.mktemp("messages") / "model")


def test_a_missing_cuda_is_a_device_error_not_a_damaged_folder(model_dir, no_cuda, capsys, tmp_path):
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        OpenSetRecognizer.from_pretrained(model_dir, device="cuda")
    image = tmp_path / "x.png"
    image.write_bytes(b"")  # never read: the model is loaded first
    serve = [["serve", model_dir]] if importlib.util.find_spec("uvicorn") else []  # the serve extra
    for command in (["predict", model_dir, image], *serve):
        code, _, err = run_cli(capsys, *command, "--device", "cuda")
        assert code == 2
        assert_one_line_error(err, "'cuda' asked for, but this machine has no CUDA GPU", "use --device cpu")
        assert "damaged" not in err


def test_a_missing_model_folder_says_it_does_not_exist(model_dir, capsys):
    typo = model_dir.parent / "modle"
    code, _, err = run_cli(capsys, "predict", typo, "x.png")
    assert code == 2
    assert_one_line_error(err, f"model folder {typo} does not exist", f"did you mean {model_dir}?")
    code, _, err = run_cli(capsys, "evaluate", model_dir / "config.json", "--out", model_dir.parent / "e")
    assert code == 2
    assert_one_line_error(err, "config.json is a file, not a model folder")


def test_a_mistyped_training_folder_names_the_folder_and_the_nearest(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_train").mkdir()
    code, _, err = run_cli(capsys, "train", "--out", "m", "--train", "my_trian")
    assert code == 2
    needles = ("no folder 'my_trian'", "no dataset of that name", "did you mean 'my_train'?", "fashion-mnist")
    assert_one_line_error(err, *needles)
    code, _, err = run_cli(capsys, "run", "--train", "mnst:train")
    assert code == 2
    assert_one_line_error(err, "did you mean 'mnist:train'")
    code, _, err = run_cli(capsys, "run", "--train", "sub/my_trian")
    assert code == 2
    assert_one_line_error(err, "image folder sub/my_trian does not exist; check the path")


@pytest.mark.parametrize(
    "argv, command, nearest",
    [
        (["run", "--max-trian", "100"], "osrkit run", "; did you mean --max-train?"),
        (["-q", "train", "--out", "m", "--epoks=3"], "osrkit train", "; did you mean --epochs?"),
        (["perf", "speed", "--repaets", "2"], "osrkit perf speed", "; did you mean --repeats?"),
        (["run", "--zzzzzzzz"], "osrkit run", ""),
    ],
)
def test_an_unknown_option_suggests_the_nearest_and_the_subcommand_help(argv, command, nearest, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert_one_line_error(err, f"{command}: error: unrecognized arguments", f"(see '{command} --help')")
    assert (nearest in err) if nearest else "did you mean" not in err


def test_one_class_gets_the_one_class_message_in_run_too(tmp_path, capsys, monkeypatch):
    import osrkit.recognizer.fitting as fitting

    monkeypatch.setattr(fitting, "train_classifier", lambda *a, **k: pytest.fail("trained before the check"))
    images, _ = synthetic_digits(40)
    one = write_folder(tmp_path / "one", images, np.zeros(40, int), ["frog"])
    other = write_folder(tmp_path / "other", images[:10], np.zeros(10, int), ["frog"])
    message = "holds one class ('frog'); a recognizer learns to tell at least 2 known classes apart"
    for command in (["run", "--known", other, "--unknown", other], ["train"]):
        code, _, err = run_cli(capsys, *command, "--out", tmp_path / "o", "--train", one)
        assert code == 2
        assert_one_line_error(err, message)


@pytest.mark.parametrize(
    "argv",
    [
        ["--data-root", "D", "run"],
        ["run", "--data-root", "D"],
        ["--data-root", "D", "protocol", "seed"],
        ["perf", "speed", "--data-root", "D"],
        ["--no-fast", "predict", "m", "x.png"],
        ["predict", "m", "x.png", "--no-fast"],
    ],
)
def test_global_flags_work_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.data_root == ("D" if "D" in argv else None)
    assert args.no_fast == ("--no-fast" in argv)


def test_the_default_log_is_info_quiet_is_warnings_verbose_is_debug(monkeypatch):
    assert log_level(verbose=False, quiet=False) == logging.INFO
    assert log_level(verbose=False, quiet=True) == logging.WARNING
    assert log_level(verbose=True, quiet=True) == logging.DEBUG
    seen = []
    monkeypatch.setitem(
        COMMANDS, "export", lambda args, progress: seen.append(logging.getLogger("osrkit").level) or 0
    )
    for flags in ([], ["-q"], ["-v"]):
        assert main([*flags, "export", "m", "o.onnx"]) == 0
    assert seen == [logging.INFO, logging.WARNING, logging.DEBUG]


def test_the_log_prints_one_plain_line_and_leaves_logging_as_it_was(capsys):
    root, package = logging.getLogger(), logging.getLogger("osrkit")
    handlers, level = root.handlers[:], package.level
    root.handlers.clear()  # as on the command line, where no one configured logging
    try:
        with cli_logging(logging.INFO):
            logging.getLogger("osrkit.jobs").info("training data %s: %d images", "x", 3)
            logging.getLogger("osrkit.jobs").debug("a detail")
            logging.getLogger("osrkit.jobs").warning("few images")
        assert root.handlers == [] and package.level == level
    finally:
        root.handlers[:] = handlers
    assert capsys.readouterr().err == "osrkit: training data x: 3 images\nosrkit: warning: few images\n"
    record = logging.LogRecord("uvicorn.error", logging.ERROR, "", 0, "boom", None, None)
    assert LineFormatter().format(record) == "uvicorn.error: error: boom"
