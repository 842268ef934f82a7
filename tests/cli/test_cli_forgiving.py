"""A CLI that forgives: global flags anywhere on the line, folders and single paths for
predict (CLI and API), missing paths named as such."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from osrkit.cli.parser import build_parser
from osrkit.errors import DataError
from osrkit.recognizer.engine import FastPaths
from tests.cli.test_cli import assert_one_line_error, run_cli
from tests.conftest import synthetic_digits


@pytest.mark.parametrize(
    "argv",
    [
        ["-q", "evaluate", "m", "--out", "o"],
        ["evaluate", "m", "--out", "o", "-q"],
        ["run", "-v", "--out", "o"],
        ["perf", "speed", "-q"],
        ["protocol", "seed", "-v", "-q"],
        ["bench", "speed", "-q"],  # the old names, kept for one release
        ["benchmark", "seed", "-v", "-q"],
        ["serve", "m", "-q"],
    ],
)
def test_verbose_and_quiet_work_before_and_after_the_subcommand(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet == ("-q" in argv) and args.verbose == ("-v" in argv)


@pytest.mark.parametrize(
    "old, new, rest, error",
    [
        ("bench", "perf", ["speed", "--skip-run"], "--skip-run needs --model"),
        ("benchmark", "protocol", ["seed", "--decision-scorer", "nope"], "nope"),
    ],
)
def test_old_command_names_still_work_with_a_note(tmp_path, capsys, old, new, rest, error):
    """`bench` (speed) and `benchmark` (accuracy) were easy to confuse: they are now
    `perf` and `protocol`; the old names run the same command for one release."""
    for name in (new, old):
        code, out, err = run_cli(capsys, name, *rest, "--out", tmp_path)
        assert code == 2 and error in err
        note = f"osrkit: note: `osrkit {old}` is now `osrkit {new}`"
        assert (note in err) == (name == old)


def test_perf_and_protocol_help_cannot_be_confused(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    assert "how fast osrkit runs" in out and "how well osrkit recognises" in out


def test_flags_given_only_before_the_subcommand_are_kept():
    args = build_parser().parse_args(["-v", "predict", "m", "x.png"])
    assert args.verbose is True and args.quiet is False


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    digits, _ = synthetic_digits(5, seed=21)
    (root / "a").mkdir()
    (root / "a" / "b").mkdir()
    for i, d in enumerate(digits):
        Image.fromarray(d).save(root / ("a" if i < 3 else "a/b") / f"{i}.png")
    Image.fromarray(digits[0]).save(root / "single.png")
    return root


def test_predict_takes_folders_and_single_paths_in_the_api(fitted, image_folder):
    # the networks see one image at a time, so calls of 5, 1 and 3 images score each image
    # alike (another batch size may sum in another order; trained in bfloat16, a digit
    # here scored 0.012 from the threshold)
    model = copy.copy(fitted)
    model.fast_paths = dataclasses.replace(fitted.fast_paths or FastPaths.default(), sub_batch=1)
    folder = model.predict(image_folder / "a")
    assert folder.shape == (5,)  # every image below the folder, in a stable order
    one = model.predict(str(image_folder / "single.png"))
    assert one.shape == (1,) and one[0] == folder[0]
    mixed = model.predict([image_folder / "single.png", image_folder / "a" / "b"])
    assert mixed.tolist() == [folder[0], *folder[3:]]


def test_predict_takes_folders_on_the_command_line(fitted, image_folder, tmp_path, capsys):
    model = fitted.save_pretrained(tmp_path / "m")
    code, out, err = run_cli(capsys, "predict", model, image_folder / "a", image_folder / "single.png", "-q")
    assert code == 0, err
    paths = [json.loads(line)["path"] for line in out.strip().splitlines()]
    assert len(paths) == 6 and paths[-1].endswith("single.png")
    assert paths[0].endswith("a/0.png") and paths[3].endswith("a/b/3.png")


@pytest.mark.parametrize(
    "name, message",
    [("missing/", "folder {p} does not exist"), ("missing.png", "image {p} does not exist")],
)
def test_a_missing_path_is_named_as_such(fitted, tmp_path, capsys, name, message):
    path = f"{tmp_path}/{name}"
    with pytest.raises(DataError, match=message.format(p=str(tmp_path / name.rstrip("/")))):
        fitted.predict(path)
    code, _, err = run_cli(capsys, "predict", fitted.save_pretrained(tmp_path / "m"), path)
    assert code == 2
    assert_one_line_error(err, "does not exist")


def test_an_empty_folder_is_one_line(fitted, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        fitted.predict(tmp_path / "empty")


def test_a_symlink_loop_still_names_the_loop(fitted, tmp_path):
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    with pytest.raises(DataError, match="symbolic-link loop"):
        fitted.predict([loop])
    assert np.asarray(fitted.predict(np.zeros((1, 28, 28), np.uint8))).shape == (1,)
