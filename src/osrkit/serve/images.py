"""The images of a request decoded into a batch, within a pixel budget.

Each upload is opened lazily (Pillow reads the header only) and its size checked
against ``max_pixels`` before a pixel is decoded: a small PNG can claim 13000 x 13000
pixels and cost 169 MB and seconds of CPU to decode. Only formats whose header gives
the size that decoding allocates are opened (``ACCEPTED_FORMATS``); formats such as
ICO or ICNS read nested images whose size the outer header does not state.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from osrkit.data.spec import InputSpec
from osrkit.data.transforms import ImageTooLarge, load_opened, open_image, to_spec_array
from osrkit.errors import OsrkitError
from osrkit.serve.uploads import RequestError

log = logging.getLogger("osrkit.serve")

ACCEPTED_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")
DEFAULT_MAX_PIXELS = 4096 * 4096  # a 16-megapixel photo; Pillow itself stops at 179 million
INLINE_DECODE_PIXELS = 256 * 1024  # fewer pixels a request may be decoded on the event loop
# formats whose decoding time is bounded by their pixels and bytes; not JPEG (a progressive
# JPEG of few pixels can hold thousands of scans) nor TIFF (which can hold JPEG)
INLINE_FORMATS = ("PNG", "GIF", "BMP")
TRIM_PIXELS = 4 * 1024 * 1024  # after decoding more, freed heap goes back to the system


def open_upload(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """``data`` opened lazily (``open_image``: header read, nothing decoded), refused with
    a 413 when it has more than ``max_pixels`` pixels and a 400 when it is not an image we
    accept."""
    if not data:
        raise RequestError(400, f"{name}: empty file; supply a PNG or JPEG file")
    try:
        return open_image(io.BytesIO(data), Path(name), max_pixels, ACCEPTED_FORMATS)
    except ImageTooLarge as exc:
        raise RequestError(413, over_limit(name, exc.size, max_pixels)) from None
    except OsrkitError as exc:
        raise RequestError(400, str(exc)) from None


def over_limit(name: str, size: str, max_pixels: int) -> str:
    """The one line for an image of ``size`` over ``max_pixels``."""
    return (
        f"{name}: image of {size} pixels is over the limit of {max_pixels:,} pixels; resize it, "
        "or raise the limit with osrkit serve --max-pixels (ServeOptions.max_pixels)"
    )


def open_uploads(uploads: list[tuple[str, bytes]], max_pixels: int) -> list[tuple[str, Image.Image]]:
    """(name, lazily opened image) of each upload, every header checked before any
    image is decoded; the images opened so far are closed when one is refused."""
    opened: list[tuple[str, Image.Image]] = []
    try:
        for name, data in uploads:
            opened.append((name, open_upload(data, name, max_pixels)))
    except RequestError:
        for _, image in opened:
            image.close()
        raise
    return opened


def pixels(opened: list[tuple[str, Image.Image]]) -> int:
    """The pixels that decoding ``opened`` will allocate (their first frames)."""
    return sum(image.width * image.height for _, image in opened)


def decodes_quickly(opened: list[tuple[str, Image.Image]]) -> bool:
    """Whether decoding ``opened`` is cheap enough for the event loop (a thread hand-off
    costs more): few pixels, in formats whose decoding time they bound."""
    return pixels(opened) <= INLINE_DECODE_PIXELS and all(i.format in INLINE_FORMATS for _, i in opened)


def decode_opened(opened: list[tuple[str, Image.Image]], spec: InputSpec) -> np.ndarray:
    """A uint8 batch ``(N, C, H, W)`` in ``spec`` of images opened by ``open_uploads``
    (bad image data: a 400 naming the file). One image is decoded at a time and shrunk to
    ``spec`` before the next: the memory held is that of the largest image."""
    arrays = []
    try:
        for name, image in opened:
            try:
                arrays.append(to_spec_array(load_opened(image, Path(name), on_disk=False), spec))
            except ImageTooLarge:  # memory ran out
                raise RequestError(
                    413, f"{name}: image too large to decode in this server's memory"
                ) from None
            except OsrkitError as exc:
                raise RequestError(400, str(exc)) from None
            finally:
                image.close()
    finally:
        for _, image in opened:
            image.close()
    if pixels(opened) > TRIM_PIXELS:  # sizes stay known after close
        release_free_memory()
    return np.stack(arrays)


def decode_batch(
    uploads: list[tuple[str, bytes]], spec: InputSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A uint8 batch ``(N, C, H, W)`` in ``spec`` (bad images: a 400 naming the file,
    images over ``max_pixels``: a 413 before anything is decoded). It stays uint8 to the
    model, whose ``as_input_tensor`` makes it float, as for every other caller."""
    return decode_opened(open_uploads(uploads, max_pixels), spec)


@functools.cache
def _malloc_trim() -> ctypes._CFuncPtr | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None


def release_free_memory() -> None:
    """Hand the heap's free pages back to the system (glibc's ``malloc_trim``).

    Pillow allocates a large image in blocks below glibc's mmap threshold, which grows
    as large blocks are freed, so they come from the heap of the decoding thread; that
    heap keeps the pages once freed and the server's memory stayed at its peak after a
    burst of large images. ``malloc_trim`` returns them; other C libraries: nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
