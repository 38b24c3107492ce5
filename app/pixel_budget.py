"""A first-come, first-served weighted semaphore over image pixels.

Each request holds as many units as its image has pixels, from decoding until
its response has been streamed, so the full-size images alive at once (and so
the service's memory) stay within the budget whatever the traffic.
"""

from __future__ import annotations

import asyncio
from collections import deque


class PixelBudget:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.available = capacity
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        return self.capacity - self.available

    async def acquire(self, pixels: int) -> int:
        """Wait for ``pixels`` units (at most the whole budget, so any one image can run alone); returns the units held."""
        units = max(1, min(pixels, self.capacity))
        if not self._waiters and self.available >= units:
            self.available -= units
            return units
        waiter = asyncio.get_running_loop().create_future()
        entry = (units, waiter)
        self._waiters.append(entry)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release(units)  # granted just as we were cancelled: hand it on
            else:
                self._waiters.remove(entry)
                self._wake()
            raise
        return units

    def release(self, units: int) -> None:
        self.available += units
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self.available:
            units, waiter = self._waiters.popleft()
            if waiter.done():
                continue
            self.available -= units
            waiter.set_result(None)
