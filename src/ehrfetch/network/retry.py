"""The retry policy: built once from tenacity parts, used for every outbound call.

    retry  only on :class:`Retryable` — raised by a try for 429, 500, 502, 503, 504 and
           transport errors (refused, dropped mid-body, timed out)
    wait   max(Retry-After, exponential backoff with jitter), each capped
    stop   after ``max_tries`` tries, or at once when the server asks for a pause longer
           than ``retry_after_max_s`` (coming back earlier than asked is not honouring it)
    sleep  injected, so tests see every wait without waiting

Anything else a try raises (400, 403, 404, invalid JSON…) is not retried and surfaces
as is. When the tries run out, the ehrfetch error carried by the last
:class:`Retryable` is raised, never tenacity's ``RetryError``.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from ehrfetch.errors import NetworkError
from ehrfetch.settings import NetworkSettings

log = logging.getLogger("ehrfetch.network.retry")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class Retryable(Exception):  # a signal to the policy, never seen outside a call
    """Raised by a try that may heal: the policy tries again or raises ``error``."""

    def __init__(self, error: NetworkError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date.

    None when absent or unreadable (the backoff alone then decides); a date in the
    past is 0.
    """
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if seconds == seconds else None  # NaN is unreadable
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT even when it forgets to say so
        return None
    return max(0.0, when.timestamp() - now())


def _retry_after(retry_state: RetryCallState) -> float | None:
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    return error.retry_after if isinstance(error, Retryable) else None


class wait_retry_after(wait_base):  # named like tenacity's own strategies
    """The longer of the server's ``Retry-After`` and the fallback backoff."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = self.fallback(retry_state)
        asked = _retry_after(retry_state)
        return backoff if asked is None else max(asked, backoff)


class stop_if_retry_after_exceeds(stop_base):  # named like tenacity's own strategies
    """Stop when the server asks for a pause longer than we are willing to take."""

    def __init__(self, limit_s: float) -> None:
        self.limit_s = limit_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        asked = _retry_after(retry_state)
        return asked is not None and asked > self.limit_s


def _log_before_sleep(retry_state: RetryCallState) -> None:
    outcome = retry_state.outcome
    signal = outcome.exception() if outcome is not None else None
    if not isinstance(signal, Retryable):
        return
    error = signal.error
    log.info(
        "retrying org=%s code=%s url=%s try=%d wait=%.2fs",
        error.organization_id,
        error.code,
        error.url,  # sanitized by NetworkError: no query string
        retry_state.attempt_number,
        retry_state.upcoming_sleep,
    )


def build_policy(settings: NetworkSettings, sleep: Sleep = asyncio.sleep) -> AsyncRetrying:
    """The policy, built once per client from the settings."""
    backoff = wait_exponential_jitter(
        multiplier=settings.backoff_base_s,
        max=settings.backoff_max_s,
        jitter=settings.backoff_base_s,
    )
    return AsyncRetrying(
        retry=retry_if_exception_type(Retryable),
        wait=wait_retry_after(backoff),
        stop=stop_after_attempt(settings.max_tries)
        | stop_if_retry_after_exceeds(settings.retry_after_max_s),
        sleep=sleep,
        before_sleep=_log_before_sleep,
        reraise=True,
    )


async def run(policy: AsyncRetrying, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run ``attempt`` under ``policy``; out of tries, raise the last try's ehrfetch error."""

    # The first try runs outside tenacity: nearly every call succeeds (or fails for
    # good) at once, and tenacity's bookkeeping costs more CPU than a small answer's
    # parse. Only a try that may heal brings the policy in, which sees that try first
    # (replayed, not sent again), so waits, stops and logs are the same as ever.
    try:
        return await attempt()
    except Retryable as signal:
        first: Retryable | None = signal

    async def call() -> T:
        # tenacity awaits only what a coroutine *function* returns: a lambda that
        # returns a coroutine would come back unawaited as the "result".
        nonlocal first
        if first is not None:
            replayed, first = first, None
            raise replayed
        return await attempt()

    try:
        # A copy per call: a tenacity object keeps per-call state on itself.
        return await policy.copy()(call)
    except Retryable as last:
        raise last.error from last.error.__cause__
