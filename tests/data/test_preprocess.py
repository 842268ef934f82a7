"""Image preprocessing (osrkit.data.transforms.preprocess_image): any image -> float (1, 28, 28) in [0, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit.data.transforms import preprocess_image
from osrkit.errors import DataError


def check_tensor(t):
    assert isinstance(t, torch.Tensor)
    assert t.dtype == torch.float32
    assert tuple(t.shape) == (1, 28, 28)
    assert float(t.min()) >= 0.0
    assert float(t.max()) <= 1.0


def gradient(h, w):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w), dtype=np.uint8)


def test_l_image_values_preserved():
    arr = gradient(28, 28)
    arr[0, 0], arr[0, 1] = 0, 255
    t = preprocess_image(Image.fromarray(arr))
    check_tensor(t)
    expected = torch.from_numpy(arr).float().unsqueeze(0) / 255.0
    assert torch.equal(t, expected)


def test_rgb_100x60():
    rgb = np.random.default_rng(1).integers(0, 256, size=(60, 100, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    assert img.size == (100, 60)
    t = preprocess_image(img)
    check_tensor(t)
    assert 0.3 < float(t.mean()) < 0.7  # random pixels average near mid-gray


def test_rgba_transparent_becomes_black():
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white everywhere
    rgba[:, :14, 3] = 0  # left half fully transparent
    rgba[:, 14:, 3] = 255  # right half opaque
    t = preprocess_image(Image.fromarray(rgba))
    check_tensor(t)
    assert torch.all(t[0, :, :14] == 0.0)
    assert torch.all(t[0, :, 14:] == 1.0)


def test_la_transparent_becomes_black():
    la = Image.new("LA", (28, 28), (200, 0))
    t = preprocess_image(la)
    check_tensor(t)
    assert float(t.max()) == 0.0


def test_palette_image():
    img = Image.new("P", (28, 28))
    img.putpalette([0, 0, 0, 255, 255, 255, 255, 0, 0] + [0] * (256 * 3 - 9))
    px = img.load()
    for x in range(28):
        px[x, 0] = 1  # white row
        px[x, 1] = 2  # red row
    t = preprocess_image(img)
    check_tensor(t)
    assert float(t[0, 0].min()) == 1.0
    assert abs(float(t[0, 1, 0]) * 255 - 76) <= 1
    assert float(t[0, 5:].max()) == 0.0


def test_palette_with_transparency_becomes_black():
    img = Image.new("P", (28, 28), 1)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
    img.info["transparency"] = 1  # palette entry 1 (white) is transparent
    t = preprocess_image(img)
    check_tensor(t)
    assert float(t.max()) == 0.0


def test_16bit_image():
    arr = np.zeros((28, 28), dtype=np.uint16)
    arr[0, 0] = 65535
    arr[0, 1] = 32768
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    t = preprocess_image(img)
    check_tensor(t)
    assert float(t[0, 0, 0]) == 1.0
    assert abs(float(t[0, 0, 1]) * 255 - 127.5) <= 1
    assert float(t[0, 5:].max()) == 0.0


def test_mode_1_image():
    img = Image.new("1", (28, 28), 0)
    for x in range(28):
        img.putpixel((x, 3), 1)
    t = preprocess_image(img)
    check_tensor(t)
    assert torch.all(t[0, 3] == 1.0)
    assert float(t.sum()) == 28.0


def test_png_path(tmp_path):
    arr = gradient(28, 28)
    Image.fromarray(arr).convert("RGB").save(tmp_path / "digit.png")
    t = preprocess_image(tmp_path / "digit.png")
    check_tensor(t)
    assert torch.equal(t, torch.from_numpy(arr).float().unsqueeze(0) / 255.0)
    t_str = preprocess_image(str(tmp_path / "digit.png"))
    assert torch.equal(t, t_str)


def test_jpeg_path(tmp_path):
    img = Image.new("RGB", (50, 40), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 25, 40))  # left half black, right half white
    img.save(tmp_path / "photo.jpg", quality=95)
    t = preprocess_image(tmp_path / "photo.jpg")
    check_tensor(t)
    assert float(t[0, :, :10].mean()) < 0.05
    assert float(t[0, :, -10:].mean()) > 0.95


@pytest.mark.parametrize(("color", "luma"), [((255, 0, 0), 76), ((0, 255, 0), 150), ((0, 0, 255), 29)])
def test_luma_itu_601(color, luma):
    t = preprocess_image(Image.new("RGB", (28, 28), color))
    check_tensor(t)
    assert float((t * 255 - luma).abs().max()) <= 1.0


def test_luma_after_resize():
    t = preprocess_image(Image.new("RGB", (90, 70), (255, 0, 0)))
    assert float((t * 255 - 76).abs().max()) <= 1.0


def test_antialiased_downsize():
    board = ((np.indices((112, 112)).sum(axis=0) % 2) * 255).astype(np.uint8)
    t = preprocess_image(Image.fromarray(board))
    check_tensor(t)
    assert abs(float(t.mean()) - 0.5) < 0.02
    assert float(t.std()) < 0.05
    assert float(t.min()) > 0.4
    assert float(t.max()) < 0.6


def test_invert():
    arr = gradient(40, 30)
    img = Image.fromarray(arr)
    plain = preprocess_image(img)
    inverted = preprocess_image(img, invert=True)
    check_tensor(inverted)
    assert torch.allclose(inverted, 1.0 - plain, atol=1e-6)


def test_text_file_named_png(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("this is not an image\n")
    with pytest.raises(DataError, match="not a readable image") as info:
        preprocess_image(path)
    assert "x.png" in str(info.value)


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        preprocess_image(tmp_path / "nope.png")


def test_zero_size_image():
    with pytest.raises(DataError):
        preprocess_image(Image.new("L", (0, 5)))


def test_decompression_bomb_is_a_data_error(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    PILImage.new("L", (64, 64)).save(tmp_path / "big.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 100)  # 64*64 > 2 * 100 -> bomb error
    with pytest.raises(DataError, match="too large"):
        preprocess_image(tmp_path / "big.png")
