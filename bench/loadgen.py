"""Closed-loop HTTP load: ``concurrency`` clients send ``requests`` requests in all, each client
sending its next request as soon as its last response has been read in full."""

from __future__ import annotations

import asyncio
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


async def _run(send: Send, concurrency: int, requests: int, timeout_s: float) -> LoadResult:
    result = LoadResult()
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
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        result.wall_s = time.perf_counter() - started
    return result


def run_load(send: Send, concurrency: int, requests: int, timeout_s: float = 900.0) -> LoadResult:
    return asyncio.run(_run(send, concurrency, requests, timeout_s))
