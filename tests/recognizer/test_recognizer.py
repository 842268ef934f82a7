import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit import UNKNOWN, OpenSetRecognizer
from osrkit.data.inputs import as_input_tensor
from osrkit.data.spec import InputSpec
from osrkit.errors import ConfigError, DataError, ModelFormatError, OutputExistsError
from osrkit.models import create_backbone
from osrkit.recognizer.persistence import FORMAT_VERSION
from osrkit.scorers import SCORERS, FusionScorer, is_fusion
from osrkit.scorers.selection import report_order
from osrkit.training.loop import stratified_split
from tests.conftest import FAST, synthetic_set, synthetic_unknowns


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
    assert list(known) == report_order()
    for name in known:
        assert known[name].shape == (300,)
        assert np.median(unknown[name]) > np.median(known[name])
    np.testing.assert_array_equal(
        fitted.score_samples(synthetic_set(50)), fitted.score_all(synthetic_set(50))["combined"]
    )


def test_thresholds_calibrated_on_validation_only(fitted):
    assert list(fitted.thresholds_) == report_order()
    for name in SCORERS:
        if is_fusion(name):
            assert fitted.thresholds_[name] == 1.0
    assert fitted.fit_report_.val_size == 200
    assert fitted.decision_scorer == "combined"


def split_of_fixture():
    """The training and validation images of the ``fitted`` fixture (same seeded split)."""
    data = synthetic_set(1200)
    tr, va = stratified_split(data.labels, FAST.val_size, FAST.seed)
    return data.subset(tr), data.subset(va)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_parametric_scorers_are_fitted_on_the_training_split(fitted):
    train, val = split_of_fixture()
    for name in ("mahalanobis", "knn", "class_reconstruction"):
        assert fitted.scorers_[name].reference_size_ == len(train) == 1000
    bank = fitted.scorers_["knn"].bank_.numpy().astype(np.float64)
    tr_feats = unit(fitted.outputs(train).features.astype(np.float64))
    va_feats = unit(fitted.outputs(val).features.astype(np.float64))
    # every bank row is a training image's feature (all 1,000 fit in the bank), none a validation one
    np.testing.assert_allclose(bank, tr_feats, atol=1e-6)
    nearest = np.sqrt(((va_feats[:, None, :] - bank[None]) ** 2).sum(-1)).min(1)
    assert nearest.min() > 1e-4
    # the class means are those of the training split's true classes
    pixels = train.as_float().flatten(1).numpy().astype(np.float64)
    labels = train.labels.numpy()
    means = np.stack([pixels[labels == c].mean(0) for c in range(10)])
    np.testing.assert_allclose(fitted.scorers_["class_reconstruction"].means_, means, atol=1e-12)
    # validation images (never in the bank) are scored at a positive distance, accepted at the rate
    assert np.mean(fitted.score_samples(val, "knn") <= fitted.thresholds_["knn"]) >= fitted.accept_rate_


def test_fusions_share_the_fitted_members(fitted):
    for name, scorer in fitted.scorers_.items():
        if isinstance(scorer, FusionScorer):
            for member_name, member in zip(scorer.members, scorer.member_scorers):
                assert member is fitted.scorers_[member_name], (name, member_name)


def test_calibrate_with_and_without_reference(fitted):
    train, val = split_of_fixture()
    model = copy.deepcopy(fitted)
    model.calibrate(val, reference=train)  # what fit() does
    x = synthetic_set(100, seed=21)
    for name, s in model.score_all(x).items():
        np.testing.assert_array_equal(s, fitted.score_all(x)[name], err_msg=name)
    # no reference: known is split in halves, the first fits, the second calibrates
    model.calibrate(val, accept_rate=0.9)
    assert model.scorers_["knn"].reference_size_ == 100 and model.accept_rate_ == 0.9
    assert model.accept_rate == fitted.accept_rate == 0.95  # the parameter is kept
    first = np.sort(np.random.default_rng(0).permutation(200)[:100])
    np.testing.assert_allclose(
        model.scorers_["knn"].bank_.numpy(), unit(model.outputs(val.subset(first)).features), atol=1e-6
    )
    # plain tensors: the classifier's predictions label the reference images
    model.calibrate(val.as_float())
    predicted = model.outputs(val.subset(first)).predictions
    assert model.scorers_["mahalanobis"].classes_ == sorted(set(predicted.tolist()))
    assert set(model.scorers_) == set(SCORERS)


def test_save_and_load_give_bit_identical_scores(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "model")
    assert sorted(p.name for p in path.iterdir()) == [
        "autoencoder.safetensors",
        "classifier.safetensors",
        "config.json",
        "scorers.safetensors",
    ]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["format_version"] == FORMAT_VERSION == 3
    assert cfg["class_names"] == fitted.class_names_
    assert list(cfg["scorers"]) == report_order()
    assert cfg["scorers"]["knn"]["k"] == 5
    assert cfg["thresholds"] == fitted.thresholds_
    assert "torch" in cfg["versions"]
    spec = cfg["input_spec"]
    assert (spec["channels"], spec["height"], spec["width"]) == (1, 28, 28)
    assert spec["mean"] is None and spec["invert"] is False
    assert cfg["backbone"]["name"] == "small_cnn" and cfg["backbone"]["pretrained"] is False
    # the backbone's name and options rebuild the same architecture
    rebuilt = create_backbone("small_cnn", InputSpec(1, 28, 28), 10, **cfg["backbone"]["options"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in fitted.classifier_.state_dict().items()
    }
    assert cfg["autoencoder"]["latent_dim"] == fitted.autoencoder_.config.latent_dim
    assert "classifier" not in cfg and "preprocessing" not in cfg  # the format-2 keys
    loaded = OpenSetRecognizer.from_pretrained(path)
    x = torch.cat(
        [
            synthetic_set(200, seed=9).as_float(),
            torch.from_numpy(synthetic_unknowns(100)).float().div(255).unsqueeze(1),
        ]
    )
    a, b = fitted.score_all(x), loaded.score_all(x)
    assert list(a) == list(b) == report_order()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        np.testing.assert_array_equal(fitted.predict(x, name), loaded.predict(x, name), err_msg=name)
    np.testing.assert_array_equal(fitted.predict(x), loaded.predict(x))


LEGACY_PREPROCESSING = {
    "size": [28, 28],
    "channels": 1,
    "grayscale": "ITU-R 601-2 luma (Pillow convert('L'))",
    "resize": "bilinear, antialiased (Pillow resize)",
    "scale": "uint8 / 255 -> [0, 1]",
    "invert": False,
}


def write_version_1(fitted, path):
    """A model folder as the seed (format version 1) wrote it: ``classifier`` and
    ``preprocessing`` entries instead of ``backbone`` and ``input_spec``, only the three
    seed scorers and no scorers.safetensors (the weights files are the same)."""
    fitted.save_pretrained(path)
    cfg = json.loads((path / "config.json").read_text())
    seed_scorers = ("msp", "reconstruction", "combined")
    del cfg["backbone"]
    cfg["classifier"] = fitted.classifier_.config.to_dict()  # num_classes, channels, feature_dim, dropout
    cfg["preprocessing"] = LEGACY_PREPROCESSING
    del cfg["input_spec"]
    cfg["format_version"] = 1
    cfg["scorers"] = {k: cfg["scorers"][k] for k in seed_scorers}
    cfg["thresholds"] = {k: cfg["thresholds"][k] for k in seed_scorers}
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "scorers.safetensors").unlink()
    return path


def test_version_1_folder_still_loads(fitted, tmp_path):
    path = write_version_1(fitted, tmp_path / "v1")
    loaded = OpenSetRecognizer.from_pretrained(path)
    assert list(loaded.scorers_) == ["msp", "reconstruction", "combined"]
    x = torch.cat([synthetic_set(100, seed=9).as_float(), as_input_tensor(synthetic_unknowns(50))])
    a, b = fitted.score_all(x), loaded.score_all(x)
    for name in loaded.scorers_:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(fitted.predict(x), loaded.predict(x))
    with pytest.raises(ConfigError, match="scorer 'knn' was not fitted for this model"):
        loaded.predict(x, "knn")
    # saved again, it is a folder of the current format
    again = OpenSetRecognizer.from_pretrained(loaded.save_pretrained(tmp_path / "v3"))
    assert json.loads((tmp_path / "v3" / "config.json").read_text())["format_version"] == FORMAT_VERSION
    assert list(again.scorers_) == list(loaded.scorers_)
    assert not (tmp_path / "v3" / "scorers.safetensors").exists()
    for name, s in again.score_all(x).items():
        np.testing.assert_array_equal(s, a[name], err_msg=name)


def test_from_pretrained_needs_what_the_config_lists(fitted, tmp_path):
    path = fitted.save_pretrained(tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    knn_and_fusions = ("knn", "fusion", "max_logit_knn")
    drop = {k: v for k, v in cfg["scorers"].items() if k not in knn_and_fusions}
    thresholds = {k: v for k, v in cfg["thresholds"].items() if k not in knn_and_fusions}
    (path / "config.json").write_text(json.dumps(cfg | {"scorers": drop, "thresholds": thresholds}))
    assert "knn" not in OpenSetRecognizer.from_pretrained(path).scorers_  # not listed: not needed
    (path / "config.json").write_text(json.dumps(cfg | {"scorers": drop}))
    with pytest.raises(ModelFormatError, match="lacks scorer state or thresholds for .*knn"):
        OpenSetRecognizer.from_pretrained(path)  # a threshold without its scorer
    no_knn = {k: v for k, v in cfg["scorers"].items() if k not in ("knn", "max_logit_knn")}
    (path / "config.json").write_text(json.dumps(cfg | {"scorers": no_knn}))
    with pytest.raises(ModelFormatError, match="fusion 'fusion' needs the fitted scorer 'knn'"):
        OpenSetRecognizer.from_pretrained(path)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "scorers.safetensors").unlink()
    with pytest.raises(ModelFormatError, match="lacks scorers.safetensors"):
        OpenSetRecognizer.from_pretrained(path)
    (path / "scorers.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFormatError, match="damaged"):
        OpenSetRecognizer.from_pretrained(path)


def test_save_refuses_existing_folder(fitted, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="already exists"):
        fitted.save_pretrained(tmp_path / "model")
    # overwrite=True replaces only an osrkit model folder (issue 22: this deleted keep.txt)
    with pytest.raises(OutputExistsError, match="not an osrkit model folder.*keep.txt"):
        fitted.save_pretrained(tmp_path / "model", overwrite=True)
    assert (tmp_path / "model" / "keep.txt").read_text() == "x"
    (tmp_path / "model" / "keep.txt").unlink()
    fitted.save_pretrained(tmp_path / "model")
    (tmp_path / "model" / "extra.txt").write_text("x")
    fitted.save_pretrained(tmp_path / "model", overwrite=True)  # an osrkit model folder: replaced
    assert not (tmp_path / "model" / "extra.txt").exists()


def test_from_pretrained_errors(fitted, tmp_path):
    with pytest.raises(ModelFormatError, match="model folder .*nowhere does not exist"):
        OpenSetRecognizer.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="no config.json"):
        OpenSetRecognizer.from_pretrained(tmp_path / "empty")
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
    model = OpenSetRecognizer()
    assert model.classifier_ is None and model.autoencoder_ is None  # no networks before fit
    with pytest.raises(ConfigError, match=r"call fit\(\) or from_pretrained\(\) first"):
        model.predict(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ConfigError, match=r"call fit\(\) or from_pretrained\(\) first"):
        model.score_samples(torch.zeros(1, 1, 28, 28))


def test_input_coercion(tmp_path):
    u8 = torch.full((2, 28, 28), 255, dtype=torch.uint8)
    assert torch.equal(as_input_tensor(u8), torch.ones(2, 1, 28, 28))
    assert as_input_tensor(np.zeros((28, 28), np.float32)).shape == (1, 1, 28, 28)
    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "a.png")
    x = as_input_tensor([tmp_path / "a.png", Image.new("L", (28, 28))])
    assert x.shape == (2, 1, 28, 28)
    red_luma = round(0.299 * 255) / 255
    assert abs(float(x[0, 0, 14, 14]) - red_luma) <= 1 / 255
    for one_path in (str(tmp_path / "a.png"), tmp_path / "a.png"):  # a single path is one image
        torch.testing.assert_close(as_input_tensor(one_path), x[:1], rtol=0, atol=0)


def test_input_coercion_colour_array_for_a_grayscale_model(caplog):
    rgb = torch.zeros(2, 3, 28, 28, dtype=torch.uint8)
    rgb[:, 0] = 255  # pure red
    with caplog.at_level("WARNING"):
        x = as_input_tensor(rgb)
    assert x.shape == (2, 1, 28, 28)
    assert torch.all((x * 255).round() == round(0.299 * 255))  # ITU-R 601-2 luma
    assert "converting 3-channel images" in caplog.text


def test_input_coercion_for_a_colour_spec(tmp_path):
    spec = InputSpec(3, 32, 32)
    Image.new("RGB", (50, 40), (255, 0, 0)).save(tmp_path / "a.png")
    x = as_input_tensor([tmp_path / "a.png", Image.new("L", (10, 10), 51)], spec)
    assert x.shape == (2, 3, 32, 32)
    assert x[0, :, 16, 16].tolist() == [1.0, 0.0, 0.0]
    torch.testing.assert_close(x[1], torch.full((3, 32, 32), 0.2))
    gray = torch.full((2, 1, 32, 32), 255, dtype=torch.uint8)
    assert torch.equal(as_input_tensor(gray, spec), torch.ones(2, 3, 32, 32))
    with pytest.raises(DataError, match=r"\(N, 3, 32, 32\) for this model"):
        as_input_tensor(torch.zeros(2, 3, 28, 28), spec)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.full((1, 1, 28, 28), float("nan")), "NaN"),
        (torch.zeros(1, 2, 28, 28), "shape"),
        (torch.zeros(1, 1, 32, 32), r"\(N, 1, 28, 28\) for this model"),
        (torch.zeros(2, 32, 32), "shape"),
        (torch.full((1, 28, 28), 2.0), r"\[0, 1\]"),
        (torch.zeros(1, 28, 28, dtype=torch.int32), "uint8"),
        ([], "no images"),
        ("no/such/image.png", "does not exist"),  # a single path is read as one image
        ({"a": 1}, "cannot read images"),
        (np.array([object()]), "cannot read images"),
    ],
)
def test_bad_inputs_are_reported(bad, message):
    with pytest.raises(DataError, match=message):
        as_input_tensor(bad)


def test_fit_refuses_mismatched_classes():
    with pytest.raises(ConfigError, match="differ"):
        OpenSetRecognizer(class_names=["a", "b"]).fit(synthetic_set(100))


def test_fit_seed_fixes_the_initial_weights():
    data = synthetic_set(400)
    torch.manual_seed(123)  # whatever the caller's generator state, the seed decides
    a = OpenSetRecognizer().fit(data, FAST)
    torch.manual_seed(456)
    b = OpenSetRecognizer().fit(data, FAST)
    for key, value in a.classifier_.state_dict().items():
        torch.testing.assert_close(b.classifier_.state_dict()[key], value, rtol=0, atol=0)


def test_fit_resume_refuses_checkpoint_from_other_data(tmp_path):
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
        (
            lambda cfg: (
                cfg
                | {"backbone": cfg["backbone"] | {"options": cfg["backbone"]["options"] | {"feature_dim": 7}}}
            ),
            "damaged",
        ),
        (lambda cfg: cfg | {"backbone": cfg["backbone"] | {"name": "no_such_net"}}, "no_such_net"),
        (lambda cfg: cfg | {"input_spec": cfg["input_spec"] | {"channels": 2}}, "damaged"),
        (
            lambda cfg: cfg | {"scorers": cfg["scorers"] | {"odin": {}}},
            "uses scorer 'odin', which this osrkit lacks; upgrade osrkit",
        ),
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


def test_scorer_arrays_that_do_not_fit_the_networks_are_refused(fitted, tmp_path):
    """A scorers.safetensors from another model loaded fine and crashed in predict()."""
    import safetensors.numpy

    folder = fitted.save_pretrained(tmp_path / "m")
    arrays = safetensors.numpy.load_file(str(folder / "scorers.safetensors"))
    key = next(k for k in arrays if k.startswith("knn."))
    arrays[key] = np.zeros((arrays[key].shape[0], 7), arrays[key].dtype)  # wrong feature width
    safetensors.numpy.save_file(arrays, str(folder / "scorers.safetensors"))
    with pytest.raises(ModelFormatError, match="does not match the SHA-256"):
        OpenSetRecognizer.from_pretrained(folder)
    # the file's hash recorded as well (a folder assembled from two models): the shapes
    # are still checked against the networks
    from osrkit.files.integrity import CHECKSUMS_KEY, sha256_hex

    config = json.loads((folder / "config.json").read_text())
    config[CHECKSUMS_KEY]["scorers.safetensors"] = sha256_hex((folder / "scorers.safetensors").read_bytes())
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFormatError, match="damaged or incompatible"):
        OpenSetRecognizer.from_pretrained(folder)


def test_loading_with_other_fast_paths_warns(fitted, tmp_path, caplog):
    from osrkit.recognizer.engine import FastPaths

    folder = fitted.save_pretrained(tmp_path / "m")
    assert json.loads((folder / "config.json").read_text())["runtime"]["calibrated_with"]
    used = fitted.fast_paths or FastPaths.default()
    other = FastPaths.off() if used != FastPaths.off() else FastPaths(bf16=False)
    with caplog.at_level("WARNING", logger="osrkit.recognizer.estimator"):
        OpenSetRecognizer.from_pretrained(folder, fast_paths=other)
    assert "calibrated with fast paths" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="osrkit.recognizer.estimator"):
        OpenSetRecognizer.from_pretrained(folder, fast_paths=fitted.fast_paths)
    assert "calibrated with fast paths" not in caplog.text


def test_default_scorer_set_and_decision_per_kind_of_model():
    """Digits (an autoencoder): the fusion of the seven base scorers decides, and only it,
    its members and the default set are fitted; the decision is declared, not tuned."""
    model = OpenSetRecognizer().fit(synthetic_set(600), FAST)
    assert model.decision_scorer_ == "fusion" and model.decision_scorer is None
    assert list(model.scorers_) == [
        "msp",
        "max_logit",
        "energy",
        "mahalanobis",
        "knn",
        "reconstruction",
        "class_reconstruction",
        "fusion",
    ]


def test_only_the_chosen_scorers_are_fitted_and_only_their_signals_computed(monkeypatch):
    model = OpenSetRecognizer(scorers=["knn", "vim"], decision_scorer="max_logit")
    model.fit(synthetic_set(600), FAST)
    assert list(model.scorers_) == ["max_logit", "knn", "vim"] and model.has_autoencoder
    calls = []
    monkeypatch.setattr(
        type(model.autoencoder_), "forward", lambda self, x: calls.append(1) or x, raising=True
    )
    out = model.outputs(synthetic_set(20, seed=3))
    assert out.recon_error is None and out.images is None and not calls  # no autoencoder pass
    assert set(model.score_all(synthetic_set(20, seed=3))) == {"max_logit", "knn", "vim"}
    model.scorers = ["combined"]  # recalibrating fits the new choice, members included
    train, val = split_of_fixture()
    model.calibrate(val, reference=train)
    assert list(model.scorers_) == ["msp", "max_logit", "reconstruction", "combined"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scorers": ["msp", "nope"]}, "unknown scorer 'nope'; registered scorers: class_reconstruction, "),
        ({"decision_scorer": "nope"}, "unknown scorer 'nope'; registered scorers"),
        ({"scorers": "msp,knn,msp"}, "asked for twice"),
        ({"scorers": [3]}, "registered names or Scorer instances"),
    ],
)
def test_bad_scorer_choices_are_one_line_before_training(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        OpenSetRecognizer(**kwargs).fit(synthetic_set(400), FAST)


def test_a_scorer_the_model_cannot_compute_is_one_line_before_training(monkeypatch):
    import osrkit.recognizer.fitting as fitting

    monkeypatch.setattr(fitting, "train_classifier", lambda *a, **k: pytest.fail("trained first"))
    model = OpenSetRecognizer(autoencoder=False, scorers=["reconstruction"])
    with pytest.raises(ConfigError, match="scorer 'reconstruction' needs the autoencoder's reconstruction"):
        model.fit(synthetic_set(400), FAST)


def test_scorer_instances_carry_their_hyper_parameters():
    from osrkit.scorers import create_scorer

    model = OpenSetRecognizer(scorers=[create_scorer("knn", k=3, bank_size=100)], decision_scorer="knn")
    model.fit(synthetic_set(600), FAST)
    assert model.scorers_["knn"].k == 3 and len(model.scorers_["knn"].bank_) == 100
