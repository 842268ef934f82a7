"""The images of a ``POST /v1/predict`` request: read within the size limit and taken
apart (multipart files or a JSON body of base64 strings); ``images`` decodes them. Every
problem is a ``RequestError``: an HTTP status and one line."""

from __future__ import annotations

import base64
import binascii
from typing import Any

FILE_FIELDS = ("files", "file")
INLINE_PARSE_BYTES = 256 * 1024  # smaller bodies are taken apart on the event loop
# commas a JSON body may hold per image allowed: one between images, one between names,
# the rest for commas inside names
JSON_COMMAS_PER_IMAGE = 16


class RequestError(Exception):
    """A bad request: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused (413) as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"request body of {int(declared)} bytes is over the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_uploads(body: bytes, content_type: str, max_images: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in a request ``body``, checked against ``max_images``
    before any image is taken out of it."""
    if not body:
        raise RequestError(
            400, 'empty request body; send images as multipart files ("files") or JSON {"images": [...]}'
        )
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        uploads = multipart_files(body, content_type, max_images)
    elif kind == "application/json":
        uploads = json_images(body, max_images)
    else:
        raise RequestError(
            415, f"unsupported content type {kind or 'none'!r}; use multipart/form-data or application/json"
        )
    if not uploads:
        raise RequestError(400, "no images in the request")
    return uploads


def multipart_files(body: bytes, content_type: str, max_images: int) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each file part of a multipart/form-data ``body`` (a 413 past
    ``max_images`` parts, before the rest is parsed).

    python-multipart's streaming parser, fed the body already in memory. Starlette's
    ``request.form()`` runs the same parser but spools every file through a temporary
    file object and an async read: 113 against 34 us for one small PNG here, on the
    event loop that serves every request."""
    from python_multipart import MultipartParser  # the serve extra, as below
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        raise RequestError(400, "malformed multipart body (no boundary in the content type)")
    parts: list[tuple[dict[bytes, bytes], bytes]] = []
    headers: dict[bytes, bytes] = {}
    field: list[bytes] = []
    value: list[bytes] = []
    data: list[bytes] = []
    ended: list[bool] = []

    def begin() -> None:
        headers.clear()
        data.clear()

    def header_end() -> None:
        headers[b"".join(field).lower()] = b"".join(value)
        field.clear()
        value.clear()

    def end() -> None:
        if len(parts) >= max_images:
            raise RequestError(
                413, f"more than {max_images} images in one request; at most {max_images} are allowed"
            )
        parts.append((dict(headers), b"".join(data)))

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": begin,
            "on_header_field": lambda b, s, e: field.append(b[s:e]),
            "on_header_value": lambda b, s, e: value.append(b[s:e]),
            "on_header_end": header_end,
            "on_part_data": lambda b, s, e: data.append(b[s:e]),
            "on_part_end": end,
            "on_end": lambda: ended.append(True),
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise RequestError(400, f"malformed multipart body ({str(exc).splitlines()[0][:200]})") from None
    if not ended:
        raise RequestError(400, "malformed multipart body (it ends before its closing boundary)")
    uploads = []
    for part_headers, content in parts:
        options = parse_options_header(part_headers.get(b"content-disposition", b""))[1]
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name not in FILE_FIELDS:
            raise RequestError(400, f"unexpected field {name!r}; send images as files in the field 'files'")
        filename = options.get(b"filename")
        if filename is None:
            raise RequestError(400, f"field {name!r} holds text, not a file; send images as file uploads")
        uploads.append((filename.decode("utf-8", "replace") or f"image {len(uploads)}", content))
    return uploads


def json_images(body: bytes, max_images: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image of a JSON body ``{"images": [base64, ...], "names": [...]}``.

    orjson parses it: nesting deeper than 1024 is its error, not a recursion limit. A body
    with more commas than a request of ``max_images`` images and names can hold is refused
    before parsing, which would build every value of a list of millions first; the images
    are counted before any base64 is decoded."""
    import orjson  # the serve extra, imported where the service runs

    commas = body.count(b",")
    if commas > JSON_COMMAS_PER_IMAGE * max_images + 16:
        raise RequestError(
            413,
            f"JSON body holds {commas:,} commas, more than {max_images} images and their names need; "
            f"at most {max_images} images are allowed in one request",
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        cause = "nested too deeply" if "depth" in str(exc) else exc.__class__.__name__
        raise RequestError(400, f"body is not valid JSON ({cause})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise RequestError(400, 'JSON body must be an object {"images": ["<base64>", ...]}')
    extra = set(payload) - {"images", "names"}
    if extra:
        first = sorted(extra)[0]
        raise RequestError(400, f"unexpected field {first!r}; the JSON body takes images and names")
    images = payload["images"]
    if len(images) > max_images:
        raise RequestError(413, f"{len(images)} images in one request; at most {max_images} are allowed")
    names = payload.get("names") or [f"images[{i}]" for i in range(len(images))]
    if not isinstance(names, list) or len(names) != len(images):
        raise RequestError(400, "names must be a list with one name per image")
    out = []
    for i, (name, text) in enumerate(zip(names, images)):
        if not isinstance(text, str):
            raise RequestError(400, f"images[{i}] is not a base64 string")
        try:
            out.append((str(name), base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{i}] is not valid base64") from None
    return out
