"""Pacing per organization, so ehrfetch stays under a network's limit.

A token bucket written as a schedule (the generic cell rate algorithm): each request
takes the next free slot, ``1/rate`` seconds after the previous one, and an idle
organization has ``burst`` slots ready at once. Taking a slot is one synchronous step,
so concurrent tasks never race for the same slot and no lock is needed; a task then
sleeps until its slot comes. Clock and sleep are injected so tests pace without waiting.
"""

from __future__ import annotations

import asyncio
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

    def reserve(self) -> float:
        """Take the next slot; the seconds until it comes (0 when it is now)."""
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

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            rate = self._overrides.get(key, self._rate)
            bucket = TokenBucket(rate, self._burst, clock=self._clock, sleep=self._sleep)
            self._buckets[key] = bucket
        return bucket

    async def acquire(self, key: str) -> float:
        return await self.bucket(key).acquire()
