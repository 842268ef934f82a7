"""``osrkit serve``: the recognizer behind an HTTP endpoint, with micro-batching.

Needs the ``serve`` extra (FastAPI, uvicorn, python-multipart, orjson). Binds to 127.0.0.1
unless told otherwise.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import socket
import warnings
from typing import Any

from PIL import Image

from osrkit.errors import ConfigError
from osrkit.jobs import predictions
from osrkit.serve.app import SERVE_EXTRA_HINT, ServeOptions, create_app, model_info
from osrkit.serve.batcher import MicroBatcher
from osrkit.serve.guard import uvicorn_protocol

log = logging.getLogger("osrkit.serve")

__all__ = ["MicroBatcher", "ServeOptions", "check_port", "create_app", "load_model", "model_info", "serve"]


def load_model(model_dir: str | os.PathLike, options: ServeOptions) -> Any:
    """The model the service runs: a model folder (torch) or an ONNX export (onnx);
    a folder that fails to load raises its one-line error."""
    return predictions.load_model(model_dir, options.backend, options.device)


def check_port(host: str, port: int) -> int:
    """One line, before any model is served, when ``host:port`` cannot be bound; else the
    port (a free one for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use; choose another with --port") from None
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror}); check --host and --port"
            ) from None
        return int(s.getsockname()[1])


def serve(model_dir: str | os.PathLike, options: ServeOptions = ServeOptions()) -> None:
    """Load ``model_dir`` and serve it until SIGINT/SIGTERM (requests in flight finish)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError(SERVE_EXTRA_HINT) from None
    model = load_model(model_dir, options)
    port = check_port(options.host, options.port)
    options = dataclasses.replace(options, port=port)  # port 0: the free port found, in the log
    if options.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines", options.host)
    app = create_app(model, options, model_dir)
    # a warning per malformed multipart header would flood the log under hostile input;
    # the 400 names the problem to the client
    logging.getLogger("python_multipart").setLevel(logging.ERROR)
    # images over max_pixels get a 413 from their header: Pillow's warning would only repeat it
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        access_log=False,  # the app logs one line per request itself
        # uvicorn's own lines with -v; osrkit logs where it listens (create_app)
        log_level="info" if logging.getLogger("osrkit").getEffectiveLevel() <= logging.DEBUG else "warning",
        timeout_graceful_shutdown=30,
        # uvicorn counts open connections, slow ones included: the guard closes those whose
        # request is not in within request_timeout_s, and the longest waiting for one when
        # a new connection needs the place, so they cannot hold the limit
        http=uvicorn_protocol(options.request_timeout_s, options.max_connections),
        limit_concurrency=options.max_connections,
        timeout_keep_alive=5,  # an idle kept-alive connection holds a place: stated, not left to a default
    )
    uvicorn.Server(config).run()
