"""Scorers on real recognizers: the class layer ViM and ReAct read, the default decision
per kind of model, recalibration that fails or reloads, folders naming unknown scorers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from osrkit import InputSpec, OpenSetRecognizer, create_scorer
from osrkit.data.imageset import ImageSet
from osrkit.errors import ConfigError, ModelFormatError
from osrkit.scorers.selection import default_decision_scorer, model_signals
from osrkit.training.config import TrainConfig
from tests.conftest import FAST, synthetic_set


def _colour_set(n: int, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    images = rng.integers(0, 60, (n, 3, 16, 16)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, k, 4:12, 4:12] = 220  # class k: a bright square in channel k
    return ImageSet(torch.from_numpy(images), torch.from_numpy(labels), ["r", "g", "b"], "colour squares")


@pytest.mark.parametrize("backbone", ["small_cnn", "colour_cnn"])
def test_the_class_layer_given_to_vim_and_react_reproduces_the_logits(backbone):
    """colour_cnn's head scales its product by 1/9: the layer is probed as it computes, not
    read from its weights (which would make ReAct's logits 9 times too large)."""
    if backbone == "small_cnn":
        data, cfg = synthetic_set(600), FAST
    else:
        data = _colour_set(300)
        cfg = TrainConfig.for_backbone("colour_cnn", epochs=1, batch_size=32, val_size=60)
    model = OpenSetRecognizer(
        data.class_names, backbone=backbone, scorers=["vim", "react"], autoencoder=False
    )
    model.fit(data, cfg)
    out = model.outputs(data.images[:50])
    weight, bias = model.linear_head()
    recomputed = out.features.astype(np.float64) @ weight.numpy().T + bias.numpy()
    np.testing.assert_allclose(recomputed, out.logits, rtol=1e-4, atol=1e-4)
    react = create_scorer("react", percentile=100.0).fit(out, head=(weight, bias))  # clips nothing
    energy = create_scorer("energy").score(out)
    np.testing.assert_allclose(react.score(out), energy, rtol=1e-4, atol=1e-4)


def test_default_decision_follows_what_the_model_can_compute():
    assert default_decision_scorer(model_signals(True, InputSpec(1, 28, 28))) == "fusion"
    # an autoencoder on images too large for class_reconstruction: the seed's rule
    assert default_decision_scorer(model_signals(True, InputSpec(3, 64, 64))) == "combined"
    assert default_decision_scorer(model_signals(False, InputSpec(3, 32, 32))) == "max_logit"
    assert default_decision_scorer(model_signals(False, InputSpec(1, 28, 28))) == "max_logit"


def test_a_failed_recalibration_keeps_the_fitted_model(fitted, tmp_path):
    model = OpenSetRecognizer.from_pretrained(fitted.save_pretrained(tmp_path / "m"))
    before, names = dict(model.thresholds_), list(model.scorers_)
    model.scorers = [create_scorer("knn", k=100_000)]  # more neighbours than images
    with pytest.raises(ConfigError, match="knn with k=100000 needs at least"):
        model.calibrate(synthetic_set(200, seed=4))
    assert list(model.scorers_) == names and model.thresholds_ == before
    np.testing.assert_array_equal(
        model.predict(synthetic_set(50, seed=5)), fitted.predict(synthetic_set(50, seed=5))
    )


def test_a_reloaded_model_recalibrates_with_its_own_hyper_parameters(tmp_path):
    model = OpenSetRecognizer(
        scorers=[create_scorer("knn", k=3, bank_size=50), create_scorer("fusion", members=["msp", "knn"])],
        decision_scorer="fusion",
    )
    model.fit(synthetic_set(600), FAST)
    again = OpenSetRecognizer.from_pretrained(model.save_pretrained(tmp_path / "m"))
    again.calibrate(synthetic_set(300, seed=3))
    knn = again.scorers_["knn"]
    assert (knn.k, knn.bank_size, len(knn.bank_)) == (3, 50, 50)
    assert again.scorers_["fusion"].members == ["msp", "knn"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["scorers"]["knn"]["bank_size"] == 50


@pytest.mark.parametrize("where", ["decision_scorer", "member"])
def test_a_folder_naming_a_scorer_this_version_lacks_is_one_line(fitted, tmp_path, where):
    path = fitted.save_pretrained(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    if where == "decision_scorer":
        cfg["decision_scorer"] = "odin"
    else:
        cfg["scorers"]["fusion"]["members"][0] = "odin"
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="uses scorer 'odin', which this osrkit lacks; upgrade"):
        OpenSetRecognizer.from_pretrained(path)


def test_scorers_take_labels_and_head_by_keyword_only():
    fusion = create_scorer("combined")
    with pytest.raises(TypeError):
        fusion.fit(None, 0.9)  # an accept rate given positionally would be silently ignored
