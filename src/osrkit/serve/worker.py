"""Where the service scores: in a worker process (``osrkit serve``'s default) or on a
thread of the server process. Both take a uint8 image batch (a numpy array in the model's
spec) and give each prediction row already written as JSON (orjson), so the event loop
only joins bytes.

Why a process: under load the event loop (HTTP, multipart, PNG decoding) is Python and
holds the GIL nearly all the time. A scoring thread lets go of the GIL around every torch
operation and must then wait up to the switch interval (5 ms by default) to take it
back, at every operation of every layer and scorer, so beside a busy event loop it
scores many times slower than alone (``benchmarks/serve_profile.py``; BENCHMARKS.md,
HTTP service). In its own process the scorer has a GIL of its own.

Why a socket pair and not ``concurrent.futures.ProcessPoolExecutor``: the pool hands each
batch through two helper threads of the server (its manager and its queue feeder), which
wait for the same GIL as the event loop, so the worker process waits for batches. Here
the event loop itself writes a batch to the socket and reads the rows back: a 20-byte
header and the raw uint8 pixels, no pickle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import get_context
from typing import Any

import numpy as np
import torch

from osrkit.errors import ConfigError, OsrkitError
from osrkit.jobs.predictions import Predictor, load_model, prediction_rows

log = logging.getLogger("osrkit.serve")

WORKERS = ("process", "thread")
_BATCH = struct.Struct("<5I")  # pixel bytes, then the batch shape N, C, H, W
_REPLY = struct.Struct("<BI")  # status, payload bytes
_OK, _BAD_INPUT, _FAILED, _READY = 0, 1, 2, 3
LOAD_TIMEOUT_S = 300


class WorkerStopped(RuntimeError):
    """The scoring process is gone (killed, or out of memory): the service cannot score."""


def json_rows(model: Predictor, images: np.ndarray) -> list[bytes]:
    """``prediction_rows`` of the image batch ``images`` (uint8, or float in [0, 1], in the
    model's spec), each row as JSON bytes."""
    import orjson  # the serve extra, imported where the service runs

    return [orjson.dumps(row) for row in prediction_rows(model, torch.from_numpy(images))]


class ThreadWorker:
    """Scores with ``score`` (a function of an image batch) on one thread of this process,
    with ``threads`` torch threads (None: left as they are)."""

    def __init__(self, score: Callable[[np.ndarray], list[Any]], threads: int | None = None) -> None:
        self._score = score
        init = {} if threads is None else {"initializer": torch.set_num_threads, "initargs": (threads,)}
        self._pool = ThreadPoolExecutor(1, "osrkit-score", **init)

    async def start(self) -> None:
        pass

    async def score(self, images: np.ndarray) -> list[Any]:
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._score, images)

    async def stop(self) -> None:
        self._pool.shutdown(wait=True)


class ProcessWorker:
    """Scores in one spawned process that loads ``model_dir`` itself (with ``backend`` and
    ``device``) and runs ``threads`` torch threads; batches go over a socket pair."""

    def __init__(self, model_dir: str | os.PathLike, backend: str, device: str, threads: int) -> None:
        self._args = (str(model_dir), backend, device, threads)
        self._lock = asyncio.Lock()  # one batch on the socket at a time
        self._process: Any = None
        self._socket: socket.socket | None = None
        self._writer: asyncio.StreamWriter | None = None

    def launch(self) -> None:
        """Spawn the process and wait until it has loaded the model (blocking, before the
        server listens): a model it cannot load is a one-line ``ConfigError``."""
        if self._process is not None:
            return
        ours, theirs = socket.socketpair()
        # spawn, not fork: forking a process whose torch has started threads is unsafe
        self._process = get_context("spawn").Process(
            target=_serve_batches, args=(theirs, *self._args), name="osrkit-score", daemon=True
        )
        self._process.start()
        theirs.close()
        ours.settimeout(LOAD_TIMEOUT_S)
        try:
            header = _recv_exactly(ours, _REPLY.size)
            status, size = _REPLY.unpack(header) if header else (_FAILED, 0)
            payload = _recv_exactly(ours, size) if size else b""
        except TimeoutError:
            self._process.kill()
            status, payload = _FAILED, f"it did not load it within {LOAD_TIMEOUT_S} s".encode()
        ours.settimeout(None)
        if status != _READY:
            ours.close()
            self._process.join(10)
            self._process = None
            why = bytes(payload or b"").decode() or "it exited while starting"
            raise ConfigError(f"the scoring process could not load the model: {why}")
        self._socket = ours

    async def start(self) -> None:
        """Launch the process (unless ``launch`` already did) and attach the socket to
        this event loop."""
        if self._process is None:
            await asyncio.get_running_loop().run_in_executor(None, self.launch)
        self._reader, self._writer = await asyncio.open_connection(sock=self._socket)

    async def _exchange(self, images: np.ndarray) -> tuple[int, bytes]:
        async with self._lock:
            try:
                self._writer.write(_BATCH.pack(images.nbytes, *images.shape) + images.tobytes())
                await self._writer.drain()
            except ConnectionError:
                raise WorkerStopped("the scoring process stopped") from None
            return await self._reply()

    async def _reply(self) -> tuple[int, bytes]:
        try:
            status, size = _REPLY.unpack(await self._reader.readexactly(_REPLY.size))
            return status, await self._reader.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise WorkerStopped("the scoring process stopped") from None

    async def score(self, images: np.ndarray) -> list[bytes]:
        # shielded: a caller cancelled mid-exchange must not leave its reply on the socket
        # for the next batch to read
        status, payload = await asyncio.shield(self._exchange(np.ascontiguousarray(images, np.uint8)))
        if status == _OK:
            return payload.split(b"\n")
        if status == _BAD_INPUT:
            raise OsrkitError(payload.decode())
        raise RuntimeError(payload.decode())

    async def stop(self) -> None:
        """Close the socket (the process then exits) and wait for the process."""
        if self._process is None:
            return
        if self._writer is not None:
            self._writer.close()
        else:  # launched, never started
            self._socket.close()
        process, self._process = self._process, None
        await asyncio.get_running_loop().run_in_executor(None, process.join, 30)
        if process.is_alive():
            process.kill()


def _send(sock: socket.socket, status: int, payload: bytes) -> None:
    sock.sendall(_REPLY.pack(status, len(payload)) + payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytearray | None:
    buf = bytearray(size)
    view, got = memoryview(buf), 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            return None  # the server closed the socket: stop
        got += n
    return buf  # writable, so torch.from_numpy takes it without a warning


def _serve_batches(sock: socket.socket, model_dir: str, backend: str, device: str, threads: int) -> None:
    """The scoring process: load the model, then score batches until the socket closes."""
    # The server stops this process once the requests in flight are done; Ctrl-C in a
    # terminal reaches the whole process group, so this one ignores it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(threads)
    try:
        model = load_model(model_dir, backend, device)
    except Exception as exc:  # told to the server, which refuses to start
        _send(sock, _FAILED, str(exc).encode())
        return
    _send(sock, _READY, b"")
    while (header := _recv_exactly(sock, _BATCH.size)) is not None:
        size, *shape = _BATCH.unpack(header)
        data = _recv_exactly(sock, size)
        if data is None:
            return
        try:
            rows = json_rows(model, np.frombuffer(data, np.uint8).reshape(shape))
            _send(sock, _OK, b"\n".join(rows))  # orjson writes no raw newline
        except OsrkitError as exc:
            _send(sock, _BAD_INPUT, str(exc).encode())
        except Exception as exc:
            log.exception("scoring a batch of %d images failed", shape[0])
            _send(sock, _FAILED, f"{exc.__class__.__name__}: {exc}".encode())


def scoring_worker(
    kind: str, model: Predictor, threads: int, model_dir: str | os.PathLike | None, **load: Any
) -> ThreadWorker | ProcessWorker:
    """The worker that scores for the service:

    - ``process``: one spawned process that loads ``model_dir`` itself (``load``: the
      ``backend`` and ``device`` to load it with) and scores with ``threads`` torch threads;
    - ``thread``: one thread of this process scoring ``model`` with ``threads`` torch threads.
    """
    if kind == "thread":
        return ThreadWorker(lambda images: json_rows(model, images), threads)
    if kind != "process":
        raise ConfigError(f"unknown worker {kind!r}; use {' or '.join(WORKERS)}")
    if model_dir is None:
        raise ConfigError(
            'a scoring process loads the model from its folder: pass model_dir, or use worker="thread"'
        )
    return ProcessWorker(model_dir, load.get("backend", "torch"), load.get("device", "auto"), threads)
