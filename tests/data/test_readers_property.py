"""Property-based tests of the image readers (issue 22, "Nothing lost, no one in"): any
bytes, any mode, any metadata give either a correct read or one ``OsrkitError`` line.

"Correct read": uint8 ``(C, H, W)`` in the spec, and for images generated here the pixels
of the in-memory image (or the solid colour drawn) within the codec's tolerance. Anything
else escaping (``NotImplementedError``, ``ValueError``, ...) fails the test. Profiles:
tests/conftest.py (``HYPOTHESIS_PROFILE=thorough`` for a long manual run).
"""

from __future__ import annotations

import functools
import io
import struct
import tempfile
import zlib
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
# Pillow warns of what damaged files hold (truncated TIFF tags, sizes near its bomb limit)
pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning:PIL", "ignore::PIL.Image.DecompressionBombWarning"
)

from hypothesis import example, given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from osrkit.data.folder import IMAGE_SUFFIXES, load_images, read_image_folder  # noqa: E402
from osrkit.data.lazy import LazyImageSet  # noqa: E402
from osrkit.data.spec import CIFAR10_SPEC, MNIST_SPEC, InputSpec  # noqa: E402
from osrkit.data.transforms import ImageTooLarge, decode_image_bytes, to_spec_array  # noqa: E402
from osrkit.errors import DataError, OsrkitError  # noqa: E402

SPECS = (MNIST_SPEC, CIFAR10_SPEC, InputSpec(3, 9, 13, "shorter_side_crop"))
MAX_PIXELS = 1 << 20  # decoding stays fast; larger claims are refused before decoding
MODES = ("1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "LA", "PA", "I;16")
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "TGA", "ICO", "DDS", "BLP", "SGI", "PCX")
LOSSLESS = {"PNG", "BMP", "TIFF", "PPM", "TGA", "SGI", "PCX"}


def assert_one_line(exc: BaseException) -> None:
    assert isinstance(exc, OsrkitError), f"{type(exc).__name__} escaped: {exc}"
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)


def read_or_refuse(data: bytes, max_pixels: int = MAX_PIXELS) -> list[np.ndarray] | None:
    """Every spec's array of ``data``, or None after checking the refusal is one line."""
    try:
        image = decode_image_bytes(data, "upload.bin", max_pixels=max_pixels)
        arrays = [to_spec_array(image, spec) for spec in SPECS]
    except OsrkitError as exc:
        assert_one_line(exc)
        assert "upload.bin" in str(exc) or "mode" in str(exc)
        return None
    for arr, spec in zip(arrays, SPECS, strict=True):
        assert arr.shape == spec.shape and arr.dtype == np.uint8 and arr.flags.c_contiguous
    return arrays


def solid(mode: str, size: tuple[int, int], rgb: tuple[int, int, int]) -> Image.Image:
    """A one-colour image of ``mode`` (opaque where it has alpha)."""
    if mode == "I;16":
        return Image.new(mode, size, rgb[0] * 257)
    if mode in ("I", "F"):
        return Image.new(mode, size, rgb[0])
    if mode == "LAB":
        return Image.new(mode, size, rgb)
    if mode == "1":  # no dithering: one colour stays one colour
        return Image.new(mode, size, int(sum(rgb) > 382))
    if mode in ("P", "PA"):
        return Image.new("RGB", size, rgb).quantize(colors=1).convert(mode)
    return Image.new("RGBA", size, (*rgb, 255)).convert(mode)


def encode(image: Image.Image, fmt: str, **kw: object) -> bytes | None:
    buf = io.BytesIO()
    try:
        image.save(buf, fmt, **kw)
    except Exception:  # the writer refuses this mode or metadata: not what is tested
        return None
    return buf.getvalue()


@functools.cache
def saveable(native: bool = False) -> list[tuple[str, str]]:
    """The (mode, format) pairs Pillow writes and reads back in that format (``native``:
    and in that mode, so the file holds the pixels of the image in memory)."""
    pairs = []
    for mode in MODES:
        for fmt in FORMATS:
            data = encode(solid(mode, (4, 3), (9, 99, 199)), fmt)
            if data is not None:
                with Image.open(io.BytesIO(data)) as img:
                    if img.format == fmt and (img.mode == mode or not native):
                        pairs.append((mode, fmt))
    return pairs


@st.composite
def generated_images(draw: st.DrawFn, native: bool = False) -> tuple[Image.Image, str, bytes]:
    mode, fmt = draw(st.sampled_from(saveable(native)))
    size = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    rgb = draw(st.tuples(*[st.integers(0, 255)] * 3))
    image = solid(mode, size, rgb)
    if mode == "P" and fmt in ("PNG", "GIF") and draw(st.booleans()):
        image.info["transparency"] = 0  # palette with transparency: composited on black
    data = encode(image, fmt)
    assert data is not None, (mode, fmt, size)
    return image, fmt, data


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` truncated, with bytes overwritten (mostly in the header), or with bytes inserted."""
    how = draw(st.sampled_from(["truncate", "overwrite", "insert"]))
    out = bytearray(data)
    if how == "truncate":
        return bytes(out[: draw(st.integers(0, max(0, len(out) - 1)))])
    for _ in range(draw(st.integers(1, 6))):
        at = draw(st.integers(0, min(len(out), draw(st.sampled_from([64, 256, len(out)])))))
        chunk = draw(st.binary(min_size=1, max_size=8))
        out[at : at + (len(chunk) if how == "overwrite" else 0)] = chunk
    return bytes(out)


def _dds_without_pixel_format() -> bytes:
    data = bytearray(encode(Image.new("L", (4, 4), 7), "DDS"))
    data[80:84] = bytes(4)  # DDS_PIXELFORMAT.dwFlags
    return bytes(data)


def _blp_of_unknown_compression() -> bytes:
    data = bytearray(encode(Image.new("P", (4, 4), 7), "BLP"))
    data[4:8] = (7).to_bytes(4, "little")
    return bytes(data)


@example(b"")
@example(b"\x89PNG\r\n\x1a\n")
@example(_dds_without_pixel_format())  # NotImplementedError from Pillow's DDS plugin escaped
@example(_blp_of_unknown_compression())  # BLPFormatError (a NotImplementedError) escaped
@given(st.binary(max_size=1024))
def test_arbitrary_bytes_read_or_one_line(data):
    read_or_refuse(data)


@given(st.data())
def test_damaged_images_read_or_one_line(data):
    _, _, encoded = data.draw(generated_images())
    read_or_refuse(data.draw(damaged(encoded)))


@given(generated_images(native=True))
def test_valid_images_read_as_their_pixels(generated):
    """Every mode and format reads as the image in memory does, a solid colour as its colour."""
    image, fmt, data = generated
    tolerance = 0 if fmt in LOSSLESS or image.mode in ("1", "L", "P") and fmt == "GIF" else 12
    decoded = read_or_refuse(data, max_pixels=None)
    assert decoded is not None, f"{image.mode} {fmt} {image.size} refused"
    for arr, spec in zip(decoded, SPECS, strict=True):
        expected = to_spec_array(image, spec)
        assert np.abs(arr.astype(int) - expected).max() <= tolerance, (image.mode, fmt, spec)
        assert (expected == expected.reshape(spec.channels, -1)[:, :1, None]).all()  # still solid
    if image.mode == "RGB":
        rgb = np.array(image.getpixel((0, 0))).reshape(3, 1, 1)
        assert np.abs(decoded[1].astype(int) - rgb).max() <= tolerance


def test_cielab_tiff_reads_as_srgb():
    """A CIELab TIFF (Pillow mode LAB) read for RGB models but failed for grayscale ones
    (ValueError "conversion from LAB to RGB not supported"); now L is taken through RGB.
    L*=100, a*=b*=0 is white."""
    data = encode(Image.new("LAB", (5, 4), (255, 128, 128)), "TIFF")
    for arr in read_or_refuse(data):
        assert arr.min() >= 250


def test_premultiplied_and_float_images_in_memory():
    """La failed in convert() (ValueError); NaN in a float image made the whole image NaN
    before the cast to uint8 (0 on x86, undefined elsewhere)."""
    la = to_spec_array(Image.new("La", (3, 2), (100, 255)), MNIST_SPEC)
    assert (la == 100).all()
    f = Image.fromarray(np.array([[np.nan, np.inf, 2.0, 4.0]], dtype=np.float32), "F")
    assert to_spec_array(f, InputSpec(1, 1, 4))[0, 0].tolist() == [0, 255, 127, 255]


def _exif(entry_type: int, count: int, payload: bytes) -> bytes:
    """Little-endian EXIF (TIFF) with one IFD entry: the orientation tag as given."""
    value = payload[:4].ljust(4, b"\0") if len(payload) <= 4 else struct.pack("<I", 26)
    ifd = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, entry_type, count) + value + bytes(4)
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + (payload if len(payload) > 4 else b"")


TURNS = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270"}
TURNS |= {7: "TRANSVERSE", 8: "ROTATE_90"}


@example(3, 1, struct.pack("<H", 6), "PNG")
@example(3, 1, struct.pack("<H", 9), "JPEG")
@example(2, 4, b"abc\0", "PNG")
@example(5, 1, struct.pack("<II", 6, 1), "JPEG")
@example(3, 2**32 - 1, b"\x06\0", "PNG")
@given(
    st.integers(0, 20) | st.just(65535),
    st.integers(0, 8) | st.integers(0, 2**32 - 1),
    st.binary(max_size=16),
    st.sampled_from(["PNG", "JPEG", "WEBP", "TIFF"]),
)
def test_exif_orientation_of_any_type_and_value(entry_type, count, payload, fmt):
    pixels = np.zeros((3, 5, 3), np.uint8)
    pixels[0, 0] = 255  # one marked corner shows how the image was turned
    image = Image.fromarray(pixels)
    data = encode(image, fmt, exif=_exif(entry_type, count, payload))
    if data is None:
        return  # Pillow refuses to write that tag in this format: nothing to read
    decoded = read_or_refuse(data)
    assert decoded is not None
    with Image.open(io.BytesIO(data)) as raw:
        orientation = raw.getexif().get(0x0112)
    if fmt == "PNG" and entry_type == 3 and count == 1 and orientation in TURNS:
        turned = image.transpose(getattr(Image.Transpose, TURNS[orientation]))
        assert np.array_equal(decode_image_bytes(data), turned), orientation


@given(st.binary(min_size=0, max_size=700), st.sampled_from(["PNG", "JPEG", "TIFF", "WEBP"]))
def test_any_icc_profile_is_ignored_or_refused_in_one_line(icc, fmt):
    image = solid("RGB", (6, 5), (20, 140, 230))
    data = encode(image, fmt, icc_profile=icc)
    if data is not None:
        read_or_refuse(data)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF"])
def test_animated_images_read_their_first_frame(fmt):
    frames = [Image.new("RGB", (8, 6), (200 - 60 * i, 30 * i, 0)) for i in range(3)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=50)
    first = to_spec_array(frames[0], CIFAR10_SPEC)
    arr = read_or_refuse(data)[1]
    assert np.abs(arr.astype(int) - first).max() <= (0 if fmt in LOSSLESS else 12)


def _png_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("L", (4, 4), 9), "PNG"))
    data[16:24] = struct.pack(">II", width, height)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the chunk's CRC
    return bytes(data)


@example(0, 4)
@example(4, 0)
@example(100_000, 100_000)  # refused before decoding, however few bytes claim it
@example(2**31 - 1, 2**31 - 1)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_any_claimed_size_reads_or_is_refused_before_decoding(width, height):
    data = _png_claiming(width, height)
    if width * height > MAX_PIXELS:  # refused from the header, nothing decoded
        with pytest.raises(ImageTooLarge) as info:
            decode_image_bytes(data, "upload.bin", max_pixels=MAX_PIXELS)
        assert_one_line(info.value)
    else:
        read_or_refuse(data)


def test_default_pixel_limit_is_pillows_and_names_the_size():
    over = pytest.raises(DataError, match="40x40 pixels, over the 1,000")
    with mock.patch.object(Image, "MAX_IMAGE_PIXELS", 1000), over as info:
        decode_image_bytes(_png_claiming(40, 40), "big.png")
    assert_one_line(info.value)


# ---------------------------------------------------------------- folders, eager and lazy
@st.composite
def folder_files(draw: st.DrawFn) -> list[tuple[str, bytes, bool]]:
    """Files for a two-class folder: (class, bytes, surely readable)."""
    files = []
    for _ in range(draw(st.integers(2, 5))):
        image, fmt, data = draw(generated_images())
        broken = draw(st.sampled_from([None, "damaged", "garbage"]))
        if broken == "damaged":
            data = draw(damaged(data))
        elif broken == "garbage":
            data = draw(st.binary(max_size=64))
        files.append((f"{fmt.lower()}", data, broken is None))
    return files


def _write(root: Path, files: list[tuple[str, bytes, bool]]) -> tuple[list[Path], set[str]]:
    paths, doubtful = [], set()
    for i, (suffix, data, readable) in enumerate(files):
        path = root / ("a" if i % 2 == 0 else "b") / f"{i}.{'tif' if suffix == 'tiff' else suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        paths.append(path)
        if not readable:
            doubtful.add(str(path))
    return paths, doubtful


@given(folder_files())
def test_image_folder_reads_or_names_a_bad_file_in_one_line(files):
    files = [f for f in files if f".{f[0]}" in IMAGE_SUFFIXES]
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(Image, "MAX_IMAGE_PIXELS", MAX_PIXELS):
        root = Path(tmp) / "data"
        paths, doubtful = _write(root, files)
        if not paths or not (root / "a").is_dir() or not (root / "b").is_dir():
            return
        try:
            data = read_image_folder(root)
        except OsrkitError as exc:
            assert_one_line(exc)
            assert any(p in str(exc) for p in doubtful), f"a readable file was refused: {exc}"
            return
        assert data.images.dtype == torch.uint8 and data.images.shape == (len(paths), *data.spec.shape)
        assert sorted(data.paths) == sorted(map(str, paths))


@given(folder_files())
def test_lazy_reader_reads_or_refuses_as_the_in_memory_one(files):
    spec = CIFAR10_SPEC
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(Image, "MAX_IMAGE_PIXELS", MAX_PIXELS):
        paths, _ = _write(Path(tmp), files)
        lazy = LazyImageSet([str(p) for p in paths], torch.zeros(len(paths)), ["a"], spec, workers=0)
        try:
            eager = torch.from_numpy(load_images(paths, spec=spec))
        except OsrkitError as exc:
            assert_one_line(exc)
            with pytest.raises(DataError) as info:
                list(lazy.batches([range(len(paths))]))
            assert str(info.value) == str(exc)
            return
        (images,) = lazy.batches([range(len(paths))])
        assert torch.equal(images, eager)


def test_lazy_worker_meeting_a_plugin_error_is_one_line(tmp_path):
    """A DDS file that Pillow's plugin answers with NotImplementedError reached the main
    process as the DataLoader's multi-line "Caught NotImplementedError in DataLoader worker"."""
    good = tmp_path / "good.png"
    good.write_bytes(encode(Image.new("RGB", (5, 5), (1, 2, 3)), "PNG"))
    bad = tmp_path / "bad.dds"
    bad.write_bytes(_dds_without_pixel_format())
    lazy = LazyImageSet([str(good), str(bad)], torch.zeros(2), ["a"], CIFAR10_SPEC, workers=1)
    with pytest.raises(DataError, match="bad.dds") as info:
        list(lazy.batches([[0, 1]]))
    assert_one_line(info.value)
