"""The retry policy on its own: Retry-After parsing, waits, stops, what is raised."""

from __future__ import annotations

import asyncio
import email.utils

import pytest
from tenacity import AsyncRetrying

from ehrfetch.errors import HTTPStatusError, InvalidResponse, TransportError
from ehrfetch.network.retry import Retryable, build_policy, parse_retry_after, run
from ehrfetch.settings import NetworkSettings

NOW = 1_780_000_000.0


def at(seconds: float) -> str:
    return email.utils.formatdate(NOW + seconds, usegmt=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("7", 7.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (at(30), 30.0),
        (at(-30), 0.0),  # a date in the past: go now
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
        ("soon", None),
        ("nan", None),
        (None, None),
    ],
)
def test_retry_after_seconds_or_http_date(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header, now=lambda: NOW) == expected


class Attempts:
    """An attempt that fails with the given signals, then answers "done"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.tries = 0

    async def __call__(self) -> str:
        self.tries += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def http(status: int) -> HTTPStatusError:
    return HTTPStatusError(
        status, "busy", organization_id="alpha", url="https://a.test/x?patient=1"
    )


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def settings() -> NetworkSettings:
    return NetworkSettings(max_tries=4, backoff_base_s=1.0, backoff_max_s=3.0, retry_after_max_s=20)


def policy(settings: NetworkSettings, sleeps: list[float]) -> AsyncRetrying:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return build_policy(settings, sleep)


async def test_waits_grow_exponentially_with_jitter_up_to_the_cap(
    settings: NetworkSettings, sleeps: list[float]
) -> None:
    attempt = Attempts(*(Retryable(http(503)) for _ in range(3)))
    assert await run(policy(settings, sleeps), attempt) == "done"
    assert attempt.tries == 4
    low = [1.0, 2.0, 3.0]  # 1·2^(n-1), capped at 3
    high = [2.0, 3.0, 3.0]  # plus up to 1 s of jitter, still capped
    assert all(lo <= wait <= hi for lo, wait, hi in zip(low, sleeps, high, strict=True))


async def test_retry_after_wins_over_a_shorter_backoff(
    settings: NetworkSettings, sleeps: list[float]
) -> None:
    attempt = Attempts(Retryable(http(429), retry_after=15.0), Retryable(http(429), 0.0))
    await run(policy(settings, sleeps), attempt)
    assert sleeps[0] == 15.0
    assert 2.0 <= sleeps[1] <= 3.0  # Retry-After: 0 does not cut the backoff short


async def test_out_of_tries_raises_the_last_ehrfetch_error(
    settings: NetworkSettings, sleeps: list[float]
) -> None:
    last = TransportError("ReadTimeout", organization_id="alpha")
    attempt = Attempts(*(Retryable(http(502)) for _ in range(3)), Retryable(last))
    with pytest.raises(TransportError) as caught:
        await run(policy(settings, sleeps), attempt)
    assert caught.value is last
    assert attempt.tries == 4 and len(sleeps) == 3


async def test_a_retry_after_past_the_limit_stops_at_once(
    settings: NetworkSettings, sleeps: list[float]
) -> None:
    attempt = Attempts(Retryable(http(503), retry_after=21.0))
    with pytest.raises(HTTPStatusError) as caught:
        await run(policy(settings, sleeps), attempt)
    assert caught.value.status == 503
    assert attempt.tries == 1 and sleeps == []


async def test_other_errors_are_not_retried(settings: NetworkSettings, sleeps: list[float]) -> None:
    attempt = Attempts(InvalidResponse("not JSON"))
    with pytest.raises(InvalidResponse):
        await run(policy(settings, sleeps), attempt)
    assert attempt.tries == 1 and sleeps == []


async def test_one_policy_serves_concurrent_calls(
    settings: NetworkSettings, sleeps: list[float]
) -> None:
    shared = policy(settings, sleeps)
    attempts = [Attempts(Retryable(http(500))) for _ in range(5)]
    results = await asyncio.gather(*(run(shared, a) for a in attempts))
    assert results == ["done"] * 5
    assert [a.tries for a in attempts] == [2] * 5


def test_retried_errors_keep_their_url_without_query() -> None:
    assert http(503).url == "https://a.test/x"


async def test_the_first_try_counts_as_a_try_of_the_policy(
    settings: NetworkSettings, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    # The first try runs before tenacity does: the policy must still see it as try 1.
    caplog.set_level("INFO", logger="ehrfetch.network.retry")
    attempt = Attempts(Retryable(http(503)), Retryable(http(503)))
    assert await run(policy(settings, sleeps), attempt) == "done"
    assert attempt.tries == 3 and len(sleeps) == 2
    assert [m.split(" wait=")[0].rsplit(" ", 1)[1] for m in caplog.messages] == ["try=1", "try=2"]


async def test_one_try_allowed_means_no_retry(sleeps: list[float]) -> None:
    settings = NetworkSettings(max_tries=1)
    attempt = Attempts(Retryable(http(503)))
    with pytest.raises(HTTPStatusError):
        await run(policy(settings, sleeps), attempt)
    assert attempt.tries == 1 and sleeps == []
