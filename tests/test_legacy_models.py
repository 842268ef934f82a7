"""Model folders written by earlier osrkit versions (formats 1 and 2) load and give the
same scores: fixtures in tests/fixtures/legacy_models, written by the commits named there."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from osrkit import OpenSetRecognizer
from osrkit.data.spec import MNIST_SPEC
from osrkit.runtime import FastPaths

FIXTURES = Path(__file__).parent / "fixtures" / "legacy_models"


def _make_inputs():
    spec = importlib.util.spec_from_file_location("make_inputs", FIXTURES / "make_inputs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_legacy_folder_scores_as_when_written(version, tmp_path):
    expected = json.loads((FIXTURES / version / "expected.json").read_text())
    make_inputs = _make_inputs()
    images = make_inputs.inputs()
    assert make_inputs.sha256(images) == expected["inputs_sha256"]  # the probes the scores were taken on
    model = OpenSetRecognizer.from_pretrained(FIXTURES / version, fast_paths=FastPaths.off(), device="cpu")
    assert model.input_spec_ == MNIST_SPEC and model.backbone_name_ == "small_cnn" and model.has_autoencoder
    scores = model.score_all(images)
    assert set(scores) == set(expected["scores"])
    for name, values in expected["scores"].items():
        # written with the float32 reference path on an AVX2 CPU: bit-identical there; other
        # CPUs' float32 kernels may round differently in the last bits
        np.testing.assert_allclose(scores[name], values, rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(model.predict(images), expected["predictions"])
    for name, labels in expected["predictions_by_scorer"].items():
        np.testing.assert_array_equal(model.predict(images, name), labels, err_msg=name)
    # saved again, it becomes a format-3 folder with the same scores
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
    make_inputs = _make_inputs()
    images = make_inputs.to_colour(make_inputs.inputs())
    assert make_inputs.sha256(images) == expected["inputs_sha256"]
    assert "stem" not in json.loads((folder / "config.json").read_text())["backbone"]["options"]
    model = OpenSetRecognizer.from_pretrained(folder, fast_paths=FastPaths.off(), device="cpu")
    net = model.classifier_
    assert isinstance(net.body[0], torch.nn.PixelUnshuffle) and not net.flip_tta
    scores = model.score_all(images)
    for name, values in expected["scores"].items():
        np.testing.assert_allclose(scores[name], values, rtol=1e-6, atol=1e-9, err_msg=name)
    np.testing.assert_array_equal(model.predict(images), expected["predictions"])
    model.save_pretrained(tmp_path / "m")
    recorded = json.loads((tmp_path / "m" / "config.json").read_text())["backbone"]["options"]
    assert recorded == {"widths": [8, 16], "stem": "space_to_depth", "flip_tta": False}
    again = OpenSetRecognizer.from_pretrained(tmp_path / "m", fast_paths=FastPaths.off(), device="cpu")
    for name, values in again.score_all(images).items():
        np.testing.assert_array_equal(values, scores[name])


def test_loaded_model_recalibrates_with_every_scorer_it_can_have():
    """A loaded format-1 model holds only the seed's three scorers; recalibrating it fits
    every available one, class_reconstruction included (it needs the pixels, which the
    outputs once withheld because the scorers already fitted did not read them)."""
    model = OpenSetRecognizer.from_pretrained(FIXTURES / "v1", fast_paths=FastPaths.off(), device="cpu")
    assert list(model.scorers_) == ["msp", "reconstruction", "combined"]
    images = _make_inputs().inputs()
    model.scorers = "all"
    model.calibrate(images[:30], reference=images[30:], reference_labels=np.arange(34) % 3)
    assert "class_reconstruction" in model.scorers_ and "class_reconstruction" in model.score_all(images)
