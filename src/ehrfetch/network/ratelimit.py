"""Pacing per organization, so ehrfetch stays under a network's limit.

A token bucket written as a schedule (the generic cell rate algorithm): each request
takes the next free slot, ``1/rate`` seconds after the previous one, and an idle
organization has ``burst`` slots ready at once. Taking a slot is one short step under a
lock, so concurrent tasks never race for the same slot, even from batches running in
other threads; a task then sleeps, in its own event loop, until its slot comes. Clock
and sleep are injected so tests pace without waiting.

A network limits a *client*, not a batch: batches running at once in one process share
one set of buckets (``shared_limiters``), or two batches would each take the whole rate
and live on 429s. Workers in several processes must split the rate between them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Mapping

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class TokenBucket:
    """``rate`` requests per second on average, at most ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._interval = 1.0 / rate
        # How far ahead of "now" the schedule may run before a caller must wait.
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._sleep = sleep
        self._next_slot = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take the next slot; the seconds until it comes (0 when it is now)."""
        with self._lock:
            now = self._clock()
            slot = max(self._next_slot, now)
            self._next_slot = slot + self._interval
        return max(0.0, slot - self._tolerance - now)

    async def acquire(self) -> float:
        """Wait for a slot; the seconds waited."""
        delay = self.reserve()
        if delay > 0:
            await self._sleep(delay)
        return delay


class RateLimiters:
    """One bucket per key (organization id), made on first use."""

    def __init__(
        self,
        rate: float,
        burst: int,
        overrides: Mapping[str, float] | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            with self._lock:  # two threads asking at once must get the same bucket
                bucket = self._buckets.get(key)
                if bucket is None:
                    rate = self._overrides.get(key, self._rate)
                    bucket = TokenBucket(rate, self._burst, clock=self._clock, sleep=self._sleep)
                    self._buckets[key] = bucket
        return bucket

    async def acquire(self, key: str) -> float:
        return await self.bucket(key).acquire()


_SHARED: dict[tuple[float, int, tuple[tuple[str, float], ...]], RateLimiters] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiters(
    rate: float, burst: int, overrides: Mapping[str, float] | None = None
) -> RateLimiters:
    """The process's one set of buckets for these rates (real clock, asyncio sleep)."""
    key = (rate, burst, tuple(sorted((overrides or {}).items())))
    with _SHARED_LOCK:
        limiters = _SHARED.get(key)
        if limiters is None:
            limiters = _SHARED[key] = RateLimiters(rate, burst, overrides)
        return limiters
