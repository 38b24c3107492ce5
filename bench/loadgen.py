"""Closed-loop HTTP load: ``concurrency`` clients send ``requests`` requests in all, each client
sending its next request as soon as its last response has been read in full.

One Python process reads and writes a few hundred megabytes a second at most; against a fast
server (a GPU, large PNG responses) it becomes the bottleneck. ``processes`` splits the clients
and requests over that many forked load processes and merges their results.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import httpx

# Sends one request on the given client and returns its (fully read) response.
Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass
class LoadResult:
    latencies_s: list[float] = field(default_factory=list)  # successful requests, send to last body byte
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    started: float = 0.0  # time.perf_counter() at the start; CLOCK_MONOTONIC, so comparable across processes
    client_cpu_s: float = 0.0  # CPU time the load processes spent: near wall_s x processes, the client is the limit


def _cpu_now() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _run(send: Send, concurrency: int, requests: int, timeout_s: float) -> LoadResult:
    result = LoadResult()
    cpu_before = _cpu_now()
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            try:
                response = await send(client)
                if response.status_code == 200:
                    result.latencies_s.append(time.perf_counter() - started)
                else:
                    result.errors.append(f"HTTP {response.status_code}: {response.text[:120]}")
            except httpx.HTTPError as exc:
                result.errors.append(f"{type(exc).__name__}: {exc}")

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        result.started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - result.started
    result.client_cpu_s = _cpu_now() - cpu_before
    return result


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _load_process(send: Send, concurrency: int, requests: int, timeout_s: float, results: multiprocessing.Queue) -> None:
    results.put(asyncio.run(_run(send, concurrency, requests, timeout_s)))


def run_load(send: Send, concurrency: int, requests: int, timeout_s: float = 900.0, processes: int = 1) -> LoadResult:
    processes = max(1, min(processes, concurrency, requests))
    if processes == 1:
        return asyncio.run(_run(send, concurrency, requests, timeout_s))
    # fork: ``send`` is a closure (the request body, the URL), which a fresh interpreter could not receive.
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [context.Process(target=_load_process, args=(send, clients, share, timeout_s, results))
               for clients, share in zip(_shares(concurrency, processes), _shares(requests, processes))]
    for worker in workers:
        worker.start()
    parts = [results.get() for _ in workers]  # before join: a worker exits only once its result is read
    for worker in workers:
        worker.join()
    merged = LoadResult(started=min(p.started for p in parts))
    for part in parts:
        merged.latencies_s += part.latencies_s
        merged.errors += part.errors
        merged.client_cpu_s += part.client_cpu_s
    merged.wall_s = max(p.started + p.wall_s for p in parts) - merged.started
    return merged
