"""Micro-batching: requests that arrive together are scored as one batch.

Written here because no library fits: the serving frameworks that batch (Ray Serve,
TorchServe, Triton) are whole platforms; this is one asyncio queue and one scoring
thread. While a batch is being scored, new requests queue up; the next batch takes all
of them (at most ``max_batch`` images), and with ``max_wait_s > 0`` also waits that long
for more. So under load the server scores at batch-scoring throughput, and a lone
request waits for nothing (``max_wait_s = 0``, the default) or ``max_wait_s``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], list[dict]]


class MicroBatcher:
    """Scores float image batches with ``score`` on one worker thread (the model is used
    by one thread only), batching concurrent ``submit`` calls when ``enabled``."""

    def __init__(
        self,
        score: ScoreFn,
        max_batch: int = 64,
        max_wait_s: float = 0.0,
        enabled: bool = True,
        threads: int | None = None,
    ):
        """``threads``: torch's thread count, set in the scoring thread (None: left as is)."""
        self.score, self.max_batch, self.max_wait_s, self.enabled = score, max_batch, max_wait_s, enabled
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="osrkit-score",
            initializer=None if threads is None else torch.set_num_threads,
            initargs=() if threads is None else (threads,),
        )
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0  # how many batches were scored (the load benchmark reports it)

    async def start(self) -> None:
        if self.enabled:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="osrkit-micro-batcher")

    async def submit(self, images: torch.Tensor) -> list[dict]:
        """Prediction rows of ``images`` (scored alone, or with other requests' images)."""
        if not self.enabled:
            self.batches += 1
            return await asyncio.get_running_loop().run_in_executor(self._executor, self.score, images)
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

    async def _score(self, items: list[tuple[torch.Tensor, asyncio.Future]]) -> None:
        batch = torch.cat([images for images, _ in items]) if len(items) > 1 else items[0][0]
        self.batches += 1
        try:
            rows = await asyncio.get_running_loop().run_in_executor(self._executor, self.score, batch)
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
        self._executor.shutdown(wait=True)
