"""Micro-batching: requests that arrive together are scored as one batch.

Written here because no library fits: the serving frameworks that batch (Ray Serve,
TorchServe, Triton) are whole platforms; this is one asyncio queue and one scoring
worker (a process or a thread, ``worker.py``). While a batch is being scored, new
requests queue up; the next batch takes all of them (at most ``max_batch`` images),
and with ``max_wait_s > 0`` also waits that long for more. So under load the server
scores at batch-scoring throughput, and a lone request waits for nothing
(``max_wait_s = 0``, the default) or ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from osrkit.serve.worker import ProcessWorker, ThreadWorker

log = logging.getLogger(__name__)


class MicroBatcher:
    """Scores image batches (numpy arrays) on one worker, batching concurrent
    ``submit`` calls when ``enabled``; the batcher starts and stops the worker."""

    def __init__(
        self,
        worker: ThreadWorker | ProcessWorker | Callable[[np.ndarray], list[Any]],
        max_batch: int = 64,
        max_wait_s: float = 0.0,
        enabled: bool = True,
    ):
        """``worker``: a ``ThreadWorker`` or ``ProcessWorker`` (``worker.scoring_worker``),
        or a plain function of a batch, run on a thread."""
        self.worker = worker if hasattr(worker, "score") else ThreadWorker(worker)
        self.max_batch, self.max_wait_s, self.enabled = max_batch, max_wait_s, enabled
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # how many batches were scored (the load benchmark reports it)

    async def start(self) -> None:
        await self.worker.start()
        if self.enabled:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="osrkit-micro-batcher")

    async def submit(self, images: np.ndarray) -> list[Any]:
        """Prediction rows of ``images`` (scored alone, or with other requests' images)."""
        if not self.enabled:
            self.batches += 1
            return await self.worker.score(images)
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((images, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if first is None:  # stop(): everything before it was scored
                return
            items, count, stopping = [first], len(first[0]), False
            # Everything that queued up while the last batch was scored joins this one; then,
            # with max_wait_s > 0, wait that long for more.
            deadline = loop.time() + self.max_wait_s
            while count < self.max_batch:
                if not self._queue.empty():
                    item = self._queue.get_nowait()
                elif loop.time() < deadline:
                    try:
                        item = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    break
                if item is None:
                    stopping = True
                    break
                items.append(item)
                count += len(item[0])
            await self._score(items)
            if stopping:
                return

    async def _score(self, items: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        batch = np.concatenate([images for images, _ in items]) if len(items) > 1 else items[0][0]
        self.batches += 1
        try:
            rows = await self.worker.score(batch)
        except Exception as exc:  # every waiting request learns what went wrong
            log.exception("scoring a batch of %d images failed", len(batch))
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for images, future in items:
            if not future.done():  # a client that went away leaves a cancelled future
                future.set_result(rows[start : start + len(images)])
            start += len(images)

    async def stop(self) -> None:
        """Score every request already queued, then stop (requests in flight finish)."""
        if self._task is not None:
            await self._queue.put(None)
            await self._task
        await self.worker.stop()
