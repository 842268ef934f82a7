"""InputSpec and the transforms that bring any image to it, including odd and broken files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit import ImageSet
from osrkit.data.folder import infer_spec, read_image_folder
from osrkit.data.inputs import as_input_tensor
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC, InputSpec
from osrkit.data.transforms import load_image, preprocess_image, to_spec_array
from osrkit.errors import ConfigError, DataError

RNG = np.random.default_rng(0)
RGB = (RNG.random((40, 50, 3)) * 255).astype(np.uint8)


def test_spec_round_trip_and_validation():
    spec = InputSpec(3, 24, 32, "shorter_side_crop", (0.5, 0.4, 0.3), (0.2, 0.2, 0.2), invert=True)
    assert InputSpec.from_dict(spec.to_dict()) == spec
    assert spec.shape == (3, 24, 32) and spec.pixels == 3 * 24 * 32
    assert InputSpec.from_legacy({"size": [28, 28], "channels": 1}) == MNIST_SPEC


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"channels": 2}, "channels must be 1"),
        ({"height": 0}, "height must be"),
        ({"width": 5000}, "width must be"),
        ({"resize": "squash"}, "resize must be"),
        ({"mean": (0.5,)}, "both mean and std"),
        ({"mean": (0.5, 0.5), "std": (1.0, 1.0)}, "one value per channel"),
        ({"mean": (0.5,), "std": (0.0,)}, "std positive"),
    ],
)
def test_spec_refuses_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        InputSpec(**kwargs)


def test_rgb_and_gray_conversions():
    img = Image.fromarray(RGB)
    gray = to_spec_array(img, MNIST_SPEC)
    colour = to_spec_array(img, CIFAR10_SPEC)
    assert gray.shape == (1, 28, 28) and colour.shape == (3, 32, 32)
    assert gray.dtype == colour.dtype == np.uint8
    # grayscale is Pillow's ITU-R 601 luma (convert("L")), then the antialiased resize
    luma = np.asarray(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR, reducing_gap=None))
    np.testing.assert_array_equal(gray[0], luma)
    # a grayscale image given to an RGB spec repeats its channel
    rep = to_spec_array(Image.fromarray(RGB[..., 0]), CIFAR10_SPEC)
    assert (rep[0] == rep[1]).all() and (rep[1] == rep[2]).all()


def test_shorter_side_crop_keeps_the_centre():
    arr = np.zeros((20, 60), dtype=np.uint8)
    arr[:, 20:40] = 255  # the central third is white
    spec = InputSpec(1, 20, 20, "shorter_side_crop")
    out = to_spec_array(Image.fromarray(arr), spec)
    assert out.shape == (1, 20, 20) and out.min() == 255
    stretched = to_spec_array(Image.fromarray(arr), InputSpec(1, 20, 20))
    assert stretched.min() == 0  # stretch keeps all of the width


def test_invert_follows_the_spec_for_files():
    img = Image.fromarray(np.full((28, 28), 10, dtype=np.uint8))
    assert to_spec_array(img, InputSpec(invert=True))[0, 0, 0] == 245
    assert to_spec_array(img, InputSpec(invert=True), invert=False)[0, 0, 0] == 10


def _odd_files(folder):
    files = {}
    Image.fromarray(RGB).convert("CMYK").save(files.setdefault("cmyk", folder / "cmyk.jpg"))
    Image.fromarray((RNG.random((20, 20)) * 65535).astype(np.uint16)).save(
        files.setdefault("g16", folder / "g16.png")
    )
    Image.fromarray(RGB).convert("P").save(files.setdefault("palette", folder / "pal.png"))
    rgba = np.dstack([RGB, np.full((40, 50), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(files.setdefault("rgba", folder / "rgba.png"))
    Image.fromarray(RGB[:1, :1]).save(files.setdefault("1x1", folder / "one.png"))
    return files


@pytest.mark.parametrize("spec", [MNIST_SPEC, CIFAR10_SPEC, InputSpec(3, 17, 9, "shorter_side_crop")])
def test_unusual_but_valid_images_are_read(tmp_path, spec):
    for name, path in _odd_files(tmp_path).items():
        x = preprocess_image(path, spec)
        assert x.shape == spec.shape, name
        assert 0 <= x.min() <= x.max() <= 1, name
    # RGBA composites on black: half-transparent pixels are darker than opaque ones
    assert (
        preprocess_image(tmp_path / "rgba.png", CIFAR10_SPEC).mean()
        < preprocess_image(tmp_path / "pal.png", CIFAR10_SPEC).mean()
    )


def test_broken_images_get_one_line_naming_the_cause(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image")
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    causes = {
        "trunc.jpg": "truncated",
        "zero.png": "empty file",
        "text.png": "not an image",
        "loop.png": "symbolic-link loop",
        "missing.png": "does not exist",
    }
    for name, cause in causes.items():
        with pytest.raises(DataError, match=cause) as info:
            load_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_decompression_bomb_refused(tmp_path, monkeypatch):
    Image.fromarray(RGB).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 40x50 = 2,000 > 2 x 100
    with pytest.raises(DataError, match="too large"):
        load_image(tmp_path / "big.png")


def test_as_input_tensor_shapes_and_conversions(caplog):
    x = torch.rand(4, 3, 32, 32)
    assert as_input_tensor(x, CIFAR10_SPEC).shape == (4, 3, 32, 32)
    assert as_input_tensor(x[0], CIFAR10_SPEC).shape == (1, 3, 32, 32)
    gray = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    assert as_input_tensor(gray, MNIST_SPEC).shape == (5, 1, 28, 28)
    assert as_input_tensor(gray, InputSpec(3, 28, 28)).shape == (5, 3, 28, 28)
    with caplog.at_level("WARNING"):
        luma = as_input_tensor(torch.rand(2, 3, 28, 28), MNIST_SPEC)
    assert luma.shape == (2, 1, 28, 28) and "converting 3-channel" in caplog.text
    with pytest.raises(DataError, match=r"\(N, 3, 32, 32\)"):
        as_input_tensor(torch.rand(2, 3, 28, 28), CIFAR10_SPEC)
    with pytest.raises(DataError, match="NaN"):
        as_input_tensor(torch.full((1, 3, 32, 32), float("nan")), CIFAR10_SPEC)


def test_single_path_and_imageset(tmp_path):
    Image.fromarray(RGB).save(tmp_path / "a.png")
    assert as_input_tensor(str(tmp_path / "a.png"), CIFAR10_SPEC).shape == (1, 3, 32, 32)
    data = ImageSet(torch.from_numpy(RGB.transpose(2, 0, 1)[None].copy()), torch.zeros(1), ["x"])
    assert data.shape == (3, 40, 50)
    assert as_input_tensor(data, MNIST_SPEC).shape == (1, 1, 28, 28)
    # the set is converted through Pillow, as the file would be
    np.testing.assert_array_equal(
        data.to_spec(MNIST_SPEC).images[0].numpy(), to_spec_array(Image.fromarray(RGB), MNIST_SPEC)
    )


def test_mixed_size_colour_folder(tmp_path):
    for i, (h, w) in enumerate([(40, 50), (64, 64), (100, 80), (33, 45)]):
        folder = tmp_path / ("a" if i % 2 else "b")
        folder.mkdir(exist_ok=True)
        Image.fromarray((RNG.random((h, w, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    spec = infer_spec(sorted(tmp_path.rglob("*.png")))
    assert spec.channels == 3 and spec.height == spec.width and spec.height % 4 == 0
    assert spec.resize == "shorter_side_crop"
    data = read_image_folder(tmp_path)
    assert data.shape == spec.shape and data.spec == spec and len(data) == 4


def test_same_size_gray_folder_keeps_its_size(tmp_path):
    for i in range(3):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray((RNG.random((12, 20)) * 255).astype(np.uint8)).convert("RGB").save(
            tmp_path / "c" / f"{i}.png"
        )
    assert infer_spec(sorted(tmp_path.rglob("*.png"))) == InputSpec(1, 12, 20)


def test_empty_class_folder_refused(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(RGB).save(tmp_path / "a" / "0.png")
    with pytest.raises(DataError, match="class folder .*b holds no images"):
        read_image_folder(tmp_path)


def test_colour_array_to_gray_matches_the_imageset_and_file_path():
    """A uint8 colour array given to a grayscale model goes through Pillow's luma, as an
    ImageSet of the same images (and so the same files) would."""
    rgb = torch.from_numpy((RNG.random((64, 3, 28, 28)) * 255).astype(np.uint8))
    via_array = as_input_tensor(rgb, MNIST_SPEC)
    via_set = as_input_tensor(ImageSet(rgb, torch.zeros(64), ["x"]), MNIST_SPEC)
    torch.testing.assert_close(via_array, via_set, rtol=0, atol=0)


def test_folder_spec_and_folder_read_agree(tmp_path):
    """The spec a training folder suggests (native_spec, before any image is read) is the one
    read_image_folder reads it in: both look at the class folders only, so a stray colour
    file at the root changes neither."""
    from osrkit.data.catalog import native_spec

    (tmp_path / "a").mkdir()
    for i in range(3):
        Image.fromarray((RNG.random((20, 20)) * 255).astype(np.uint8)).save(tmp_path / "a" / f"{i}.png")
    Image.fromarray(RGB).save(tmp_path / "stray.png")
    assert native_spec(str(tmp_path)) == read_image_folder(tmp_path).spec == InputSpec(1, 20, 20)
