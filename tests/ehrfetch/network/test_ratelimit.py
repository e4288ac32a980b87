"""Pacing per organization, on a fake clock: N requests at r/s take about N/r seconds."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ehrfetch.network import RateLimiters, TokenBucket
from ehrfetch.network.ratelimit import BUSY_RETRY_S, shared_limiters


class Clock:
    """A clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(("rate", "burst", "n"), [(5.0, 1, 20), (10.0, 1, 50), (2.0, 4, 12)])
async def test_sequential_requests_are_paced(rate: float, burst: int, n: int) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock=clock, sleep=clock.sleep)
    for _ in range(n):
        await bucket.acquire()
    # The first `burst` go at once, then one per 1/rate: about n/rate in all.
    assert clock.now == pytest.approx((n - burst) / rate)


async def test_concurrent_requests_take_distinct_slots() -> None:
    now = 0.0
    waits: list[float] = []

    def clock() -> float:
        return now

    async def sleep(seconds: float) -> None:
        waits.append(seconds)  # each task is told how long until its own slot

    bucket = TokenBucket(4.0, 2, clock=clock, sleep=sleep)
    await asyncio.gather(*(bucket.acquire() for _ in range(6)))
    # Two at once, then one every 0.25 s.
    assert sorted(waits) == pytest.approx([0.25, 0.5, 0.75, 1.0])


async def test_an_idle_bucket_refills_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(1.0)
    clock.now += 60.0
    for _ in range(3):
        assert await bucket.acquire() == 0.0


async def test_organizations_are_paced_independently_with_overrides() -> None:
    clock = Clock()
    limiters = RateLimiters(1.0, 1, {"fast": 10.0}, clock=clock, sleep=clock.sleep)
    assert limiters.bucket("fast").rate == 10.0
    assert limiters.bucket("slow").rate == 1.0
    assert limiters.bucket("slow") is limiters.bucket("slow")
    await limiters.acquire("slow")
    # Another organization's first request does not wait for "slow".
    assert await limiters.acquire("fast") == 0.0
    assert await limiters.acquire("slow") == pytest.approx(1.0)


def test_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, 0)


def test_threads_taking_slots_at_once_never_share_one() -> None:
    # Batches in threads pace through one bucket: every slot must go to exactly one taker.
    clock = Clock()
    bucket = TokenBucket(1000.0, 1, clock=clock, sleep=clock.sleep)
    waits: list[float] = []

    def take(n: int) -> None:
        waits.extend(bucket.reserve() for _ in range(n))

    workers = [threading.Thread(target=take, args=(2000,)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    # The clock stands still, so slot k is k/rate ahead: 8,000 distinct slots.
    assert sorted(round(w * 1000) for w in waits) == list(range(8000))


def test_clients_of_one_process_share_their_buckets() -> None:
    one = shared_limiters(7.0, 3, {"org-a": 2.0})
    assert shared_limiters(7.0, 3, {"org-a": 2.0}) is one
    assert one.bucket("org-a") is shared_limiters(7.0, 3, {"org-a": 2.0}).bucket("org-a")
    assert one.bucket("org-a").rate == 2.0 and one.bucket("other").rate == 7.0
    assert shared_limiters(8.0, 3) is not one


def test_buckets_pacing_in_one_directory_share_one_schedule(tmp_path: Path) -> None:
    # Two processes' limiters, as far as the file is concerned: each opens the schedule
    # itself. Together they take slots as one bucket would.
    clock = Clock()
    first = RateLimiters(10.0, 1, clock=clock, sleep=clock.sleep, schedule_dir=tmp_path)
    second = RateLimiters(10.0, 1, clock=clock, sleep=clock.sleep, schedule_dir=tmp_path)
    waits = [limiters.bucket("org-a").reserve() for limiters in (first, second) * 3]
    assert waits == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    # Another organization has a schedule of its own.
    assert second.bucket("org/b?").reserve() == 0.0
    # Time passes with nobody asking: the next request goes at once, as it would alone.
    clock.now = 10.0
    assert first.bucket("org-a").reserve() == 0.0
    for limiters in (first, second):
        limiters.close()


async def test_shared_schedules_are_taken_in_turn_by_acquire(tmp_path: Path) -> None:
    clock = Clock()
    first = RateLimiters(10.0, 1, clock=clock, sleep=clock.sleep, schedule_dir=tmp_path)
    second = RateLimiters(10.0, 1, clock=clock, sleep=clock.sleep, schedule_dir=tmp_path)
    start = clock.now
    for limiters in (first, second) * 3:
        await limiters.acquire("org-a")
    # Six requests between them at 10/s: the last went 0.5 s after the first.
    assert clock.now - start == pytest.approx(0.5)
    for limiters in (first, second):
        limiters.close()


def _open_the_schedule(directory: Path) -> int:
    (path,) = directory.glob("*.slot")
    return os.open(path, os.O_RDWR)


async def test_a_schedule_another_process_holds_never_stalls_the_event_loop(
    tmp_path: Path,
) -> None:
    # Another process holding the schedule's lock, as far as flock can tell: an open file
    # of its own. A batch worker's loop must go on serving its other requests meanwhile.
    limiters = RateLimiters(1000.0, 1, schedule_dir=tmp_path)
    limiters.bucket("org-a").reserve()  # creates the schedule file
    other = _open_the_schedule(tmp_path)
    fcntl.flock(other, fcntl.LOCK_EX)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0)
            ticks += 1

    # The other lets go from a thread of its own: a loop stuck in flock could not.
    release = threading.Timer(0.2, fcntl.flock, (other, fcntl.LOCK_UN))
    ticker = asyncio.create_task(tick())
    waiting = asyncio.create_task(limiters.acquire("org-a"))
    release.start()
    try:
        await asyncio.sleep(0.05)
        assert not waiting.done()  # no slot while the other holds the schedule
        assert ticks > 10  # but the loop ran its other tasks meanwhile
        waited = await asyncio.wait_for(waiting, timeout=5)
        assert waited >= 0.2 - BUSY_RETRY_S  # its retries, counted as time waited
    finally:
        release.join()
        os.close(other)
        ticker.cancel()
        limiters.close()


def _take_slots(directory: str, n: int, out: Any, start: Any) -> None:
    reads: list[float] = []

    def clock() -> float:
        reads.append(time.monotonic())
        return reads[-1]

    limiters = RateLimiters(1000.0, 1, clock=clock, schedule_dir=Path(directory))
    bucket = limiters.bucket("org-a")
    start.wait(timeout=60)  # both at once: each would hand out the same slots alone
    # The slot taken: the time read in reserve() plus the wait it returned.
    out.put([bucket.reserve() + reads[-1] for _ in range(n)])
    limiters.close()


def test_processes_pacing_in_one_directory_never_share_a_slot(tmp_path: Path) -> None:
    # Real processes, the real clock: the slots of both, merged, are 1 ms apart.
    context = multiprocessing.get_context("spawn")
    out, start = context.Queue(), context.Barrier(2)
    workers = [
        context.Process(target=_take_slots, args=(str(tmp_path), 200, out, start)) for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    slots = sorted(out.get(timeout=60) + out.get(timeout=60))
    for worker in workers:
        worker.join(timeout=60)
    assert len(slots) == 400
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert min(gaps) == pytest.approx(0.001), min(gaps)


def test_a_new_pacing_directory_replaces_the_last_runs(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    first = shared_limiters(7.0, 2, None, one)
    assert shared_limiters(7.0, 2, None, one) is first
    first.bucket("org-a").reserve()
    second = shared_limiters(7.0, 2, None, two)
    assert second is not first and second.schedule_dir == two
    assert shared_limiters(7.0, 2, None, one) is not first  # the old one was let go
