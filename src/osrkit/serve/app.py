"""The HTTP service: a FastAPI app around a loaded recognizer (``osrkit serve``).

Routes: ``POST /v1/predict`` (images as multipart files in the field ``files``, or a
JSON body ``{"images": ["<base64>", ...], "names": [...]}``), ``GET /v1/model``,
``GET /healthz`` (alive), ``GET /readyz`` (model loaded and warmed up) and FastAPI's
OpenAPI page at ``/docs``. Every error is a 4xx (or 5xx) with a one-line JSON body
``{"error": "..."}`` that names the problem; the server keeps serving.
"""

import base64
import binascii
import json
import logging
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .. import __version__
from ..data.spec import InputSpec
from ..data.transforms import decode_image_bytes, to_spec_array
from ..errors import ConfigError, OsrkitError
from ..predictions import input_spec_of, prediction_rows, thresholds_of
from ..runtime import usable_cores
from .batcher import MicroBatcher

log = logging.getLogger("osrkit.serve")

SERVE_EXTRA_HINT = "osrkit serve needs the serve extra: pip install 'osrkit[serve]'"
FILE_FIELDS = ("files", "file")


@dataclass(frozen=True)
class ServeOptions:
    """How ``osrkit serve`` listens, batches and limits requests."""

    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "torch"  # or "onnx"
    device: str = "auto"
    batching: bool = True
    max_batch: int = 64  # images per scored batch
    max_wait_ms: float = 0.0  # extra wait for more requests (0: batch whatever queued up)
    max_request_bytes: int = 16 * 1024 * 1024
    max_images: int = 64  # images per request
    threads: int = 0  # torch threads scoring (0: one less than the usable cores, at least 1)

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise ConfigError(f"unknown backend {self.backend!r}; use torch or onnx")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (automatic) or more, got {self.threads}")
        for name in ("max_batch", "max_request_bytes", "max_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"max-wait-ms must be between 0 and 1000, got {self.max_wait_ms}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")


class RequestError(Exception):
    """A bad request: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def scoring_threads(options: ServeOptions) -> int:
    """torch threads for the scoring thread: ``options.threads``, or by default one less
    than the usable cores (at least 1), leaving a core to the event loop. On 2 shared
    cores, torch's 2 OpenMP threads spinning beside the event loop made a batch-1
    forward pass 5-70x slower than 1 thread (BENCHMARKS.md, HTTP service)."""
    return options.threads or max(1, usable_cores() - 1)


INLINE_DECODE_BYTES = 256 * 1024  # smaller uploads are decoded on the event loop


class RequestLog:
    """Pure ASGI middleware: one INFO line per HTTP request (method, path, status,
    images, milliseconds). Starlette's ``@app.middleware("http")`` runs every request
    through extra tasks and memory streams (BaseHTTPMiddleware), 12% of the event
    loop's samples under load."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %d %d image(s) %.1f ms",
                    scope["method"],
                    scope["path"],
                    status,
                    scope.get("state", {}).get("images", 0),
                    1000 * (time.perf_counter() - t0),
                )


def model_info(model: Any, options: ServeOptions) -> dict:
    """What ``GET /v1/model`` returns."""
    onnx = options.backend == "onnx"
    spec = input_spec_of(model)
    info = {
        "class_names": list(model.class_names),
        "input_spec": spec.to_dict(),
        "decision_scorer": model.decision_scorer,
        "scorers": list(model.scorer_names if onnx else model.scorers_),
        "thresholds": dict(thresholds_of(model)),
        "backend": options.backend,
        "batching": {
            "enabled": options.batching,
            "max_batch": options.max_batch,
            "max_wait_ms": options.max_wait_ms,
        },
        "limits": {"max_request_bytes": options.max_request_bytes, "max_images": options.max_images},
        "versions": {"osrkit": __version__, "torch": torch.__version__},
    }
    if not onnx:
        info["backbone"] = model.backbone_name_
    return info


async def _read_body(request: Any, limit: int) -> bytes:
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


async def _uploads(request: Any, options: ServeOptions) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in the request, checked against the limits."""
    body = await _read_body(request, options.max_request_bytes)
    if not body:
        raise RequestError(
            400, 'empty request body; send images as multipart files ("files") or JSON {"images": [...]}'
        )
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        request._body = body  # Starlette parses the form from the body already read
        try:
            form = await request.form(max_files=options.max_images + 1, max_fields=options.max_images + 1)
        except Exception as exc:  # python-multipart's and Starlette's parse errors
            raise RequestError(400, f"malformed multipart body ({str(exc).splitlines()[0][:200]})") from None
        uploads = []
        for key, value in form.multi_items():
            if key not in FILE_FIELDS:
                raise RequestError(
                    400, f"unexpected field {key!r}; send images as files in the field 'files'"
                )
            if isinstance(value, str):
                raise RequestError(400, f"field {key!r} holds text, not a file; send images as file uploads")
            uploads.append((value.filename or f"image {len(uploads)}", await value.read()))
    elif kind == "application/json":
        uploads = _json_images(body)
    else:
        raise RequestError(
            415, f"unsupported content type {kind or 'none'!r}; use multipart/form-data or application/json"
        )
    if not uploads:
        raise RequestError(400, "no images in the request")
    if len(uploads) > options.max_images:
        raise RequestError(
            413, f"{len(uploads)} images in one request; at most {options.max_images} are allowed"
        )
    return uploads


def _json_images(body: bytes) -> list[tuple[str, bytes]]:
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"body is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list):
        raise RequestError(400, 'JSON body must be an object {"images": ["<base64>", ...]}')
    extra = set(payload) - {"images", "names"}
    if extra:
        raise RequestError(
            400, f"unexpected field {sorted(extra)[0]!r}; the JSON body takes images and names"
        )
    names = payload.get("names") or [f"images[{i}]" for i in range(len(payload["images"]))]
    if not isinstance(names, list) or len(names) != len(payload["images"]):
        raise RequestError(400, "names must be a list with one name per image")
    out = []
    for i, (name, text) in enumerate(zip(names, payload["images"])):
        if not isinstance(text, str):
            raise RequestError(400, f"images[{i}] is not a base64 string")
        try:
            out.append((str(name), base64.b64decode(text, validate=True)))
        except (binascii.Error, ValueError):
            raise RequestError(400, f"images[{i}] is not valid base64") from None
    return out


def _decode(uploads: list[tuple[str, bytes]], spec: InputSpec) -> torch.Tensor:
    """A float batch ``(N, C, H, W)`` in ``spec`` (bad images: a 400 naming the file)."""
    arrays = []
    for name, data in uploads:
        try:
            arrays.append(torch.from_numpy(to_spec_array(decode_image_bytes(data, name), spec)))
        except OsrkitError as exc:
            raise RequestError(400, str(exc)) from None
    return torch.stack(arrays).float().div_(255.0)


def create_app(model: Any, options: ServeOptions = ServeOptions()) -> Any:
    """The FastAPI app serving ``model`` (an ``OpenSetRecognizer`` or ``OnnxRecognizer``)."""
    try:
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool
        from starlette.exceptions import HTTPException
    except ImportError:
        raise ConfigError(SERVE_EXTRA_HINT) from None

    info = model_info(model, options)
    spec = input_spec_of(model)
    batcher = MicroBatcher(
        lambda x: prediction_rows(model, x),
        options.max_batch,
        options.max_wait_ms / 1000,
        options.batching,
        threads=scoring_threads(options),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        await batcher.submit(torch.zeros(1, *spec.shape))  # warm up before declaring ready
        app.state.ready = True
        log.info(
            "serving %s model (%s backend), %s",
            info.get("backbone", "ONNX"),
            options.backend,
            asdict(options),
        )
        yield
        app.state.ready = False
        await batcher.stop()

    app = FastAPI(title="osrkit", version=__version__, lifespan=lifespan)
    app.state.ready = False

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, exc: RequestError) -> JSONResponse:
        return error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "invalid request: " + "; ".join(str(e.get("msg", e)) for e in exc.errors())[:300])

    app.add_middleware(RequestLog)

    @app.get("/healthz")
    async def healthz() -> dict:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """The model is loaded and warmed up."""
        if not app.state.ready:
            return error(503, "model not loaded yet")
        return JSONResponse({"status": "ready"})

    @app.get("/v1/model")
    async def model_card() -> dict:
        """Classes, input spec, decision scorer, thresholds and versions."""
        return info

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        """Label, class index (-1 = unknown), known and every score, per image, as
        ``osrkit predict`` prints them."""
        uploads = await _uploads(request, options)
        request.state.images = len(uploads)
        if sum(len(data) for _, data in uploads) <= INLINE_DECODE_BYTES:
            batch = _decode(uploads, spec)  # cheaper than a hand-off to a worker thread
        else:
            batch = await run_in_threadpool(_decode, uploads, spec)
        try:
            rows = await batcher.submit(batch)
        except OsrkitError as exc:
            raise RequestError(400, str(exc)) from None
        # a JSONResponse directly: FastAPI's jsonable_encoder walk of a returned dict is skipped
        return JSONResponse({"predictions": [{"name": name} | row for (name, _), row in zip(uploads, rows)]})

    return app
