"""Image-folder reader (osrkit.data.folder): ``<root>/<class>/<image>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from osrkit.data.folder import infer_spec, list_images, load_images, read_image_folder
from osrkit.data.spec import MNIST_SPEC, InputSpec
from osrkit.errors import DataError


def save(path, value, size=(28, 28), mode="L"):
    """Write a flat image of gray ``value`` (so the reader's output identifies the file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, value, value)
    Image.new(mode, size, color).save(path)
    return path


def save_colour(path, rgb, size=(28, 28)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)
    return path


def first_pixels(data):
    return data.images[:, 0, 0, 0].tolist()


def test_classes_labels_and_images(tmp_path):
    save(tmp_path / "zebra" / "a.png", 10)
    save(tmp_path / "apple" / "a.png", 20, size=(50, 40), mode="RGB")
    save(tmp_path / "apple" / "b.jpg", 30, size=(10, 10), mode="RGB")
    save(tmp_path / "mango" / "c.bmp", 40)
    data = read_image_folder(tmp_path)
    assert data.class_names == ["apple", "mango", "zebra"]
    assert data.labels.tolist() == [0, 0, 1, 2]
    assert data.labels.dtype == torch.int64
    # mixed sizes, no colour: one gray channel, a square of the median shorter side (28)
    assert tuple(data.images.shape) == (4, 1, 28, 28)
    assert data.spec is not None and data.spec.shape == (1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert first_pixels(data)[0] == 20
    assert first_pixels(data)[2:] == [40, 10]
    assert abs(first_pixels(data)[1] - 30) <= 2  # JPEG
    assert data.paths == [
        str(tmp_path / "apple" / "a.png"),
        str(tmp_path / "apple" / "b.jpg"),
        str(tmp_path / "mango" / "c.bmp"),
        str(tmp_path / "zebra" / "a.png"),
    ]
    assert data.name == tmp_path.name
    assert data.class_counts() == {"apple": 2, "mango": 1, "zebra": 1}


def test_name_argument(tmp_path):
    save(tmp_path / "a" / "1.png", 1)
    assert read_image_folder(tmp_path, name="my set").name == "my set"


def test_numeric_names_sort_by_number(tmp_path):
    for n in [10, 2, 1, 100, 20]:
        save(tmp_path / "c" / f"{n}.png", n)
    save(tmp_path / "c" / "b.png", 201)
    save(tmp_path / "c" / "a.png", 200)
    data = read_image_folder(tmp_path)
    assert [Path(p).name for p in data.paths] == [
        "1.png",
        "2.png",
        "10.png",
        "20.png",
        "100.png",
        "a.png",
        "b.png",
    ]
    assert first_pixels(data) == [1, 2, 10, 20, 100, 200, 201]


def test_zero_padded_names_keep_order(tmp_path):
    for n in [3, 0, 11, 1]:
        save(tmp_path / "cat" / f"{n:05d}.png", n)
    data = read_image_folder(tmp_path)
    assert first_pixels(data) == [0, 1, 3, 11]


def test_non_ascii_digit_file_name(tmp_path):
    """'²'.isdigit() is True but int('²') fails: folder._sort_key must not crash on it."""
    save(tmp_path / "c" / "1.png", 1)
    save(tmp_path / "c" / "².png", 2)
    data = read_image_folder(tmp_path)
    assert len(data) == 2
    assert sorted(first_pixels(data)) == [1, 2]


def test_nested_subfolders_belong_to_top_class(tmp_path):
    save(tmp_path / "Greek" / "character01" / "a.png", 1)
    save(tmp_path / "Greek" / "character02" / "b.png", 2)
    save(tmp_path / "Greek" / "top.png", 3)
    save(tmp_path / "Latin" / "character01" / "deep" / "c.png", 4)
    data = read_image_folder(tmp_path)
    assert data.class_names == ["Greek", "Latin"]
    assert data.labels.tolist() == [0, 0, 0, 1]
    assert sorted(first_pixels(data)[:3]) == [1, 2, 3]
    assert first_pixels(data)[3] == 4
    assert data.paths[3] == str(tmp_path / "Latin" / "character01" / "deep" / "c.png")
    assert all(Path(p).is_file() for p in data.paths)


def test_hidden_folders_and_other_files_ignored(tmp_path):
    save(tmp_path / "a" / "1.png", 1)
    save(tmp_path / "a" / "2.PNG", 2)  # suffix match is case-insensitive
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "Thumbs.db").write_bytes(b"\x00\x01")
    save(tmp_path / ".cache" / "x.png", 99)
    (tmp_path / "README.md").write_text("a file at the top level is not a class")
    data = read_image_folder(tmp_path)
    assert data.class_names == ["a"]
    assert first_pixels(data) == [1, 2]


def test_invert(tmp_path):
    save(tmp_path / "a" / "1.png", 10)
    data = read_image_folder(tmp_path, invert=True)
    assert first_pixels(data) == [245]


def test_class_names_fix_order(tmp_path):
    save(tmp_path / "b" / "1.png", 1)
    save(tmp_path / "a" / "1.png", 2)
    save(tmp_path / "c" / "1.png", 3)
    data = read_image_folder(tmp_path, class_names=["c", "a"])
    assert data.class_names == ["c", "a"]
    assert data.labels.tolist() == [0, 1]
    assert first_pixels(data) == [3, 2]


def test_class_names_with_missing_class(tmp_path):
    save(tmp_path / "a" / "1.png", 1)
    with pytest.raises(DataError, match="nothere"):
        read_image_folder(tmp_path, class_names=["a", "nothere"])


def test_empty_root(tmp_path):
    (tmp_path / "loose.png").write_bytes(b"")  # files but no class subfolders
    with pytest.raises(DataError, match="no class subfolders"):
        read_image_folder(tmp_path)


def test_class_folders_without_images(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b" / "sub").mkdir(parents=True)
    (tmp_path / "b" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        read_image_folder(tmp_path)


def test_non_image_with_png_suffix(tmp_path):
    save(tmp_path / "a" / "1.png", 1)
    bad = tmp_path / "b" / "broken.png"
    bad.parent.mkdir()
    bad.write_text("hello, I am text")
    with pytest.raises(DataError, match="broken.png") as info:
        read_image_folder(tmp_path)
    assert "not a readable image" in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_root_not_a_folder(tmp_path, kind):
    root = tmp_path / "nope"
    if kind == "file":
        root.write_text("x")
    with pytest.raises(DataError, match="does not exist"):
        read_image_folder(root)


def test_list_images_and_load_images(tmp_path):
    save(tmp_path / "b" / "3.png", 3)
    save(tmp_path / "a" / "2.png", 2)
    save(tmp_path / "a" / "10.png", 10)
    files = list_images(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a/2.png", "a/10.png", "b/3.png"]
    arr = load_images(files)
    assert arr.dtype == np.uint8
    assert arr.shape == (3, 1, 28, 28)
    assert arr[:, 0, 0, 0].tolist() == [2, 10, 3]
    assert load_images([]).shape == (0, 1, 28, 28)
    rgb = load_images(files, spec=InputSpec(3, 16, 12))
    assert rgb.shape == (3, 3, 16, 12)
    assert rgb[:, :, 0, 0].tolist() == [[2, 2, 2], [10, 10, 10], [3, 3, 3]]
    assert load_images(files, invert=True)[:, 0, 0, 0].tolist() == [253, 245, 252]


def test_empty_class_folder_named(tmp_path):
    save(tmp_path / "a" / "1.png", 1)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="empty_class"):
        read_image_folder(tmp_path)


def test_colour_folder_read_in_colour_at_its_own_size(tmp_path):
    save_colour(tmp_path / "red" / "1.png", (200, 10, 30), size=(20, 16))
    save(tmp_path / "gray" / "1.png", 90, size=(20, 16))
    data = read_image_folder(tmp_path)
    assert data.class_names == ["gray", "red"]
    assert tuple(data.images.shape) == (2, 3, 16, 20)
    assert data.spec == InputSpec(3, 16, 20)
    assert data.images[0, :, 0, 0].tolist() == [90, 90, 90]  # grayscale repeated in RGB
    assert data.images[1, :, 0, 0].tolist() == [200, 10, 30]


def test_spec_argument_gives_the_old_grayscale_28(tmp_path):
    save_colour(tmp_path / "red" / "1.png", (200, 10, 30), size=(20, 16))
    data = read_image_folder(tmp_path, spec=MNIST_SPEC)
    assert tuple(data.images.shape) == (1, 1, 28, 28)
    luma = round(0.299 * 200 + 0.587 * 10 + 0.114 * 30)
    assert abs(int(data.images[0, 0, 14, 14]) - luma) <= 1


def test_infer_spec(tmp_path):
    gray = [save(tmp_path / "g" / f"{i}.png", i, size=(30, 24)) for i in range(3)]
    assert infer_spec(gray) == InputSpec(1, 24, 30)
    colour = save_colour(tmp_path / "c.png", (1, 2, 3), size=(30, 24))
    assert infer_spec([*gray, colour]).channels == 3
    gray_rgb = save(tmp_path / "gray_rgb.png", 7, size=(30, 24), mode="RGB")
    assert infer_spec([*gray, gray_rgb]).channels == 1  # RGB file, but no colour in it
    big = [save(tmp_path / "b" / f"{i}.png", i, size=(300, 200 + i)) for i in range(3)]
    spec = infer_spec(big)
    assert (spec.height, spec.width) == (64, 64)
    assert spec.resize == "shorter_side_crop"
    mixed = [save(tmp_path / "m" / f"{i}.png", i, size=(41 + i, 50)) for i in range(3)]
    spec = infer_spec(mixed)  # median shorter side 42 -> a multiple of 4
    assert (spec.height, spec.width) == (40, 40)
    with pytest.raises(DataError):
        infer_spec([])
