"""Pacing per organization, so ehrfetch stays under a network's limit.

A token bucket written as a schedule (the generic cell rate algorithm): each request
takes the next free slot, ``1/rate`` seconds after the previous one, and an idle
organization has ``burst`` slots ready at once. Taking a slot is one short step under a
lock, so concurrent tasks never race for the same slot, even from batches running in
other threads; a task then sleeps, in its own event loop, until its slot comes. Clock
and sleep are injected so tests pace without waiting.

A network limits a *client*, not a batch: batches running at once in one process share
one set of buckets (``shared_limiters``), or two batches would each take the whole rate
and live on 429s. Batches in worker processes share them through files (``schedule_dir``:
each bucket's next free slot, under an advisory lock): a fixed 1/n split of the rate left
a worker's share unused whenever its batch was starting, draining or done while the
other's still ran.

An event loop never waits for another process's file lock: ``acquire`` tries it without
blocking and, when it is held, lets the loop's other tasks run before trying again (a
process descheduled while it holds the lock must not stall the other's loop). The
schedule is read and written through a shared memory map, so a slot costs two system
calls (lock, unlock) instead of four. What this does not remove: each of those calls
releases the GIL, and the loop may then wait for a database thread of its own process to
hand it back (up to the interpreter's 5 ms switch interval). py-spy put ~15 % of a batch
worker's loop samples on the lock's lines before this change (in a 300,000-participant
run and in a 10,000 run) and after it (a 10,000 run); the two 10,000 runs did not differ
in rate or CPU (docs/benchmarks.md, tenth session).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import mmap
import os
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class _Slots:
    """A bucket's schedule in this process: the next free slot, under a thread lock."""

    def __init__(self, start: float) -> None:
        self._next = start
        self._lock = threading.Lock()

    def take(self, now: float, interval: float) -> float:
        """The next free slot (never before ``now``); the one after it is ``interval``
        later."""
        with self._lock:
            slot = max(self._next, now)
            self._next = slot + interval
        return slot

    def try_take(self, now: float, interval: float) -> float | None:
        """``take``, or None when taking would mean waiting for another process."""
        return self.take(now, interval)


_DOUBLE = struct.Struct("<d")
# How long an event loop lets its other tasks run before it tries a schedule file that
# another process holds again: the holder needs a few microseconds, or a few
# milliseconds when it must first win its own process's GIL back.
BUSY_RETRY_S = 0.0005


class _FileSlots(_Slots):
    """A bucket's schedule shared by processes: the next free slot in a file.

    ``time.monotonic`` is the machine's CLOCK_MONOTONIC, the same in every process, so
    one process's slot means the same instant in another. ``flock`` excludes other
    processes (each opens the file itself); the thread lock, this process's threads,
    which share the one open file and so its lock. The slot is read and written through
    a shared map of the file's first 8 bytes (zeros: no slot taken yet, so ``now``).
    """

    def __init__(self, path: Path) -> None:
        # The schedule is the file's; this process keeps only the lock (``_Slots``'s),
        # the open file and its map.
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(self._fd).st_size < _DOUBLE.size:
                # Growing a file to 8 bytes keeps a value another process wrote first.
                os.ftruncate(self._fd, _DOUBLE.size)
            self._map = mmap.mmap(self._fd, _DOUBLE.size)
        except BaseException:
            os.close(self._fd)
            raise

    def _next_slot(self, now: float, interval: float) -> float:
        # Called with the file locked.
        (taken,) = _DOUBLE.unpack_from(self._map)
        slot = max(float(taken), now)
        _DOUBLE.pack_into(self._map, 0, slot + interval)
        return slot

    def take(self, now: float, interval: float) -> float:
        with self._lock:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            try:
                return self._next_slot(now, interval)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def try_take(self, now: float, interval: float) -> float | None:
        with self._lock:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            try:
                return self._next_slot(now, interval)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self._map.close()
        os.close(self._fd)


class TokenBucket:
    """``rate`` requests per second on average, at most ``burst`` at once."""

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        slots: _Slots | None = None,
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
        self._slots = slots if slots is not None else _Slots(clock())

    def reserve(self) -> float:
        """Take the next slot; the seconds until it comes (0 when it is now). Blocks
        while another process holds a shared schedule (``acquire`` does not)."""
        now = self._clock()
        slot = self._slots.take(now, self._interval)
        return max(0.0, slot - self._tolerance - now)

    async def acquire(self) -> float:
        """Wait for a slot; the seconds waited."""
        start = now = self._clock()
        while (slot := self._slots.try_take(now, self._interval)) is None:
            await self._sleep(BUSY_RETRY_S)
            now = self._clock()
        delay = max(0.0, slot - self._tolerance - now)
        if delay > 0:
            await self._sleep(delay)
        return now - start + delay


class RateLimiters:
    """One bucket per key (organization id), made on first use.

    ``schedule_dir``: keep each bucket's schedule in a file there, shared with every
    process that paces with the same directory (the clock must then be the real one).
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        overrides: Mapping[str, float] | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        schedule_dir: Path | None = None,
    ) -> None:
        self._rate = rate
        self._burst = burst
        self._overrides = dict(overrides or {})
        self._clock = clock
        self._sleep = sleep
        self.schedule_dir = schedule_dir
        self._buckets: dict[str, TokenBucket] = {}
        self._files: list[_FileSlots] = []
        self._lock = threading.Lock()

    def bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            with self._lock:  # two threads asking at once must get the same bucket
                bucket = self._buckets.get(key)
                if bucket is None:
                    rate = self._overrides.get(key, self._rate)
                    slots = None
                    if self.schedule_dir is not None:
                        # Organization ids are not file names: a digest of them is.
                        name = hashlib.sha256(key.encode()).hexdigest()[:32]
                        slots = _FileSlots(self.schedule_dir / f"{name}.slot")
                        self._files.append(slots)
                    bucket = TokenBucket(
                        rate, self._burst, clock=self._clock, sleep=self._sleep, slots=slots
                    )
                    self._buckets[key] = bucket
        return bucket

    async def acquire(self, key: str) -> float:
        return await self.bucket(key).acquire()

    def close(self) -> None:
        """Close the schedule files (buckets made after this open them again)."""
        with self._lock:
            for slots in self._files:
                slots.close()
            self._files.clear()
            self._buckets.clear()


_SharedKey = tuple[float, int, tuple[tuple[str, float], ...], Path | None]
_SHARED: dict[_SharedKey, RateLimiters] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiters(
    rate: float,
    burst: int,
    overrides: Mapping[str, float] | None = None,
    schedule_dir: Path | None = None,
) -> RateLimiters:
    """The process's one set of buckets for these rates (real clock, asyncio sleep);
    with ``schedule_dir``, shared with the other processes pacing there too."""
    key = (rate, burst, tuple(sorted((overrides or {}).items())), schedule_dir)
    with _SHARED_LOCK:
        limiters = _SHARED.get(key)
        if limiters is None:
            if schedule_dir is not None:
                # A worker process serves one run's batches at a time: the schedules of
                # an earlier run are done with (their directory is removed).
                for old in [k for k, v in _SHARED.items() if v.schedule_dir is not None]:
                    _SHARED.pop(old).close()
            limiters = _SHARED[key] = RateLimiters(
                rate, burst, overrides, schedule_dir=schedule_dir
            )
        return limiters
