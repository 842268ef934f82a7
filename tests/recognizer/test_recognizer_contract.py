"""OpenSetRecognizer keeps scikit-learn's estimator contract: the constructor stores its
parameters as given, fitting never changes one (what it decides goes to attributes
ending in ``_``), ``get_params``/``set_params``/``clone`` work, and the network is
configured one way (the seed's ``classifier_config``/``autoencoder_config`` warn)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted
from torch import nn

from osrkit import InputSpec, OpenSetRecognizer, TrainConfig
from osrkit.errors import ConfigError
from osrkit.hardware import resolve_device
from osrkit.jobs.pipeline import ModelOptions
from osrkit.models import AutoencoderConfig, ClassifierConfig
from osrkit.recognizer.engine import FastPaths
from osrkit.scorers import Scorer, create_scorer
from tests.conftest import synthetic_set

TINY = TrainConfig(epochs=1, ae_epochs=1, batch_size=64, val_size=100, lr=3e-3, ae_lr=3e-3)


def fitted_attributes(model: OpenSetRecognizer) -> list[str]:
    """The instance's attributes ending in ``_`` (where ``check_is_fitted`` looks)."""
    return sorted(k for k in vars(model) if k.endswith("_") and not k.startswith("__"))


def comparable(params: dict) -> dict:
    """``get_params()`` with each ``Scorer`` instance as its name and hyper-parameters
    (scorers are torch modules, equal only to themselves)."""

    def plain(value):
        if isinstance(value, Scorer):
            return (value.name, value.get_params())
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in params.items()}


@pytest.fixture(scope="module")
def tiny() -> OpenSetRecognizer:
    """Every parameter at its default, fitted in seconds."""
    return OpenSetRecognizer().fit(synthetic_set(400), TINY)


def test_init_stores_every_parameter_as_given():
    names, spec, options, paths = ("a", "b"), InputSpec(1, 28, 28), {"widths": [8, 8, 16]}, FastPaths.off()
    knn = create_scorer("knn", k=3)
    given = dict(
        class_names=names,
        accept_rate=0.9,
        decision_scorer="knn",
        fast_paths=paths,
        backbone="small_cnn",
        backbone_options=options,
        input_spec=spec,
        autoencoder=False,
        device="cpu",
        scorers=[knn],
        pretrained=False,
    )
    model = OpenSetRecognizer(**given)
    params = model.get_params()
    for name, value in given.items():
        assert params[name] is value, name
    assert params["classifier_config"] is None and params["autoencoder_config"] is None
    assert fitted_attributes(model) == []
    with pytest.raises(NotFittedError):
        check_is_fitted(model)
    assert repr(OpenSetRecognizer(accept_rate=0.9)) == "OpenSetRecognizer(accept_rate=0.9)"


def test_the_constructor_checks_nothing_and_fit_checks_before_any_data(monkeypatch):
    """Bad parameters construct (scikit-learn's rule) and fail in one line at fit (and
    check_params), before any data is read or network trained."""
    import osrkit.recognizer.fitting as fitting

    monkeypatch.setattr(fitting, "train_classifier", lambda *a, **k: pytest.fail("trained first"))
    cases = [
        ({"accept_rate": 2.0}, r"accept rate must be in \(0, 1\], got 2.0"),
        ({"decision_scorer": "nope"}, "unknown scorer 'nope'"),
        ({"backbone": "resnet9000"}, "unknown backbone 'resnet9000'"),
        ({"pretrained": "yes"}, "pretrained must be True, False or None, got 'yes'"),
        ({"device": "tpu"}, "unknown device 'tpu'"),
    ]
    for kwargs, message in cases:
        model = OpenSetRecognizer(**kwargs)
        assert model.get_params()[next(iter(kwargs))] == next(iter(kwargs.values()))
        with pytest.raises(ConfigError, match=message):
            model.check_params()
        with pytest.raises(ConfigError, match=message):
            model.fit(synthetic_set(200), TINY)
        with pytest.raises(ConfigError, match=message):  # what the CLI checks before loading data
            ModelOptions(**{k: v for k, v in kwargs.items() if k != "accept_rate"}).build(
                [str(i) for i in range(10)], accept_rate=kwargs.get("accept_rate", 0.95)
            )


def test_fit_and_calibrate_never_change_a_parameter(tiny):
    before = OpenSetRecognizer().get_params()
    assert tiny.get_params() == before
    assert tiny.class_names is None and tiny.decision_scorer is None and tiny.device == "auto"
    assert tiny.class_names_ == [str(i) for i in range(10)]
    assert tiny.decision_scorer_ == "fusion" and tiny.accept_rate_ == 0.95
    assert tiny.device_ == resolve_device("auto")
    check_is_fitted(tiny)
    assert set(fitted_attributes(tiny)) >= {
        "class_names_",
        "accept_rate_",
        "decision_scorer_",
        "device_",
        "classifier_",
        "input_spec_",
        "scorers_",
        "thresholds_",
        "train_config_",
        "fit_report_",
    }


def test_calibrate_sets_the_fitted_decision_and_rate_only(tiny):
    model = copy.deepcopy(tiny)
    params = model.get_params()
    val = synthetic_set(200, seed=3)
    model.calibrate(val, accept_rate=0.9, decision_scorer="msp")
    assert model.get_params() == params
    assert model.accept_rate_ == 0.9 and model.decision_scorer_ == "msp"
    x = synthetic_set(50, seed=4)
    np.testing.assert_array_equal(model.predict(x), model.predict(x, "msp"))
    # without arguments: the accept_rate parameter; the decision fitted before stays
    model.calibrate(val)
    assert model.accept_rate_ == 0.95 and model.decision_scorer_ == "msp"
    # a parameter set with set_params is what the next calibration uses
    model.set_params(decision_scorer="max_logit", accept_rate=0.8)
    assert model.get_params() == params | {"decision_scorer": "max_logit", "accept_rate": 0.8}
    model.calibrate(val)
    assert model.decision_scorer_ == "max_logit" and model.accept_rate_ == 0.8
    with pytest.raises(ConfigError, match="unknown scorer 'nope'"):
        model.calibrate(val, decision_scorer="nope")


def test_clone_gives_an_unfitted_estimator_with_equal_parameters(tiny):
    model = OpenSetRecognizer(
        ["a", "b", "c"], 0.9, scorers=[create_scorer("knn", k=3)], backbone_options={"widths": [8, 8, 16]}
    )
    twin = clone(model)
    assert twin is not model and type(twin) is OpenSetRecognizer
    assert comparable(twin.get_params()) == comparable(model.get_params())
    assert twin.class_names is not model.class_names  # deep copies, as clone makes
    assert fitted_attributes(twin) == []
    refit = clone(tiny)
    assert refit.get_params() == tiny.get_params() and fitted_attributes(refit) == []
    assert refit.classifier_ is None and refit.scorers_ is None
    with pytest.raises(ConfigError, match=r"call fit\(\) or from_pretrained\(\) first"):
        refit.predict(synthetic_set(5))


def test_set_params_is_what_get_params_returns(tiny):
    model = OpenSetRecognizer()
    assert model.set_params(accept_rate=0.9, backbone="small_cnn") is model
    params = model.get_params()
    assert params["accept_rate"] == 0.9 and params["backbone"] == "small_cnn"
    with pytest.raises(ValueError, match="Invalid parameter 'nope'"):
        model.set_params(nope=1)
    # on a fitted model too: the fitted values stay until the next fit or calibrate
    fitted_copy = copy.deepcopy(tiny)
    fitted_copy.set_params(accept_rate=0.9)
    assert fitted_copy.get_params()["accept_rate"] == 0.9 and fitted_copy.accept_rate_ == 0.95


def test_the_fast_paths_parameter_sets_how_a_fitted_model_runs(tiny):
    model = copy.deepcopy(tiny)
    assert model.fast_paths is None  # None: FastPaths.default(), resolved when the engine is built
    model.set_params(fast_paths=FastPaths.off())
    assert model.engine().fast == FastPaths.off()
    x = synthetic_set(20, seed=5).as_float()
    with torch.inference_mode():
        reference = model.classifier_(x).numpy()
    np.testing.assert_array_equal(model.outputs(x).logits, reference)


def test_legacy_network_configs_warn_and_equal_the_keyword_form():
    clf, ae = (
        ClassifierConfig(channels=(4, 8, 8), feature_dim=16),
        AutoencoderConfig(channels=(4, 8), latent_dim=4),
    )
    with pytest.warns(DeprecationWarning) as record:
        legacy = OpenSetRecognizer(None, 0.95, None, clf, ae, FastPaths.off(), device="cpu")
    messages = [str(w.message) for w in record]
    assert len(messages) == 2
    assert "use backbone='small_cnn', backbone_options=classifier_config.options()" in messages[0]
    assert "use autoencoder=AutoencoderConfig(...)" in messages[1]
    assert all(w.filename == __file__ for w in record)  # points at the caller's line
    assert legacy.get_params()["classifier_config"] is clf  # stored, folded in by fit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        keyword = OpenSetRecognizer(
            fast_paths=FastPaths.off(),
            backbone="small_cnn",
            backbone_options=clf.options(),
            autoencoder=ae,
            device="cpu",
        )
    assert legacy.check_params() == keyword.check_params()
    data = synthetic_set(300)
    legacy.fit(data, TINY)
    keyword.fit(data, TINY)
    for a, b in [(legacy.classifier_, keyword.classifier_), (legacy.autoencoder_, keyword.autoencoder_)]:
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    assert legacy.config_dict()["backbone"] == keyword.config_dict()["backbone"]
    x = synthetic_set(40, seed=6)
    np.testing.assert_array_equal(legacy.predict(x), keyword.predict(x))
    with pytest.warns(DeprecationWarning):
        wrong = OpenSetRecognizer(["a", "b"], classifier_config=ClassifierConfig(num_classes=3))
    with pytest.raises(ConfigError, match="classifier num_classes differs from the number of class names"):
        wrong.fit(synthetic_set(100))


def test_a_loaded_model_obeys_the_contract(tiny, tmp_path):
    folder = tiny.save_pretrained(tmp_path / "m")
    loaded = OpenSetRecognizer.from_pretrained(folder, device="cpu")
    params = loaded.get_params()  # the saved ones: the fitted values become the parameters
    assert params["decision_scorer"] == loaded.decision_scorer_ == "fusion"
    assert params["class_names"] == loaded.class_names_ == tiny.class_names_
    assert params["device"] == "cpu" and loaded.device_ == torch.device("cpu")
    assert [s.name for s in params["scorers"]] == list(loaded.scorers_)  # refits the same scorers
    twin = clone(loaded)
    assert comparable(twin.get_params()) == comparable(params) and fitted_attributes(twin) == []
    loaded.calibrate(synthetic_set(200, seed=3), accept_rate=0.9)
    assert comparable(loaded.get_params()) == comparable(params) and loaded.accept_rate_ == 0.9


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 8), nn.ReLU())
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.embed(x))


def test_a_wrapped_classifier_obeys_the_contract():
    torch.manual_seed(0)
    names = tuple(str(i) for i in range(10))
    model = OpenSetRecognizer.from_classifier(TinyNet(), InputSpec(1, 28, 28), names, "embed", device="cpu")
    params = model.get_params()
    assert params["class_names"] is names and params["backbone_options"] == {"features": "embed"}
    assert params["autoencoder"] is False and params["decision_scorer"] is None
    assert model.class_names_ == list(names) and model.device_ == torch.device("cpu")
    assert fitted_attributes(clone(model)) == []
    model.fit(synthetic_set(300), TrainConfig(val_size=100))
    assert model.get_params() == params and model.decision_scorer_ == "max_logit"
