"""The backbone registry: every registered backbone, for every input spec it takes, builds,
runs, saves and loads back to identical predictions (parametrized over list_backbones())."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import osrkit
from osrkit import ImageSet, InputSpec, OpenSetRecognizer, TrainConfig
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC
from osrkit.errors import ConfigError, ModelFormatError
from osrkit.models import (
    BACKBONES,
    Backbone,
    backbone_entry,
    create_backbone,
    default_backbone,
    list_backbones,
)
from osrkit.recognizer.engine import FastPaths, InferenceEngine
from tests.numerics import assert_decisions_agree

SPECS = [MNIST_SPEC, CIFAR10_SPEC, InputSpec(3, 24, 40)]
OWN = [name for name in list_backbones() if name in ("small_cnn", "colour_cnn")]


def _available(name: str) -> None:
    try:
        create_backbone(name, InputSpec(3, 32, 32), 3)
    except ConfigError as exc:
        if "extra" in str(exc):
            pytest.skip(str(exc))
        raise


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "x".join(map(str, s.shape)))
def test_every_backbone_builds_and_runs(name, spec):
    _available(name)
    torch.manual_seed(0)
    if backbone_entry(name).channels not in (None, spec.channels):
        with pytest.raises(ConfigError, match="takes RGB input"):
            create_backbone(name, spec, 5)
        return
    net = create_backbone(name, spec, 5).eval()
    assert isinstance(net, Backbone) and net.backbone_name == name
    x = torch.rand(3, *spec.shape)
    with torch.no_grad():
        logits, features = net.forward_with_features(x)
        assert logits.shape == (3, 5)
        assert features.shape == (3, net.feature_dim)
        if net.splittable:  # the engine's split path: logits are the head applied to the features
            torch.testing.assert_close(net.head(features), logits)


@pytest.mark.parametrize("name", OWN)
def test_engine_fast_paths_match_reference(name):
    spec = MNIST_SPEC if name == "small_cnn" else CIFAR10_SPEC
    torch.manual_seed(0)
    net = create_backbone(name, spec, 4)
    net.train()
    net(torch.rand(16, *spec.shape))  # batch-norm statistics that fold into something non-trivial
    net.eval()
    x = torch.rand(8, *spec.shape)
    ref = InferenceEngine(net, None, FastPaths.off())(x)
    fast = InferenceEngine(net, None, FastPaths(bf16=False))(x)
    torch.testing.assert_close(fast[0], ref[0], atol=1e-4, rtol=1e-4)
    assert ref[2] is None


def test_registry_errors_and_defaults():
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9000'; registered backbones: .*small_cnn"):
        create_backbone("resnet9000", MNIST_SPEC, 10)
    with pytest.raises(ConfigError, match="unknown backbone"):
        OpenSetRecognizer(backbone="resnet9000").check_params()  # as fit does, before any data
    assert default_backbone(MNIST_SPEC) == "small_cnn"
    # from scratch; the pretrained default is tested in test_pretrained.py
    assert default_backbone(CIFAR10_SPEC, pretrained=False) == "colour_cnn"
    assert default_backbone(InputSpec(1, 64, 64), pretrained=False) == "colour_cnn"
    assert backbone_entry("small_cnn").autoencoder and not backbone_entry("colour_cnn").autoencoder


def test_register_your_own_backbone():
    class Tiny(Backbone):
        def __init__(self, spec, num_classes, width=4):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(spec.channels, width, 3, padding=1),
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
            )
            self.feature_dim = width
            self.head = torch.nn.Linear(width, num_classes)

        def forward_features(self, x):
            return self.body(x)

    osrkit.register_backbone("test_tiny", Tiny)
    try:
        assert "test_tiny" in list_backbones()
        net = create_backbone("test_tiny", CIFAR10_SPEC, 3, width=6)
        assert net.backbone_options == {"width": 6} and net.feature_dim == 6
    finally:
        BACKBONES._entries.pop("test_tiny")


def _colour_set(n: int, seed: int = 0) -> ImageSet:
    """3 classes of 16x16 colour images: a red, green or blue square at a jittered place."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    x = (rng.random((n, 3, 16, 16)) * 40).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = rng.integers(2, 8, size=2)
        x[i, k, r : r + 6, c : c + 6] = 220
    return ImageSet(torch.from_numpy(x), torch.from_numpy(labels), ["red", "green", "blue"], "colour squares")


# colour_cnn's own recipe (Nesterov SGD, label smoothing, crops and flips), shortened
COLOUR_FAST = TrainConfig.for_backbone("colour_cnn", epochs=3, ae_epochs=1, batch_size=32, val_size=60)


@pytest.mark.parametrize("autoencoder", [False, True])
def test_colour_model_fits_saves_and_loads_alike(tmp_path, autoencoder):
    train = _colour_set(300)
    model = OpenSetRecognizer(train.class_names, backbone="colour_cnn", autoencoder=autoencoder, device="cpu")
    model.fit(train, COLOUR_FAST)
    assert model.input_spec_ == InputSpec(3, 16, 16) and model.backbone_name_ == "colour_cnn"
    assert model.decision_scorer_ == "max_logit_knn"  # declared by colour_cnn, autoencoder or not
    assert model.has_autoencoder == autoencoder
    test = _colour_set(90, seed=1)
    assert (model.predict(test) == test.labels.numpy()).mean() > 0.5
    model.save_pretrained(tmp_path / "m")
    again = OpenSetRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    assert again.input_spec_ == model.input_spec_ and again.has_autoencoder == autoencoder
    for name, s in model.score_all(test).items():
        np.testing.assert_array_equal(again.score_all(test)[name], s)
    np.testing.assert_array_equal(again.predict(test), model.predict(test))


def test_reconstruction_scorer_needs_the_autoencoder():
    train = _colour_set(150)
    model = OpenSetRecognizer(
        train.class_names, backbone="colour_cnn", autoencoder=False, decision_scorer="combined"
    )
    with pytest.raises(ConfigError, match="needs the autoencoder's reconstruction error"):
        model.fit(train, COLOUR_FAST)
    model = OpenSetRecognizer(train.class_names, backbone="colour_cnn", autoencoder=False).fit(
        train, COLOUR_FAST
    )
    with pytest.raises(ConfigError, match="no autoencoder"):
        model.score_samples(train, "reconstruction")
    with pytest.raises(ConfigError, match="no autoencoder"):
        model.reconstruct(train)


def test_autoencoder_needs_sides_divisible_by_4():
    train = _colour_set(150).to_spec(InputSpec(3, 18, 18))
    with pytest.raises(ConfigError, match="divisible by 4"):
        OpenSetRecognizer(train.class_names, backbone="colour_cnn", autoencoder=True).fit(train, COLOUR_FAST)


def test_folder_naming_a_missing_backbone(tmp_path, fitted):
    import json

    fitted.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["backbone"]["name"] = "resnet9000"
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="uses backbone 'resnet9000', which this osrkit lacks"):
        OpenSetRecognizer.from_pretrained(tmp_path / "m")
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFormatError, match="upgrade osrkit"):
        OpenSetRecognizer.from_pretrained(tmp_path / "m")


def test_colour_model_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from osrkit.export import OnnxRecognizer, export_onnx

    train = _colour_set(300)
    model = OpenSetRecognizer(train.class_names, backbone="colour_cnn", autoencoder=False, device="cpu").fit(
        train, COLOUR_FAST
    )
    model.fast_paths = FastPaths.off()
    export_onnx(model, tmp_path / "m.onnx")
    onnx_model = OnnxRecognizer(tmp_path / "m.onnx")
    assert onnx_model.input_spec == model.input_spec_
    test = _colour_set(40, seed=3)
    ours, theirs = model.score_all(test), onnx_model.score_all(test)
    assert set(theirs) == set(ours)
    for name, s in ours.items():
        np.testing.assert_allclose(theirs[name], s, rtol=1e-4, atol=1e-4, err_msg=name)
    name = model.decision_scorer_  # decisions where the score is clear of the threshold (by 1e-4)
    labels, expected = onnx_model.predict(test), model.predict(test)
    assert assert_decisions_agree(labels, expected, ours[name], model.thresholds_[name], 1e-4) > 0.9


def test_default_autoencoder_follows_what_the_spec_allows():
    """small_cnn comes with an autoencoder by default, but not for a size it cannot take
    (a folder of 24x30 images): then the default leaves it out instead of failing; asked
    for explicitly, it still fails in one line."""
    odd = InputSpec(1, 24, 30)
    model = OpenSetRecognizer(input_spec=odd)
    train = ImageSet(
        torch.randint(0, 256, (200, 1, 24, 30), dtype=torch.uint8), torch.arange(200) % 10, list("0123456789")
    )
    model.fit(train, TrainConfig(epochs=1, ae_epochs=1, val_size=50))
    assert model.backbone_name_ == "small_cnn" and not model.has_autoencoder
    assert model.decision_scorer_ == "max_logit"
    with pytest.raises(ConfigError, match="divisible by 4"):
        OpenSetRecognizer(input_spec=odd, autoencoder=True).check_params()  # as fit does, before any data


@pytest.mark.parametrize(
    ("stem", "side", "least"), [("patch", 8, 9), ("space_to_depth", 8, 16), ("space_to_depth", 12, 16)]
)
def test_colour_cnn_refuses_images_too_small_in_one_line(stem, side, least):
    with pytest.raises(ConfigError, match=f"at least {least}x{least} pixels"):
        create_backbone("colour_cnn", InputSpec(3, side, side), 3, stem=stem)
    create_backbone("colour_cnn", InputSpec(3, least, least), 3, stem=stem)


def test_colour_cnn_records_its_defaults_and_refuses_an_unknown_stem():
    net = create_backbone("colour_cnn", CIFAR10_SPEC, 4)
    # the widths follow the stem: recorded too, so a folder pins its network
    assert net.backbone_options == {
        "stem": "whiten",
        "widths": [64, 256, 256],
        "flip_tta": True,
        "shift_tta": True,
        "activation": "gelu",
        "dirac_init": True,
        "bn_momentum": 0.4,
    }
    old = create_backbone("colour_cnn", CIFAR10_SPEC, 4, stem="space_to_depth")
    assert old.backbone_options["widths"] == [64, 128, 256]
    assert create_backbone("colour_cnn", CIFAR10_SPEC, 4, stem="patch").backbone_options["widths"] == [
        32,
        96,
        192,
    ]
    assert (
        create_backbone("colour_cnn", CIFAR10_SPEC, 4, flip_tta=False).backbone_options["flip_tta"] is False
    )
    with pytest.raises(ConfigError, match="stem must be one of whiten, patch, space_to_depth, got 'big'"):
        create_backbone("colour_cnn", CIFAR10_SPEC, 4, stem="big")
    with pytest.raises(ConfigError, match="activation must be one of relu, gelu, got 'tanh'"):
        create_backbone("colour_cnn", CIFAR10_SPEC, 4, activation="tanh")


def test_flip_averaged_features_see_an_image_and_its_mirror_alike():
    """With flip_tta the network in eval mode scores an image and its mirror image the
    same (the mean of the two views' features); in training it sees one view."""
    torch.manual_seed(0)
    net = create_backbone("colour_cnn", CIFAR10_SPEC, 4, shift_tta=False).eval()
    x = torch.rand(3, *CIFAR10_SPEC.shape)
    torch.testing.assert_close(net(x), net(x.flip(3)))
    plain = create_backbone("colour_cnn", CIFAR10_SPEC, 4, flip_tta=False, shift_tta=False)
    plain.load_state_dict(net.state_dict())
    plain.eval()
    torch.testing.assert_close(
        net.forward_features(x), (plain.forward_features(x) + plain.forward_features(x.flip(3))) / 2
    )
    assert not torch.allclose(plain(x), plain(x.flip(3)))
    net.train()
    torch.testing.assert_close(net.forward_features(x), plain.train().forward_features(x))


def test_shifted_views_weigh_half_the_features():
    """shift_tta: half the weight on the (mirror-averaged) image, a quarter on each of its
    shifts by one pixel up-left and down-right (reflection padding); one view in training
    and with test_views off (the training loop's validation)."""
    torch.manual_seed(0)
    net = create_backbone("colour_cnn", CIFAR10_SPEC, 4, widths=[8, 16, 16]).eval()
    one = create_backbone("colour_cnn", CIFAR10_SPEC, 4, widths=[8, 16, 16], shift_tta=False).eval()
    one.load_state_dict(net.state_dict())
    x = torch.rand(2, *CIFAR10_SPEC.shape)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    expected = 0.5 * one.forward_features(x) + 0.25 * (
        one.forward_features(padded[..., :-2, :-2]) + one.forward_features(padded[..., 2:, 2:])
    )
    torch.testing.assert_close(net.forward_features(x), expected)
    net.test_views = False
    torch.testing.assert_close(net.forward_features(x), net.body(net.normalized(x)))


def test_whitening_stem_is_set_from_the_data_and_never_trained():
    """init_from_data: the stem's first half whitens the 2x2 patches (their covariance
    through it is the identity, up to the eps), the second half is its negative; its
    weights take no gradient."""
    torch.manual_seed(0)
    net = create_backbone("colour_cnn", CIFAR10_SPEC, 4, widths=[8, 16, 16])
    images = (torch.rand(200, *CIFAR10_SPEC.shape) ** 2 * 255).to(torch.uint8)
    net.init_from_data(images)
    stem = net.body[0]
    assert not stem.weight.requires_grad and stem.out_channels == 24
    torch.testing.assert_close(stem.weight[12:], -stem.weight[:12])
    x = net.normalized(images.float() / 255)
    out = torch.nn.functional.conv2d(x.double(), stem.weight[:12].double())  # (N, 12, 31, 31)
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    cov = flat.T @ flat / len(flat)
    # eps = 5e-4 shrinks each direction by var / (var + eps): within 2% for these images
    torch.testing.assert_close(cov, torch.eye(12, dtype=cov.dtype), atol=0.02, rtol=0)
    other = create_backbone("colour_cnn", CIFAR10_SPEC, 4, stem="patch")
    before = other.state_dict()["body.0.weight"].clone()
    other.init_from_data(images)  # nothing to set
    torch.testing.assert_close(other.state_dict()["body.0.weight"], before)


def test_model_folder_files_share_one_mode(tmp_path, fitted):
    import os
    import stat

    fitted.save_pretrained(tmp_path / "m")
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "m").iterdir()}
    umask = os.umask(0)
    os.umask(umask)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_checkpoint_of_another_default_network_is_refused_in_one_line(tmp_path, monkeypatch):
    """A checkpoint written while colour_cnn's registered defaults built another network
    (an older osrkit) is refused in one line; it used to be loaded into the new network
    (a state_dict traceback), because its identity held only the options the caller gave."""
    import dataclasses

    from osrkit.models import registry

    train = _colour_set(120)
    cfg = TrainConfig.for_backbone("colour_cnn", epochs=2, batch_size=32, val_size=30)
    entry = backbone_entry("colour_cnn")
    monkeypatch.setitem(registry.BACKBONES._entries, "colour_cnn", dataclasses.replace(entry, options={}))
    interrupted = dataclasses.replace(cfg, epochs=1)
    OpenSetRecognizer(train.class_names, backbone="colour_cnn", autoencoder=False).fit(
        train, interrupted, tmp_path / "ckpt"
    )
    monkeypatch.setitem(registry.BACKBONES._entries, "colour_cnn", entry)
    with pytest.raises(ConfigError, match="written with other training options"):
        OpenSetRecognizer(train.class_names, backbone="colour_cnn", autoencoder=False).fit(
            train, interrupted, tmp_path / "ckpt"
        )
