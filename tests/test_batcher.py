"""The dynamic batcher, on the real model: shared batches, own results, bounded queue, failures contained."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from PIL import Image

from app.inference.batcher import Batcher, BatchFailedError, QueueFullError

from conftest import sample_photos

SIZE = 256  # a small model input keeps these tests quick; the model takes any multiple of 32


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [np.asarray(Image.open(p).convert("RGB").resize((SIZE, SIZE))) for p in sample_photos(1)]


def test_concurrent_requests_share_batches_and_get_their_own_results(engine, photos):
    alone = [engine.predict(p[None])[0] for p in photos]

    async def scenario():
        batcher = Batcher(engine.predict, max_batch_size=8, max_wait_s=0.05, queue_size=16)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(p) for p in photos))
        finally:
            await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(scenario())
    assert stats.images == len(photos)
    assert stats.batches < len(photos) and max(stats.sizes) > 1
    for got, expected in zip(results, alone):
        assert np.abs(got - expected).max() < 1e-3
    # The photos differ, so mixing rows up would show.
    assert np.abs(alone[0] - alone[1]).mean() > 0.01


def test_a_full_queue_is_refused_at_once(engine, photos):
    async def scenario():
        batcher = Batcher(engine.predict, max_batch_size=1, max_wait_s=0.0, queue_size=1)
        await batcher.start()
        try:
            # Both submits run before the worker takes anything: the second finds the queue full.
            first = asyncio.ensure_future(batcher.submit(photos[0]))
            second = asyncio.ensure_future(batcher.submit(photos[1]))
            done = await asyncio.gather(first, second, return_exceptions=True)
        finally:
            await batcher.stop()
        return done

    first, second = asyncio.run(scenario())
    assert isinstance(first, np.ndarray) and first.shape == (SIZE, SIZE)
    assert isinstance(second, QueueFullError)


def test_a_failing_batch_fails_only_its_requests(engine, photos):
    calls = {"n": 0}

    def flaky_predict(batch: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated device fault")
        return engine.predict(batch)

    async def scenario():
        batcher = Batcher(flaky_predict, max_batch_size=8, max_wait_s=0.02, queue_size=16)
        await batcher.start()
        try:
            failed = await asyncio.gather(*(batcher.submit(p) for p in photos[:2]), return_exceptions=True)
            later = await asyncio.gather(*(batcher.submit(p) for p in photos))
        finally:
            await batcher.stop()
        return failed, later, batcher.stats

    failed, later, stats = asyncio.run(scenario())
    assert all(isinstance(f, BatchFailedError) for f in failed)
    assert len(later) == len(photos) and all(r.shape == (SIZE, SIZE) for r in later)
    assert stats.failures == 1


def test_abandoned_requests_are_skipped(engine, photos):
    async def scenario():
        batcher = Batcher(engine.predict, max_batch_size=4, max_wait_s=0.05, queue_size=8)
        await batcher.start()
        try:
            abandoned = asyncio.ensure_future(batcher.submit(photos[0]))
            await asyncio.sleep(0)
            abandoned.cancel()
            kept = await batcher.submit(photos[1])
        finally:
            await batcher.stop()
        return kept, batcher.stats

    kept, stats = asyncio.run(scenario())
    assert kept.shape == (SIZE, SIZE)
    assert stats.images == 1


def test_several_batches_run_at_once_and_none_is_lost(engine, photos):
    """``concurrency`` workers: that many calls in flight together (each waits at a barrier for the others), every request answered with its own row."""
    import itertools
    import threading

    in_flight = 3
    barrier = threading.Barrier(in_flight, timeout=60)  # broken, and the calls fail, unless three arrive together
    calls = itertools.count(1)

    def predict(batch: np.ndarray) -> np.ndarray:
        if next(calls) <= in_flight:
            barrier.wait()
        return engine.predict(batch)

    alone = [engine.predict(p[None])[0] for p in photos]
    requests = [photos[i % len(photos)] for i in range(4 * in_flight + 1)]

    async def scenario():
        batcher = Batcher(predict, max_batch_size=1, max_wait_s=0.0, queue_size=32, concurrency=in_flight)
        await batcher.start()
        try:
            results = await asyncio.gather(*(batcher.submit(p) for p in requests))
            await batcher.drain(5)
        finally:
            await batcher.stop()
        return results, batcher.stats

    results, stats = asyncio.run(scenario())
    assert stats.images == len(requests) and stats.failures == 0
    for index, got in enumerate(results):
        assert np.abs(got - alone[index % len(photos)]).max() < 1e-3


def test_a_failing_call_among_concurrent_ones_fails_only_its_request(engine, photos):
    poisoned = photos[0]

    def predict(batch: np.ndarray) -> np.ndarray:
        if np.array_equal(batch[0], poisoned):
            raise RuntimeError("simulated fault on one input")
        return engine.predict(batch)

    async def scenario():
        batcher = Batcher(predict, max_batch_size=1, max_wait_s=0.0, queue_size=16, concurrency=2)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(p) for p in photos + photos), return_exceptions=True), batcher.stats
        finally:
            await batcher.stop()

    results, stats = asyncio.run(scenario())
    failed = [i for i, r in enumerate(results) if isinstance(r, BatchFailedError)]
    assert failed == [0, len(photos)]  # the poisoned photo, both times
    assert all(isinstance(r, np.ndarray) and r.shape == (SIZE, SIZE) for i, r in enumerate(results) if i not in failed)
    assert stats.failures == 2 and stats.images == 2 * len(photos) - 2


def test_drain_waits_for_every_call_in_flight():
    import threading

    release = threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        release.wait(30)
        return batch[:, 0, 0, 0].astype(np.float32)

    async def scenario():
        batcher = Batcher(slow, max_batch_size=1, max_wait_s=0.0, queue_size=8, concurrency=2)
        await batcher.start()
        jobs = [asyncio.ensure_future(batcher.submit(np.full((2, 2, 3), i, np.uint8))) for i in range(2)]
        await asyncio.sleep(0.2)  # both taken off the queue: the queue is empty, the calls are running
        assert batcher.depth == 0
        threading.Timer(0.5, release.set).start()
        await batcher.drain(10)
        released, answered = release.is_set(), batcher.stats.images  # both calls answered by the time drain returns
        results = await asyncio.gather(*jobs)
        await batcher.stop()
        return released, answered, results

    released, answered, results = asyncio.run(scenario())
    assert released and answered == 2 and results == [0.0, 1.0]
