"""Model folders written by earlier osrkit versions (formats 1 and 2) load and give the
same scores: fixtures in tests/fixtures/legacy_models, written by the commits named there.

"The same" is within the rounding of float32 kernels: the fixtures were written on an AVX2
CPU, and another CPU's kernels (AVX-512, AMX) round differently in the last bits. The
tolerance per scorer is measured (``measure_rounding.py`` -> ``rounding.json``, and the
spread of two kernel choices on the machine running the test), never guessed; decisions
must match exactly wherever a score is farther from its threshold than that.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from osrkit import OpenSetRecognizer
from osrkit.data.spec import MNIST_SPEC
from osrkit.recognizer.engine import FastPaths

FIXTURES = Path(__file__).parents[1] / "fixtures" / "legacy_models"
# Allowed deviation = SAFETY x the larger of the recorded and the local kernel spread (a
# CPU kind's rounding differs from another's by about as much as one CPU's kernels do).
SAFETY = 10.0


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


measure = _load("measure_rounding")


def tolerances(folder: str, expected: dict[str, list[float]]) -> dict[str, float]:
    """Per scorer: SAFETY x the largest of the deviation recorded in rounding.json, the
    spread between oneDNN and the plain kernels on this machine, and one float32 ulp of
    the scorer's scale."""
    recorded = json.loads((FIXTURES / "rounding.json").read_text())["max_abs_deviation"][folder]
    images = measure.probe_images(folder)
    onednn = measure.score(FIXTURES / folder, images, onednn=True, threads=2, channels_last=False)
    plain = measure.score(FIXTURES / folder, images, onednn=False, threads=1, channels_last=True)
    out = {}
    for name, values in expected.items():
        local = float(np.max(np.abs(onednn[name] - plain[name])))
        ulp = float(np.finfo(np.float32).eps * np.max(np.abs(values)))
        out[name] = SAFETY * max(recorded[name], local, ulp)
    return out


def check_scores_and_decisions(model, images, expected: dict, folder: str) -> dict[str, np.ndarray]:
    """Scores within the measured tolerance of the fixture's; each scorer's decisions equal
    the fixture's for every image whose score is farther than that from the threshold."""
    tol = tolerances(folder, expected["scores"])
    scores = model.score_all(images)
    assert set(expected["scores"]) <= set(scores)
    for name, values in expected["scores"].items():
        np.testing.assert_allclose(scores[name], values, rtol=0, atol=tol[name], err_msg=name)
    decisions = dict(expected.get("predictions_by_scorer", {}))
    decisions.setdefault(expected["decision_scorer"], expected["predictions"])
    for name, labels in decisions.items():
        margin = np.abs(np.asarray(expected["scores"][name]) - model.thresholds_[name])
        clear = margin > tol[name]
        assert clear.mean() > 0.9, f"{name}: too few scores clear of the threshold to check decisions"
        got = model.predict(images, name)
        np.testing.assert_array_equal(got[clear], np.asarray(labels)[clear], err_msg=name)
    assert expected["decision_scorer"] == model.decision_scorer
    clear = np.abs(
        np.asarray(expected["scores"][model.decision_scorer]) - model.thresholds_[model.decision_scorer]
    )
    clear = clear > tol[model.decision_scorer]
    np.testing.assert_array_equal(model.predict(images)[clear], np.asarray(expected["predictions"])[clear])
    return scores


def test_tolerances_are_measured_and_tight():
    """The recorded rounding covers every scorer of every fixture, and the allowed deviation
    stays far below the scores' spread: a wrong network or scorer cannot pass as rounding."""
    recorded = json.loads((FIXTURES / "rounding.json").read_text())["max_abs_deviation"]
    for folder in measure.FOLDERS:
        expected = json.loads((FIXTURES / folder / "expected.json").read_text())["scores"]
        assert set(recorded[folder]) == set(expected)
        for name, tol in tolerances(folder, expected).items():
            spread = np.ptp(expected[name])
            assert 0 < tol < 1e-3 * spread, (folder, name, tol, spread)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_legacy_folder_scores_as_when_written(version, tmp_path):
    expected = json.loads((FIXTURES / version / "expected.json").read_text())
    make_inputs = _load("make_inputs")
    images = make_inputs.inputs()
    assert make_inputs.sha256(images) == expected["inputs_sha256"]  # the probes the scores were taken on
    model = OpenSetRecognizer.from_pretrained(FIXTURES / version, fast_paths=FastPaths.off(), device="cpu")
    assert model.input_spec_ == MNIST_SPEC and model.backbone_name_ == "small_cnn" and model.has_autoencoder
    scores = check_scores_and_decisions(model, images, expected, version)
    # saved again, it becomes a format-3 folder with the same scores (same code, same machine)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["format_version"] == 3
    again = OpenSetRecognizer.from_pretrained(tmp_path / "m", fast_paths=FastPaths.off(), device="cpu")
    again_scores = again.score_all(images)
    for name, values in scores.items():
        np.testing.assert_array_equal(again_scores[name], values)


def test_colour_folder_saved_before_the_stem_option_keeps_its_network(tmp_path):
    """A format-3 colour_cnn folder written before the network's defaults changed (stem,
    flips) records none of them: it loads as the network it was, with the same scores,
    and saved again it records them."""
    folder = FIXTURES / "v3-colour"
    expected = json.loads((folder / "expected.json").read_text())
    make_inputs = _load("make_inputs")
    images = make_inputs.to_colour(make_inputs.inputs())
    assert make_inputs.sha256(images) == expected["inputs_sha256"]
    assert "stem" not in json.loads((folder / "config.json").read_text())["backbone"]["options"]
    model = OpenSetRecognizer.from_pretrained(folder, fast_paths=FastPaths.off(), device="cpu")
    net = model.classifier_
    assert isinstance(net.body[0], torch.nn.PixelUnshuffle) and not net.flip_tta
    scores = check_scores_and_decisions(model, images, expected, "v3-colour")
    model.save_pretrained(tmp_path / "m")
    recorded = json.loads((tmp_path / "m" / "config.json").read_text())["backbone"]["options"]
    assert recorded == {
        "widths": [8, 16],
        "stem": "space_to_depth",
        "flip_tta": False,
        "shift_tta": False,
        "activation": "relu",
        "dirac_init": False,
        "bn_momentum": 0.1,
    }
    again = OpenSetRecognizer.from_pretrained(tmp_path / "m", fast_paths=FastPaths.off(), device="cpu")
    for name, values in again.score_all(images).items():
        np.testing.assert_array_equal(values, scores[name])


def test_loaded_model_recalibrates_with_every_scorer_it_can_have():
    """A loaded format-1 model holds only the seed's three scorers; recalibrating it fits
    every available one, class_reconstruction included (it needs the pixels, which the
    outputs once withheld because the scorers already fitted did not read them)."""
    model = OpenSetRecognizer.from_pretrained(FIXTURES / "v1", fast_paths=FastPaths.off(), device="cpu")
    assert list(model.scorers_) == ["msp", "reconstruction", "combined"]
    images = _load("make_inputs").inputs()
    model.scorers = "all"
    model.calibrate(images[:30], reference=images[30:], reference_labels=np.arange(34) % 3)
    assert "class_reconstruction" in model.scorers_ and "class_reconstruction" in model.score_all(images)
