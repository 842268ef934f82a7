"""The HTTP service: a FastAPI app around a loaded recognizer (``osrkit serve``).

Routes: ``POST /v1/predict`` (images as multipart files in the field ``files``, or a
JSON body ``{"images": ["<base64>", ...], "names": [...]}``), ``GET /v1/model``,
``GET /healthz`` (alive), ``GET /readyz`` (model loaded and warmed up) and FastAPI's
OpenAPI page at ``/docs``. Every error is a 4xx (or 5xx) with a one-line JSON body
``{"error": "..."}`` that names the problem; the server keeps serving.
"""

import asyncio
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from osrkit._version import __version__
from osrkit.errors import ConfigError, OsrkitError
from osrkit.hardware import usable_cores
from osrkit.jobs.predictions import input_spec_of, thresholds_of
from osrkit.serve.batcher import MicroBatcher
from osrkit.serve.images import (
    DEFAULT_MAX_PIXELS,
    decode_opened,
    decodes_quickly,
    open_uploads,
    release_free_memory,
)
from osrkit.serve.openapi import PREDICT_OPENAPI, error_responses
from osrkit.serve.uploads import INLINE_PARSE_BYTES, RequestError, parse_uploads, read_body
from osrkit.serve.worker import WORKERS, ProcessWorker, WorkerStopped, scoring_worker

log = logging.getLogger("osrkit.serve")

SERVE_EXTRA_HINT = "osrkit serve needs the serve extra: pip install 'osrkit[serve]'"


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
    max_pixels: int = DEFAULT_MAX_PIXELS  # per image, checked from its header before decoding
    request_timeout_s: float = 15.0  # for a request's headers and body to arrive in full
    max_connections: int = 128  # open connections and requests in flight; more get a 503
    threads: int = 0  # torch threads scoring (0: one less than the usable cores, at least 1)
    worker: str = "process"  # where scoring runs: a worker "process" or a "thread" of the server

    def __post_init__(self) -> None:
        if self.backend not in ("torch", "onnx"):
            raise ConfigError(f"unknown backend {self.backend!r}; use torch or onnx")
        if self.worker not in WORKERS:
            raise ConfigError(f"unknown worker {self.worker!r}; use {' or '.join(WORKERS)}")
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (automatic) or more, got {self.threads}")
        for name in ("max_batch", "max_request_bytes", "max_images", "max_pixels", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ConfigError(f"max-wait-ms must be between 0 and 1000, got {self.max_wait_ms}")
        if not 0 < self.request_timeout_s <= 3600:
            raise ConfigError(f"request-timeout must be in (0, 3600] seconds, got {self.request_timeout_s}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be between 0 and 65535, got {self.port}")


def scoring_threads(options: ServeOptions) -> int:
    """torch threads for the scoring worker: ``options.threads``, or by default one less
    than the usable cores (at least 1), leaving a core to the event loop: torch's OpenMP
    threads spinning beside the event loop slow a small batch many times over
    (BENCHMARKS.md, HTTP service)."""
    return options.threads or max(1, usable_cores() - 1)


def decode_threads() -> int:
    """Threads decoding large images and bodies, one per two usable cores (1 to 4): the
    decoding of the rest shares a core with the event loop, bounding the CPU and the memory
    (one decoded image a thread) that a burst of large images takes."""
    return max(1, min(4, usable_cores() // 2))


class RequestLog:
    """Pure ASGI middleware: one INFO line per HTTP request (method, path, status,
    images, milliseconds). Starlette's ``@app.middleware("http")`` runs every request
    through extra tasks and memory streams (BaseHTTPMiddleware), a cost the event loop
    pays on every request."""

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


class PredictFastPath:
    """Pure ASGI middleware: ``POST /v1/predict`` answered by ``answer`` here, past
    FastAPI's router and dependency machinery, the largest share of the event loop's
    time per request under load (BENCHMARKS.md, HTTP service). The FastAPI route calls
    the same ``answer``: it documents the endpoint in the OpenAPI page."""

    def __init__(self, app: Any, answer: Any) -> None:
        self.app, self.answer = app, answer

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/predict" and scope["method"] == "POST":
            from starlette.requests import Request  # the serve extra, as in create_app

            response = await self.answer(Request(scope, receive))
            await response(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def model_info(model: Any, options: ServeOptions) -> dict:
    """What ``GET /v1/model`` returns."""
    onnx = options.backend == "onnx"
    spec = input_spec_of(model)
    info = {
        "class_names": list(model.class_names_),
        "input_spec": spec.to_dict(),
        "decision_scorer": model.decision_scorer_,
        "scorers": list(model.scorer_names if onnx else model.scorers_),
        "thresholds": dict(thresholds_of(model)),
        "backend": options.backend,
        "batching": {
            "enabled": options.batching,
            "max_batch": options.max_batch,
            "max_wait_ms": options.max_wait_ms,
        },
        "limits": {
            "max_request_bytes": options.max_request_bytes,
            "max_images": options.max_images,
            "max_pixels": options.max_pixels,
            "request_timeout_s": options.request_timeout_s,
            "max_connections": options.max_connections,
        },
        "versions": {"osrkit": __version__, "torch": torch.__version__},
    }
    if not onnx:
        info["backbone"] = model.backbone_name_
    return info


def listening_line(options: ServeOptions, info: dict, model_dir: str | os.PathLike | None = None) -> str:
    """The line ``osrkit serve`` logs once it is ready: the URL it listens on, what it
    serves and how to stop it."""
    host = f"[{options.host}]" if ":" in options.host else options.host  # an IPv6 address
    model = f"model {model_dir}" if model_dir is not None else "the model"
    classes = len(info["class_names"])
    what = f"{info.get('backbone', 'ONNX')}, {classes} classes, {options.backend} backend"
    return (
        f"listening on http://{host}:{options.port} ({model}: {what}); "
        f"API docs at http://{host}:{options.port}/docs; Ctrl+C to stop"
    )


def create_app(
    model: Any, options: ServeOptions = ServeOptions(), model_dir: str | os.PathLike | None = None
) -> Any:
    """The FastAPI app serving ``model`` (an ``OpenSetRecognizer`` or ``OnnxRecognizer``).

    With ``options.worker == "process"`` (the default) a worker process loads the model
    again from ``model_dir`` (the folder or ``.onnx`` that ``model`` came from) and scores
    there; ``model`` answers ``GET /v1/model``. Without a ``model_dir`` use
    ``ServeOptions(worker="thread")``, which scores ``model`` itself on a thread."""
    try:
        import orjson
        from fastapi import FastAPI, Request
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import JSONResponse, Response
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect
    except ImportError:
        raise ConfigError(SERVE_EXTRA_HINT) from None

    info = model_info(model, options)
    spec = input_spec_of(model)
    worker = scoring_worker(
        options.worker,
        model,
        scoring_threads(options),
        model_dir,
        backend=options.backend,
        device=options.device,
    )
    if isinstance(worker, ProcessWorker):
        worker.launch()  # a model the process cannot load: one line, before the port is bound
    batcher = MicroBatcher(worker, options.max_batch, options.max_wait_ms / 1000, options.batching)
    decoder = ThreadPoolExecutor(decode_threads(), thread_name_prefix="osrkit-decode")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        await batcher.submit(np.zeros((1, *spec.shape), np.uint8))  # warm up before declaring ready
        app.state.ready = True
        log.info("%s", listening_line(options, info, model_dir))
        log.debug("serve options: %s", asdict(options))
        yield
        app.state.ready = False
        await batcher.stop()
        decoder.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="osrkit", version=__version__, lifespan=lifespan)
    app.state.ready = False

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "invalid request: " + "; ".join(str(e.get("msg", e)) for e in exc.errors())[:300])

    @app.get("/healthz", responses=error_responses())
    async def healthz() -> dict:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz", responses=error_responses(503))
    async def readyz() -> JSONResponse:
        """The model is loaded and warmed up."""
        if not app.state.ready:
            return error(503, "model not loaded yet")
        return JSONResponse({"status": "ready"})

    @app.get("/v1/model", responses=error_responses())
    async def model_card() -> dict:
        """Classes, input spec, decision scorer, thresholds and versions."""
        return info

    def take_apart(body: bytes, content_type: str) -> list:
        return open_uploads(parse_uploads(body, content_type, options.max_images), options.max_pixels)

    async def answer_predict(request: Request) -> Response:
        response = await predict_response(request)
        if request.state.large_body:  # its memory is free now: back to the system with it
            with contextlib.suppress(RuntimeError):  # the decoder shut down: the server stops
                asyncio.get_running_loop().run_in_executor(decoder, release_free_memory)
        return response

    async def predict_response(request: Request) -> Response:
        loop = asyncio.get_running_loop()
        request.state.large_body = False
        try:
            body = await read_body(request, options.max_request_bytes)
            content_type = request.headers.get("content-type", "")
            # small bodies and few pixels on the event loop (cheaper than a hand-off to a
            # thread); the rest on the decoding threads, so the loop keeps answering
            if len(body) <= INLINE_PARSE_BYTES:
                opened = take_apart(body, content_type)
            else:
                request.state.large_body = True
                opened = await loop.run_in_executor(decoder, take_apart, body, content_type)
            del body
            request.state.images = len(opened)
            if decodes_quickly(opened):
                batch = decode_opened(opened, spec)
            else:
                batch = await loop.run_in_executor(decoder, decode_opened, opened, spec)
            rows = await batcher.submit(batch)
        except RequestError as exc:
            return error(exc.status, str(exc))
        except ClientDisconnect:  # gone, or cut off by the request timeout (which sent a 408)
            return error(408, "the client went away before its request was in")
        except OsrkitError as exc:
            return error(400, str(exc))
        except WorkerStopped:
            log.error("the scoring process stopped; restart osrkit serve")
            return error(503, "the scoring process stopped; restart osrkit serve")
        except RuntimeError as exc:  # logged where it happened
            return error(500, f"scoring failed: {str(exc).splitlines()[0][:200]}")
        # The rows come written as JSON (orjson: 2 us a row against json's 42 us); each gets
        # its "name" spliced in front, so the event loop never walks them.
        named = [b'{"name":' + orjson.dumps(name) + b"," + row[1:] for (name, _), row in zip(opened, rows)]
        return Response(b'{"predictions":[' + b",".join(named) + b"]}", media_type="application/json")

    predict_errors = error_responses(400, 408, 413, 415, 500, 503)

    @app.post("/v1/predict", responses=predict_errors, openapi_extra=PREDICT_OPENAPI)
    async def predict(request: Request) -> Response:
        """Label, class index (-1 = unknown), known and every score, per image, as
        ``osrkit predict`` prints them."""
        return await answer_predict(request)  # served by PredictFastPath; here for the docs

    app.add_middleware(PredictFastPath, answer=answer_predict)
    app.add_middleware(RequestLog)  # the last added runs first: it times the fast path too
    return app
