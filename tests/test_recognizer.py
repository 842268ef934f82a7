import json

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit import UNKNOWN, OpenSetRecognizer
from osrkit.errors import ConfigError, DataError, ModelFormatError
from osrkit.recognizer import as_input_tensor

from .conftest import synthetic_set, synthetic_unknowns


def test_predict_labels_and_rejects_unknowns(fitted):
    known = synthetic_set(300, seed=7)
    pred = fitted.predict(known)
    assert pred.shape == (300,) and pred.dtype.kind == "i"
    assert set(np.unique(pred)) <= set(range(10)) | {UNKNOWN}
    accepted = pred != UNKNOWN
    assert (pred[accepted] == known.labels.numpy()[accepted]).mean() > 0.95
    unknown_pred = fitted.predict(synthetic_unknowns(200))
    assert (unknown_pred == UNKNOWN).mean() > 0.9


def test_scores_larger_for_unknowns(fitted):
    known = fitted.score_all(synthetic_set(300, seed=7))
    unknown = fitted.score_all(synthetic_unknowns(200))
    assert set(known) == {"msp", "reconstruction", "combined"}
    for name in known:
        assert known[name].shape == (300,)
        assert np.median(unknown[name]) > np.median(known[name])
    np.testing.assert_array_equal(
        fitted.score_samples(synthetic_set(50)), fitted.score_all(synthetic_set(50))["combined"]
    )


def test_thresholds_calibrated_on_validation_only(fitted):
    assert set(fitted.thresholds_) == {"msp", "reconstruction", "combined"}
    assert fitted.thresholds_["combined"] == 1.0
    assert fitted.fit_report_.val_size == 200


def test_save_and_load_give_bit_identical_scores(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == [
        "autoencoder.safetensors",
        "classifier.safetensors",
        "config.json",
    ]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["class_names"] == fitted.class_names
    assert cfg["thresholds"] == fitted.thresholds_
    assert cfg["preprocessing"]["size"] == [28, 28] and "torch" in cfg["versions"]
    loaded = OpenSetRecognizer.from_pretrained(path)
    x = torch.cat(
        [
            synthetic_set(200, seed=9).as_float(),
            torch.from_numpy(synthetic_unknowns(100)).float().div(255).unsqueeze(1),
        ]
    )
    a, b = fitted.score_all(x), loaded.score_all(x)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(fitted.predict(x), loaded.predict(x))


def test_save_refuses_existing_folder(fitted, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        fitted.save_pretrained(tmp_path / "model")
    fitted.save_pretrained(tmp_path / "model", overwrite=True)
    assert not (tmp_path / "model" / "keep.txt").exists()


def test_from_pretrained_errors(fitted, tmp_path):
    with pytest.raises(ModelFormatError, match="no config.json"):
        OpenSetRecognizer.from_pretrained(tmp_path / "nowhere")
    path = fitted.save_pretrained(tmp_path / "m")
    (path / "classifier.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="classifier.safetensors"):
        OpenSetRecognizer.from_pretrained(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        OpenSetRecognizer.from_pretrained(path)
    (path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFormatError, match="not an osrkit model"):
        OpenSetRecognizer.from_pretrained(path)


def test_corrupt_weights_are_reported(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "m")
    (path / "autoencoder.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="damaged"):
        OpenSetRecognizer.from_pretrained(path)


def test_unfitted_recognizer_refuses_to_predict():
    with pytest.raises(ConfigError, match="not fitted"):
        OpenSetRecognizer().predict(torch.zeros(1, 1, 28, 28))


def test_input_coercion(tmp_path):
    u8 = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    assert torch.equal(as_input_tensor(u8), torch.ones(2, 1, 28, 28))
    assert as_input_tensor(np.zeros((28, 28), np.float32)).shape == (1, 1, 28, 28)
    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "a.png")
    x = as_input_tensor([tmp_path / "a.png", Image.new("L", (28, 28))])
    assert x.shape == (2, 1, 28, 28)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
        (torch.zeros(1, 3, 28, 28), "shape"),
        (torch.zeros(2, 32, 32), "shape"),
        (torch.full((1, 28, 28), 2.0), r"\[0, 1\]"),
        (torch.zeros(1, 28, 28, dtype=torch.int32), "uint8"),
        ([], "no images"),
        ("a string", "cannot read images"),
    ],
)
def test_bad_inputs_are_reported(bad, message):
    with pytest.raises(DataError, match=message):
        as_input_tensor(bad)


def test_fit_refuses_mismatched_classes():
    with pytest.raises(ConfigError, match="differ"):
        OpenSetRecognizer(class_names=["a", "b"]).fit(synthetic_set(100))


def test_fit_seed_fixes_the_initial_weights():
    from .conftest import FAST

    data = synthetic_set(400)
    torch.manual_seed(123)  # whatever the caller's generator state, the seed decides
    a = OpenSetRecognizer().fit(data, FAST)
    torch.manual_seed(456)
    b = OpenSetRecognizer().fit(data, FAST)
    for key, value in a.classifier_.state_dict().items():
        torch.testing.assert_close(b.classifier_.state_dict()[key], value, rtol=0, atol=0)


def test_fit_resume_refuses_checkpoint_from_other_data(tmp_path):
    from .conftest import FAST

    OpenSetRecognizer().fit(synthetic_set(400, seed=0), FAST, checkpoint_dir=tmp_path)
    with pytest.raises(ConfigError, match="other training options or data"):
        OpenSetRecognizer().fit(synthetic_set(400, seed=1), FAST, checkpoint_dir=tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cfg: [cfg], "not an osrkit model"),
        (lambda cfg: cfg | {"thresholds": cfg["thresholds"] | {"msp": "abc"}}, "damaged"),
        (lambda cfg: cfg | {"thresholds": {}}, "lacks scorer state or thresholds"),
        (
            lambda cfg: cfg | {"scorers": {k: v for k, v in cfg["scorers"].items() if k != "combined"}},
            "lacks",
        ),
        (lambda cfg: cfg | {"classifier": cfg["classifier"] | {"feature_dim": 7}}, "damaged"),
    ],
)
def test_damaged_config_is_reported(fitted, tmp_path, edit, message):
    path = fitted.save_pretrained(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(edit(cfg)))
    with pytest.raises(ModelFormatError, match=message):
        OpenSetRecognizer.from_pretrained(path)


def test_unknown_scorer_name_is_reported(fitted):
    with pytest.raises(ConfigError, match="unknown scorer"):
        fitted.predict(synthetic_set(5), scorer="nope")
    with pytest.raises(ConfigError, match="unknown scorer"):
        fitted.score_samples(synthetic_set(5), scorer="nope")


def test_save_to_a_file_path_is_refused(fitted, tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        fitted.save_pretrained(tmp_path / "f", overwrite=True)
