"""Dynamic batching: many requests, ``concurrency`` model workers.

Requests put their preprocessed input on a bounded queue and await a future.
Each worker task takes the first waiting item, gathers more for at most
``max_wait_s`` (or until ``max_batch_size``), runs the whole batch on an
inference thread of its own and hands every request its own row. With
``concurrency`` above 1 that many batches are in flight at once (a runtime that
runs several calls in parallel, such as OpenVINO's streams). A failing batch
fails only its own requests; the workers carry on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Sequence, TypeVar

import numpy as np

log = logging.getLogger(__name__)

Result = TypeVar("Result")
PredictFn = Callable[[np.ndarray], Sequence[Any]]  # a batch of images in, one result per image out
BatchObserver = Callable[[int, float], None]  # (batch size, seconds)
DepthObserver = Callable[[int], None]  # the queue's depth, after each change


class QueueFullError(Exception):
    """The batcher's queue is full; the caller should answer 429."""


class BatchFailedError(Exception):
    """Inference failed for the batch this request was in."""


class BatcherStoppedError(Exception):
    """The service is shutting down and takes no more work; the caller should answer 503."""


@dataclass
class _Job:
    image: Any  # what the batcher's stack takes: a numpy array, or a tensor on the device
    future: asyncio.Future[Any]


@dataclass
class BatchStats:
    batches: int = 0
    images: int = 0
    failures: int = 0
    abandoned: int = 0
    sizes: list[int] = field(default_factory=list)  # the last few batch sizes, for tests and logs


class Batcher(Generic[Result]):
    def __init__(
        self,
        predict: PredictFn,
        max_batch_size: int,
        max_wait_s: float,
        queue_size: int,
        on_batch: BatchObserver | None = None,
        stack: Callable[[list[Any]], Any] | None = None,
        on_depth: DepthObserver | None = None,
        concurrency: int = 1,
    ) -> None:
        """``stack``: the requests' inputs as one batch; None: numpy's (else, e.g., one that makes a device tensor).
        ``concurrency``: batches in flight at once, each on its own thread; ``predict`` must allow that many callers."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._predict = predict
        self._stack = stack or np.stack
        self._on_batch = on_batch
        self._on_depth = on_depth
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._concurrency = concurrency
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="inference")
        self._workers: list[asyncio.Task[None]] = []
        self._accepting = False
        self._busy = 0  # workers holding jobs taken off the queue and not yet answered
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def _depth_changed(self) -> None:
        if self._on_depth is not None:
            self._on_depth(self._queue.qsize())

    @property
    def concurrency(self) -> int:
        return self._concurrency

    async def start(self) -> None:
        self._accepting = True
        self._workers = [asyncio.create_task(self._run(), name=f"batcher-{index}") for index in range(self._concurrency)]

    async def drain(self, timeout_s: float) -> None:
        """Stop taking new work and wait (up to ``timeout_s``) until everything queued or running is answered."""
        self._accepting = False
        deadline = time.monotonic() + timeout_s
        while (not self._queue.empty() or self._busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._accepting = False
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            try:
                await worker
            except asyncio.CancelledError:
                pass
        while not self._queue.empty():
            job = self._queue.get_nowait()
            if not job.future.done():
                job.future.set_exception(BatcherStoppedError())
        self._depth_changed()
        self._executor.shutdown(wait=True)

    async def submit(self, image: Any) -> Result:
        if not self._accepting:
            raise BatcherStoppedError
        job = _Job(image, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFullError from None
        self._depth_changed()
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            self._depth_changed()
            self._busy += 1  # from here until answered, these jobs are in no queue: drain must wait for them
            try:
                await self._gather(jobs)
                live = [job for job in jobs if not job.future.done()]
                self.stats.abandoned += len(jobs) - len(live)  # their clients went away while queued
                if live:
                    await self._run_batch(loop, live)
            finally:
                self._busy -= 1

    async def _gather(self, jobs: list[_Job]) -> None:
        deadline = time.monotonic() + self._max_wait_s
        while len(jobs) < self._max_batch_size:
            if not self._queue.empty():
                jobs.append(self._queue.get_nowait())
                self._depth_changed()
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Polling with short sleeps, not wait_for(queue.get()), so a timeout can never drop a job.
            await asyncio.sleep(min(remaining, 0.001))

    async def _run_batch(self, loop: asyncio.AbstractEventLoop, jobs: list[_Job]) -> None:
        batch = self._stack([job.image for job in jobs])
        started = time.perf_counter()
        try:
            mattes = await loop.run_in_executor(self._executor, self._predict, batch)
        except Exception as error:
            self.stats.failures += 1
            log.exception("inference failed for a batch of %d", len(jobs))
            for job in jobs:
                if not job.future.done():
                    job.future.set_exception(BatchFailedError(str(error)))
            return
        if self._on_batch is not None:
            self._on_batch(len(jobs), time.perf_counter() - started)
        self.stats.batches += 1
        self.stats.images += len(jobs)
        self.stats.sizes = (self.stats.sizes + [len(jobs)])[-1000:]
        for job, matte in zip(jobs, mattes):
            if not job.future.done():
                job.future.set_result(matte)
