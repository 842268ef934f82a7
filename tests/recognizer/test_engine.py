import pytest
import torch

from osrkit import hardware
from osrkit.hardware import fast_by_default
from osrkit.models import Classifier, ConvAutoencoder
from osrkit.recognizer.engine import FastPaths, InferenceEngine, fold_batchnorm
from osrkit.recognizer.estimator import OpenSetRecognizer
from tests.conftest import FAST, synthetic_set


def _trained_like_nets(seed: int = 0) -> tuple[Classifier, ConvAutoencoder]:
    """Networks with non-trivial batch-norm statistics (as after training)."""
    torch.manual_seed(seed)
    clf, ae = Classifier(), ConvAutoencoder()
    for m in clf.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return clf.eval(), ae.eval()


def test_fold_batchnorm_keeps_outputs_and_removes_bn():
    clf, _ = _trained_like_nets()
    folded = fold_batchnorm(clf.body)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in clf.body)  # original untouched
    x = torch.rand(8, 1, 28, 28)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), clf.body(x), rtol=1e-4, atol=1e-5)


def test_reference_engine_equals_the_plain_networks():
    clf, ae = _trained_like_nets()
    x = torch.rand(16, 1, 28, 28)
    logits, feats, err = InferenceEngine(clf, ae, FastPaths.off())(x)
    with torch.inference_mode():
        ref_logits, ref_feats = clf.forward_with_features(x)
        ref_err = ae.reconstruction_error(x)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=0)
    torch.testing.assert_close(feats, ref_feats, rtol=0, atol=0)
    torch.testing.assert_close(err, ref_err, rtol=0, atol=0)


def test_float32_fast_paths_match_reference():
    clf, ae = _trained_like_nets()
    x = torch.rand(16, 1, 28, 28)
    ref = InferenceEngine(clf, ae, FastPaths.off())(x)
    fast = InferenceEngine(clf, ae, FastPaths(bf16=False))(x)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bf16_path_returns_float32_close_to_reference():
    clf, ae = _trained_like_nets()
    x = torch.rand(16, 1, 28, 28)
    ref = InferenceEngine(clf, ae, FastPaths.off())(x)
    fast = InferenceEngine(clf, ae, FastPaths(bf16=True))(x)
    for a, b in zip(fast, ref):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert ((a - b).abs() <= 0.05 * b.abs().max() + 1e-3).all()


@pytest.mark.parametrize("native", [False, True])
def test_environment_turns_fast_paths_off(monkeypatch, native):
    monkeypatch.setattr(hardware, "native_bf16", lambda: native)  # either kind of CPU, on this one
    monkeypatch.setenv("OSRKIT_FAST", "0")
    assert not fast_by_default()
    assert FastPaths.default() == FastPaths.off()
    assert FastPaths.default().describe() == "off"
    monkeypatch.setenv("OSRKIT_FAST", "1")
    assert FastPaths.default() == FastPaths()
    assert FastPaths(bf16=None).resolved().bf16 is native and FastPaths().use_bf16 is native
    assert ("bf16" in FastPaths().describe()) is native
    assert FastPaths(bf16=True).use_bf16 and not FastPaths(bf16=False).use_bf16


@pytest.mark.parametrize("native", [False, True])
def test_train_config_fast_paths_follow_environment(monkeypatch, native):
    from osrkit.training.config import TrainConfig

    monkeypatch.setattr(hardware, "native_bf16", lambda: native)  # either kind of CPU, on this one
    monkeypatch.setenv("OSRKIT_FAST", "off")
    cfg = TrainConfig()
    assert cfg.channels_last is False and cfg.use_bf16 is False
    monkeypatch.delenv("OSRKIT_FAST")
    cfg = TrainConfig()
    assert cfg.channels_last is True and cfg.use_bf16 is native
    assert cfg.without_fast_paths().use_bf16 is False


def test_engine_is_rebuilt_after_refit_and_on_fast_path_change():
    """A stale engine would keep scoring with the weights of an earlier fit."""
    data = synthetic_set(600)
    m = OpenSetRecognizer().fit(data, FAST)
    x = data.images[:20]
    first = m.outputs(x).logits
    m.fit(data, FAST.__class__(**(FAST.to_dict() | {"seed": 1})))
    second = m.outputs(x).logits
    assert not torch.equal(torch.from_numpy(first), torch.from_numpy(second))
    m.fast_paths = FastPaths.off()
    assert m.engine().fast == FastPaths.off()
    with torch.inference_mode():
        ref = m.classifier_(data.as_float()[:20]).numpy()
    assert (m.outputs(x).logits == ref).all()


@pytest.mark.parametrize("paths", [FastPaths.off(), FastPaths(bf16=False), FastPaths(bf16=True)])
def test_predictions_survive_save_and_load_for_each_path(tmp_path, fitted, paths):
    x = synthetic_set(100, seed=5).images
    fitted.fast_paths = paths
    try:
        expected = fitted.score_samples(x)
        fitted.save_pretrained(tmp_path / "m")
        loaded = OpenSetRecognizer.from_pretrained(tmp_path / "m", fast_paths=paths)
        assert (loaded.score_samples(x) == expected).all()
    finally:
        fitted.fast_paths = None  # the fixture's setting: the default fast paths


def test_engine_follows_weights_loaded_in_place(fitted):
    """The engine copies the networks; loading other weights into them must not leave it
    scoring with the old ones."""
    x = synthetic_set(20, seed=7).images
    before = fitted.outputs(x).logits
    saved = {k: v.clone() for k, v in fitted.classifier_.state_dict().items()}
    try:
        with torch.no_grad():
            fitted.classifier_.head.bias.add_(5.0 * torch.arange(10.0))
        after = fitted.outputs(x).logits
        assert not (after == before).all()
    finally:
        fitted.classifier_.load_state_dict(saved)
    assert (fitted.outputs(x).logits == before).all()


def test_scoring_runs_numpy_blas_single_threaded(fitted, monkeypatch):
    """numpy's BLAS threads spinning beside torch's made scoring 4.7x slower on 2 cores."""
    from threadpoolctl import threadpool_info

    import osrkit.recognizer.inference as rec
    from osrkit.hardware import single_threaded_blas

    with single_threaded_blas():
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
    seen = []
    real = rec.single_threaded_blas
    monkeypatch.setattr(rec, "single_threaded_blas", lambda: seen.append(1) or real())
    x = synthetic_set(10, seed=2).images
    fitted.score_all(x), fitted.predict(x), fitted.score_samples(x)
    assert len(seen) == 3
