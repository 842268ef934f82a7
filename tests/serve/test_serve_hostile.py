"""``osrkit serve`` holds its resources against hostile input (issue 22): images over the
pixel cap refused from their header in every accepted format, the image count checked
before any base64 is decoded, deep or huge JSON a 4xx, large decoding off the event
loop, slow clients cut off by the request timeout. Small images and crafted headers:
nothing here allocates what the attacks would."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import struct
import threading
import time
import warnings
import zlib
from unittest import mock

import pytest
from PIL import Image

from osrkit.data.spec import InputSpec
from osrkit.perf.serve_load import free_port, start_server, stop_server
from osrkit.serve import ServeOptions
from osrkit.serve import images as serve_images
from osrkit.serve.images import ACCEPTED_FORMATS, DEFAULT_MAX_PIXELS, decode_batch, open_uploads
from osrkit.serve.uploads import RequestError, json_images, parse_uploads

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

SPEC = InputSpec(1, 28, 28)


def encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buf, fmt)
    return buf.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` grayscale pixels, with two rows of
    data: what a 169-megapixel bomb looks like to anything reading only the header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1) * 2)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.mark.parametrize("fmt", ACCEPTED_FORMATS)
def test_every_accepted_format_over_the_pixel_cap_is_413_before_decoding(fmt):
    data = encoded(fmt)
    assert decode_batch([("ok", data)], SPEC, max_pixels=64 * 48).shape == (1, 1, 28, 28)
    with (
        mock.patch("PIL.ImageFile.ImageFile.load", side_effect=AssertionError("decoded")),
        pytest.raises(RequestError) as err,
    ):
        decode_batch([("big." + fmt.lower(), data)], SPEC, max_pixels=64 * 48 - 1)
    message = str(err.value)
    assert err.value.status == 413 and "\n" not in message
    assert f"big.{fmt.lower()}: image of 64x48 pixels is over the limit of 3,071 pixels" in message
    assert "--max-pixels" in message and "ServeOptions.max_pixels" in message


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_small_png_claiming_169_megapixels_is_refused_from_its_header():
    """The issue's bomb: 13000 x 13000 grayscale, under Pillow's own limit, was decoded."""
    data = png_claiming(13000, 13000)
    assert len(data) < 1000 and DEFAULT_MAX_PIXELS < 13000 * 13000
    with pytest.raises(RequestError) as err:
        open_uploads([("ok.png", encoded("PNG")), ("bomb.png", data)], DEFAULT_MAX_PIXELS)
    assert err.value.status == 413 and "bomb.png: image of 13000x13000 pixels" in str(err.value)


def test_a_png_over_pillows_own_limit_is_413_not_400():
    with pytest.raises(RequestError) as err:
        open_uploads([("huge.png", png_claiming(20000, 20000))], DEFAULT_MAX_PIXELS)
    assert err.value.status == 413 and "huge.png: image of more than 178,956,970 pixels" in str(err.value)


def test_formats_whose_header_does_not_bound_decoding_are_refused():
    """ICO (and ICNS, ...) decode nested images whose size the outer header does not state."""
    with pytest.raises(RequestError) as err:
        decode_batch([("icon.ico", encoded("ICO", (16, 16)))], SPEC)
    assert err.value.status == 400
    assert "icon.ico: not a readable image (not a PNG, JPEG, GIF, BMP, TIFF or WebP file)" in str(err.value)


@pytest.mark.parametrize(
    "data, cause",
    [
        (encoded("PNG")[:60], "truncated or corrupt image data"),
        (encoded("JPEG")[:300], "truncated or corrupt image data"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "not a readable image"),
    ],
)
def test_truncated_and_corrupt_images_are_one_line_400s(data, cause):
    with pytest.raises(RequestError) as err:
        decode_batch([("cut.img", data)], SPEC)
    assert err.value.status == 400 and cause in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("where", ["open", "load"])
@pytest.mark.parametrize("error", [IndexError("list index out of range"), struct.error("unpack requires")])
def test_any_exception_of_a_pillow_plugin_is_a_one_line_400(where, error):
    """Pillow's format plugins raise IndexError, struct.error, ... on malformed data."""
    data = encoded("GIF")
    target = "PIL.Image.open" if where == "open" else "PIL.ImageFile.ImageFile.load"
    with mock.patch(target, side_effect=error), pytest.raises(RequestError) as err:
        decode_batch([("odd.gif", data)], SPEC)
    assert err.value.status == 400 and err.value.args[0].startswith("odd.gif: not a readable image (")


def test_image_count_is_checked_before_any_base64_is_decoded():
    body = b'{"images": [' + b",".join([b'"@not base64@"'] * 65) + b"]}"
    with (
        mock.patch("base64.b64decode", side_effect=AssertionError("decoded")),
        pytest.raises(RequestError) as err,
    ):
        json_images(body, max_images=64)
    assert err.value.status == 413 and "65 images in one request; at most 64" in str(err.value)


def test_a_json_list_of_millions_is_refused_before_parsing():
    body = b'{"images": [' + b",".join([b'"AAAA"'] * 20000) + b"]}"
    with mock.patch("orjson.loads", side_effect=AssertionError("parsed")), pytest.raises(RequestError) as err:
        parse_uploads(body, "application/json", 64)
    assert err.value.status == 413 and "at most 64 images are allowed" in str(err.value)


def test_deeply_nested_json_is_a_400_not_a_recursion_error():
    with pytest.raises(RequestError) as err:
        parse_uploads(b"[" * 100_000 + b"]" * 100_000, "application/json", 64)
    assert err.value.status == 400 and "nested too deeply" in str(err.value)
    with pytest.raises(RequestError) as err:
        parse_uploads(b'{"images": [' + b"[" * 2000 + b"]" * 2000 + b"]}", "application/json", 64)
    assert err.value.status == 400


def test_large_decoding_frees_its_memory_and_small_does_not_trim(monkeypatch):
    calls = []
    monkeypatch.setattr(serve_images, "release_free_memory", lambda: calls.append(1))
    decode_batch([("a.png", encoded("PNG", (28, 28)))], SPEC)
    assert calls == []
    monkeypatch.setattr(serve_images, "TRIM_PIXELS", 100)
    decode_batch([("a.png", encoded("PNG", (28, 28)))], SPEC)
    assert calls == [1]


def test_release_free_memory_runs_here():
    import platform

    if platform.libc_ver()[0] == "glibc":  # the trim is found where it exists
        assert serve_images._malloc_trim() is not None
    serve_images.release_free_memory()  # glibc: malloc_trim; elsewhere nothing


def test_serve_limits_are_checked_and_named(tmp_path, capsys):
    with pytest.raises(Exception, match="max-pixels must be at least 1"):
        ServeOptions(max_pixels=0)
    with pytest.raises(Exception, match="request-timeout must be in"):
        ServeOptions(request_timeout_s=0)
    with pytest.raises(Exception, match="max-connections must be at least 1"):
        ServeOptions(max_connections=0)
    from osrkit.cli import main

    try:
        code = main(["serve", str(tmp_path / "m"), "--request-timeout", "nan"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "--request-timeout: must be in (0, 3600]" in err


# --- the app, in process: where decoding runs, what the OpenAPI schema says ---


@pytest.fixture(scope="module")
def client(fitted):
    with warnings.catch_warnings():  # starlette's hint to use another client library
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from osrkit.serve import create_app

    with TestClient(create_app(fitted, ServeOptions(worker="thread", max_pixels=600 * 600))) as c:
        yield c


def test_large_images_are_decoded_off_the_event_loop_and_small_ones_on_it(client, monkeypatch):
    """A small upload of many pixels (the bomb was 164 KB) once decoded on the event loop."""
    from osrkit.serve import app as serve_app

    threads = []
    real = serve_app.decode_opened

    def recording(opened, spec):
        threads.append(threading.current_thread().name)
        return real(opened, spec)

    monkeypatch.setattr(serve_app, "decode_opened", recording)
    small, large, jpeg = encoded("PNG", (28, 28)), encoded("PNG", (600, 600)), encoded("JPEG", (28, 28))
    assert len(large) < 16 * 1024
    for data in (small, large, jpeg):
        r = client.post("/v1/predict", files=[("files", ("x", data, "image/png"))])
        assert r.status_code == 200, r.text
    # a small JPEG too: a progressive one of few pixels can hold thousands of scans
    assert [name.startswith("osrkit-decode") for name in threads] == [False, True, True]
    r = client.post("/v1/predict", files=[("files", ("x.png", encoded("PNG", (601, 600)), "image/png"))])
    assert r.status_code == 413 and "over the limit of 360,000 pixels" in r.json()["error"]


def test_openapi_documents_the_bodies_and_every_error_response(client):
    schema = client.get("/openapi.json").json()
    predict = schema["paths"]["/v1/predict"]["post"]
    assert set(predict["requestBody"]["content"]) == {"multipart/form-data", "application/json"}
    for status in ("400", "408", "413", "415", "503"):
        body = predict["responses"][status]["content"]["application/json"]["schema"]
        assert body["required"] == ["error"]
    ok = predict["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok["properties"]["predictions"]["items"]["required"][:2] == ["name", "label"]
    assert "503" in schema["paths"]["/readyz"]["get"]["responses"]


# --- slow clients: uvicorn with the guarded protocol, in a thread ---


async def read_body_app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/early":  # answers before the body is in, as a 404 or 413 does
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})
        return
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


@contextlib.contextmanager
def guarded_server(evict: bool, timeout: float = 0.4, base: type | None = None):
    """uvicorn with the guarded protocol (3 connections at most; of ``base``, by default
    uvicorn's choice) in a thread; its host and port."""
    from osrkit.serve.guard import guarded_protocol, uvicorn_protocol

    port = free_port()
    config = uvicorn.Config(
        read_body_app,
        host="127.0.0.1",
        port=port,
        http=(
            uvicorn_protocol(timeout, 3 if evict else None)
            if base is None
            else guarded_protocol(base, timeout, 3 if evict else None)
        ),
        limit_concurrency=3,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield "127.0.0.1", port
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def guarded_url():
    with guarded_server(evict=True) as url:
        yield url


async def trickle(host: str, port: int, parts: list[bytes], pause: float) -> tuple[bytes, float]:
    """Send ``parts`` ``pause`` seconds apart; the response (b"" if none) and when the
    connection ended, in seconds."""
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    data = b""
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
            with contextlib.suppress(asyncio.TimeoutError):
                data = await asyncio.wait_for(reader.read(65536), pause)
                break  # an answer (or the end) came before the request was out
        data += await asyncio.wait_for(reader.read(), 5)
    except (ConnectionError, OSError):
        pass
    writer.close()
    return data, time.perf_counter() - t0


SLOW_HEADER = [b"POST / HTTP/1.1\r\n", *[b"x-a: b\r\n"] * 20]
SLOW_BODY = [b"POST /v1/predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n", *[b"x"] * 20]


@pytest.mark.parametrize("parts", [SLOW_HEADER, SLOW_BODY], ids=["header", "body"])
def test_a_request_trickling_in_gets_408_and_is_disconnected(guarded_url, parts):
    data, seconds = asyncio.run(trickle(*guarded_url, parts, 0.1))
    assert data.startswith(b"HTTP/1.1 408 ") and b"--request-timeout" in data
    assert seconds < 3


def test_a_request_answered_before_its_body_trickled_in_gets_no_second_answer(guarded_url):
    parts = [SLOW_BODY[0].replace(b"/v1/predict", b"/early"), *SLOW_BODY[1:]]
    data, seconds = asyncio.run(trickle(*guarded_url, parts, 0.1))
    assert data.startswith(b"HTTP/1.1 404 ") and b"408" not in data and seconds < 3


async def tricklers_then_prompt_clients(host: str, port: int) -> tuple[list, int, list]:
    """Three clients trickling headers, then a prompt one, then (once the tricklers are
    done) a prompt keep-alive client idling 0.3 s between requests: (trickler outcomes,
    the first prompt status, the keep-alive client's bodies)."""
    tricklers = [asyncio.create_task(trickle(host, port, SLOW_HEADER, 0.1)) for _ in range(3)]
    await asyncio.sleep(0.1)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as c:
        first = (await c.post("/", content=b"abc")).status_code
    trickled = await asyncio.gather(*tricklers)
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}") as c:
        bodies = []
        for _ in range(3):
            bodies.append((await c.post("/", content=b"abcd")).text)
            await asyncio.sleep(0.3)  # idle between requests is keep-alive's business
    return trickled, first, bodies


def test_tricklers_hold_the_connection_limit_until_the_request_timeout_without_eviction():
    """uvicorn's limit_concurrency counts connections sending nothing: without the guard's
    eviction three tricklers lock a prompt client out (503) until their timeout."""
    with guarded_server(evict=False) as (host, port):
        trickled, first, bodies = asyncio.run(tricklers_then_prompt_clients(host, port))
    assert first == 503 and bodies == ["4", "4", "4"]
    assert all(data.startswith(b"HTTP/1.1 408 ") for data, _ in trickled)


def test_a_new_connection_closes_the_longest_waiting_tricklers_and_prompt_clients_stay():
    with guarded_server(evict=True, timeout=2.0) as (host, port):
        trickled, first, bodies = asyncio.run(tricklers_then_prompt_clients(host, port))
    assert first == 200 and bodies == ["4", "4", "4"]
    # limit 3: the third trickler and the prompt client each closed the one waiting
    # longest, at once; the last trickler ran into the timeout
    seconds = sorted(seconds for _, seconds in trickled)
    assert seconds[1] < 1.5 and seconds[2] >= 2.0


def test_the_guard_works_on_uvicorns_h11_protocol_too():
    """httptools is the default where installed; h11 is uvicorn's fallback."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    with guarded_server(evict=True, base=H11Protocol) as (host, port):
        for parts in (SLOW_HEADER, SLOW_BODY):
            data, seconds = asyncio.run(trickle(host, port, parts, 0.1))
            assert data.startswith(b"HTTP/1.1 408 ") and seconds < 3
        _, first, bodies = asyncio.run(tricklers_then_prompt_clients(host, port))
    assert first == 200 and bodies == ["4", "4", "4"]


# --- the real server, its flags ---


def test_serve_flags_reach_the_server(fitted, tmp_path):
    folder = fitted.save_pretrained(tmp_path / "model")
    flags = ("--max-pixels", "1000", "--request-timeout", "0.5", "--max-connections", "8")
    proc, url = start_server(folder, *flags)
    try:
        limits = httpx.get(f"{url}/v1/model").json()["limits"]
        assert limits | {"max_pixels": 1000, "request_timeout_s": 0.5, "max_connections": 8} == limits
        png = encoded("PNG", (40, 40))
        r = httpx.post(f"{url}/v1/predict", files=[("files", ("big.png", png, "image/png"))], timeout=30)
        assert r.status_code == 413 and "--max-pixels" in r.json()["error"]
        body = {"images": [base64.b64encode(encoded("PNG", (28, 28))).decode()]}
        assert httpx.post(f"{url}/v1/predict", json=body, timeout=30).status_code == 200
        host, port = url.split("//")[1].split(":")
        data, _ = asyncio.run(trickle(host, int(port), SLOW_BODY, 0.1))
        assert data.startswith(b"HTTP/1.1 408 ")
        assert httpx.get(f"{url}/healthz").status_code == 200
    finally:
        code, err = stop_server(proc)
    assert code == 0 and "Traceback" not in err and "Exception in ASGI" not in err


def test_making_room_evicts_no_one_while_closing_connections_leave_room():
    """Connections already closing free their places: a new one at the limit must not close
    a waiting client then (the excess was negative, and ``waiting[:-1]`` closed all but one)."""
    from osrkit.serve.guard import guarded_protocol

    class Transport:
        def __init__(self, closing: bool) -> None:
            self.closing = closing

        def is_closing(self) -> bool:
            return self.closing

    protocol = guarded_protocol(asyncio.Protocol, timeout=1.0, max_connections=5)
    connections: set = set()
    expired: list = []

    def connection(closing: bool, waiting_since: float | None):
        c = protocol()
        c.connections, c.transport, c._waiting_since = connections, Transport(closing), waiting_since
        c._expired = lambda linger=True, c=c: expired.append(c)
        connections.add(c)
        return c

    for closing, since in ((True, None), (True, None), (False, 1.0), (False, 2.0)):
        connection(closing, since)
    connection(False, None)._make_room()  # 5 open, 2 of them closing: 3 count, under 5
    assert expired == []
    full = connection(False, None)  # 6 open, 2 closing: 4 count; this one makes 5, still fits
    full._make_room()
    assert expired == []
    connection(False, None)._make_room()  # 7 open, 2 closing: 5 count, one must go
    assert [c._waiting_since for c in expired] == [1.0]
