"""Admission control: how many requests run at once, how many may wait, and for how long.

`Admission` applies the limits to requests: a slot at once when one is free, a place in a bounded
queue otherwise, and a fast refusal (with a Retry-After) when the queue is full or the wait runs
out. How many may run is planned from the KV budget (cluster.planning.kv_budget).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import AsyncIterator


class AdmissionRefused(Exception):
    def __init__(self, message: str, status: int, retry_after_s: int):
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass
class AdmissionStats:
    running: int
    waiting: int
    max_running: int
    max_waiting: int


class Admission:
    def __init__(self, max_running: int, max_waiting: int, wait_timeout_s: float):
        if max_running < 1:
            raise ValueError("max_running must be at least 1")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.wait_timeout_s = wait_timeout_s
        self._slots = asyncio.Semaphore(max_running)
        self._running = 0
        self._waiting = 0

    def stats(self) -> AdmissionStats:
        return AdmissionStats(self._running, self._waiting, self.max_running, self.max_waiting)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self._waiting >= self.max_waiting:
                raise AdmissionRefused(
                    f"the server is full: {self._running} requests running and {self._waiting} waiting; retry shortly",
                    429, retry_after_s=1)
            self._waiting += 1
            try:
                async with asyncio.timeout(self.wait_timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise AdmissionRefused(
                    f"no generation slot became free within {self.wait_timeout_s:g} s; retry later", 503,
                    retry_after_s=max(1, round(self.wait_timeout_s / 2))) from None
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()
