import numpy as np
import pytest
import torch

from osrkit.data.split import auto_val_size
from osrkit.errors import ConfigError
from osrkit.models import AutoencoderConfig, Classifier, ClassifierConfig, ConvAutoencoder
from osrkit.training.config import TrainConfig
from osrkit.training.loop import Checkpointer, stratified_split, to_input, train_autoencoder, train_classifier
from tests.conftest import synthetic_digits

CFG = TrainConfig(epochs=3, ae_epochs=2, batch_size=64, val_size=100, patience=5)


def data(n=600, seed=0):
    x, y = synthetic_digits(n, seed=seed)
    return torch.from_numpy(x), torch.from_numpy(y)


def test_stratified_split_is_seeded_disjoint_and_proportional():
    labels = torch.from_numpy(np.repeat(np.arange(10), [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]))
    tr, va = stratified_split(labels, 550, seed=3)
    assert len(va) == 550 and len(tr) == len(labels) - 550
    assert not set(tr) & set(va)
    counts = np.bincount(labels.numpy()[va], minlength=10)
    np.testing.assert_allclose(counts, np.bincount(labels.numpy()) * 0.1, atol=1)
    tr2, va2 = stratified_split(labels, 550, seed=3)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(labels, 550, seed=4)[1])


@pytest.mark.parametrize(
    "n, k, size",
    [(60000, 10, 5000), (30000, 6, 5000), (3000, 10, 600), (500, 10, 100), (40, 2, 20), (12, 6, 6)],
)
def test_auto_val_size_is_a_fraction_with_a_minimum_per_class(n, k, size):
    assert auto_val_size(n, k) == size


def test_default_split_fits_a_small_folder(caplog):
    """The README's own-data command on a 3,000-image folder failed with the old fixed
    5,000: the default now sizes the split from the data and says so in the log."""
    labels = torch.arange(3000) % 10
    with caplog.at_level("INFO", logger="osrkit.data.split"):
        tr, va = stratified_split(labels, TrainConfig().val_size, seed=0)
    assert (len(tr), len(va)) == (2400, 600)
    assert set(labels[va].tolist()) == set(range(10))
    assert "validation split: 600 of 3000 known training images (auto" in caplog.text


def test_impossible_val_size_names_one_that_works():
    with pytest.raises(ConfigError, match=r"use --val-size 600 \(any value from 10 to 2990 works\)"):
        stratified_split(torch.arange(3000) % 10, 5000, 0)


def test_split_larger_than_data_is_refused():
    with pytest.raises(ConfigError, match="val-size"):
        stratified_split(torch.zeros(10, dtype=torch.long), 10, 0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epochs": 0},
        {"epochs": -2},
        {"batch_size": 0},
        {"val_size": -1},
        {"lr": 0.0},
        {"lr": float("nan")},
        {"rotation_degrees": -5},
        {"hflip_prob": 2.0},
        {"weight_decay": -1.0},
    ],
)
def test_bad_config_values(kwargs):
    with pytest.raises(ConfigError):
        TrainConfig(**kwargs)


def test_classifier_learns_synthetic_digits():
    x, y = data()
    vx, vy = data(200, seed=5)
    model = Classifier()
    info = train_classifier(model, x, y, vx, vy, CFG)
    with torch.inference_mode():
        acc = (model(to_input(vx)).argmax(1) == vy).float().mean().item()
    assert acc > 0.9
    assert not model.training
    assert 1 <= info["best_epoch"] <= CFG.epochs
    assert info["history"][-1]["train_loss"] < info["history"][0]["train_loss"]


def test_autoencoder_reconstructs_knowns_better_than_noise():
    x, _ = data()
    ae = ConvAutoencoder()
    train_autoencoder(ae, x, x[:100], CFG)
    with torch.inference_mode():
        known = ae.reconstruction_error(to_input(x[:100])).mean()
        noise = ae.reconstruction_error(torch.rand(100, 1, 28, 28)).mean()
    assert noise > 2 * known


def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch):
    x, y = data(300)
    vx, vy = data(100, seed=5)
    torch.manual_seed(0)
    reference = Classifier()
    init = {k: v.clone() for k, v in reference.state_dict().items()}
    train_classifier(reference, x, y, vx, vy, CFG, Checkpointer(tmp_path / "a", CFG.to_dict()))

    model = Classifier()
    model.load_state_dict(init)
    ckpt = Checkpointer(tmp_path / "b", CFG.to_dict())
    original_save = Checkpointer.save

    def save_then_interrupt(self, stage, state):
        original_save(self, stage, state)
        if state["epoch"] == 0:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    Classifier()  # same global RNG use as above, so dropout masks line up
    monkeypatch.setattr(Checkpointer, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train_classifier(model, x, y, vx, vy, CFG, ckpt)
    monkeypatch.setattr(Checkpointer, "save", original_save)
    resumed = Classifier()
    resumed.load_state_dict(init)
    train_classifier(resumed, x, y, vx, vy, CFG, ckpt)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=0)


def test_checkpoint_from_other_options_is_refused(tmp_path):
    x, y = data(200)
    ckpt = Checkpointer(tmp_path, CFG.to_dict())
    train_classifier(Classifier(), x, y, x[:50], y[:50], TrainConfig(epochs=1, val_size=50), ckpt)
    other = Checkpointer(tmp_path, TrainConfig(epochs=2, val_size=50).to_dict())
    with pytest.raises(ConfigError, match="other training options"):
        other.load("classifier")


def test_corrupt_checkpoint_is_reported(tmp_path):
    (tmp_path / "classifier.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unreadable"):
        Checkpointer(tmp_path, CFG.to_dict()).load("classifier")


def test_split_needs_every_class_on_both_sides():
    labels = torch.arange(10).repeat(3)  # 30 images, 10 classes
    with pytest.raises(ConfigError, match="every class"):
        stratified_split(labels, 5, 0)
    with pytest.raises(ConfigError, match="single training image"):
        stratified_split(torch.tensor([0, 0, 0, 1, 1, 1, 2]), 3, 0)


def test_diverged_training_is_reported():
    from osrkit.training.loop import _fit

    x, y = data(64)
    with pytest.raises(ConfigError, match="diverged"):
        _fit(
            Classifier(),
            "classifier",
            x,
            y,
            lambda m, xb, yb: m(xb).sum() * 0,
            lambda m: float("nan"),
            1,
            1e-3,
            TrainConfig(epochs=1, val_size=10),
            None,
            False,
        )


def test_each_epoch_logs_what_its_validation_figure_measures(caplog):
    """The epoch line said "validation 0.66667": an error rate for the classifier, a mean
    squared error for the autoencoder, unlabelled."""
    x, y = data(120)
    cfg = TrainConfig(epochs=1, ae_epochs=1, batch_size=32, val_size=20)
    small = ClassifierConfig(channels=(4, 8, 8), feature_dim=8)
    with caplog.at_level("INFO", logger="osrkit.training.loop"):
        train_classifier(Classifier(small), x[:100], y[:100], x[100:], y[100:], cfg)
        train_autoencoder(ConvAutoencoder(AutoencoderConfig((4, 8), 4)), x[:100], x[100:], cfg)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("classifier epoch 1/1: train loss ") and ", validation error 0." in lines[0]
    assert lines[1].startswith("autoencoder epoch 1/1: train loss ") and ", validation MSE " in lines[1]
