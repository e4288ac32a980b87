"""The ways a member organization misbehaves, and how each one is sent.

Request and body faults are drawn per request from one seeded generator (so a benchmark
with faults on is repeatable when requests arrive in the same order). Document faults are
a fixed property of each document, derived from (seed, org, patient, document), so the
DocumentReference and the Binary it points to always agree about what is wrong.

A test forces faults for one request with `X-Mock-Fault: name[,name...]`, honoured only
when `testing.allow_forced_faults` is on.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable, Mapping

import httpx
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from mock_network import fhir
from mock_network.config import (
    ALL_FAULTS,
    BODY_FAULTS,
    DOCUMENT_FAULTS,
    FORCED_FAULT_HEADER,
    REQUEST_FAULTS,
    NetworkConfig,
    OrgConfig,
)
from mock_network.rand import unit


class DroppedConnection(httpx.RemoteProtocolError):
    """Raised after part of a body was sent: uvicorn closes the socket, and an in-process
    httpx client (ASGITransport re-raises app errors) sees the same exception type it gets
    from a real peer that hung up mid-body."""

    def __init__(self) -> None:
        super().__init__("mock network dropped the connection mid-body (injected fault)")


class UnknownFault(ValueError):
    pass


def forced_faults(headers: Mapping[str, str], config: NetworkConfig) -> frozenset[str]:
    if not config.testing.allow_forced_faults:
        return frozenset()
    raw = headers.get(FORCED_FAULT_HEADER.lower()) or headers.get(FORCED_FAULT_HEADER)
    if not raw:
        return frozenset()
    names = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = names - set(ALL_FAULTS)
    if unknown:
        raise UnknownFault(f"unknown fault(s): {', '.join(sorted(unknown))}")
    return names


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> float:
        """0 when allowed, else seconds until one request would be."""
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class Faults:
    def __init__(self, config: NetworkConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.seed = config.population.seed
        self._rng = random.Random(f"{self.seed}|faults")
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    # -- per request ----------------------------------------------------------------

    def request_fault(self, org: OrgConfig, forced: frozenset[str]) -> str | None:
        for name in REQUEST_FAULTS:
            if name in forced:
                return name
        return self._draw(org, REQUEST_FAULTS)

    def body_fault(self, org: OrgConfig, forced: frozenset[str]) -> str | None:
        for name in BODY_FAULTS:
            if name in forced:
                return name
        return self._draw(org, BODY_FAULTS)

    def _draw(self, org: OrgConfig, names: tuple[str, ...]) -> str | None:
        rates = org.faults
        if not any(rates.rate(name) for name in names):
            return None  # no draw at all: faults off costs nothing and shifts no sequence
        u = self._rng.random()
        for name in names:
            u -= rates.rate(name)
            if u < 0:
                return name
        return None

    async def delay(self, org: OrgConfig) -> None:
        latency = org.latency
        if latency.median_ms <= 0:
            return
        sigma = math.log(latency.p99_ms / latency.median_ms) / 2.326 if latency.p99_ms else 0.0
        ms = latency.median_ms * math.exp(sigma * self._rng.gauss(0.0, 1.0))
        ms = max(latency.min_ms, ms if latency.max_ms is None else min(latency.max_ms, ms))
        seconds = ms / 1000.0
        await asyncio.sleep(seconds)

    def rate_limit(self, client_id: str, org: OrgConfig) -> float:
        """Seconds the client must wait, or 0 when this request may go ahead."""
        limit = org.rate_limit
        if limit.per_second <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get((client_id, org.id))
        if bucket is None:
            bucket = self._buckets[(client_id, org.id)] = TokenBucket(
                limit.per_second, limit.burst, now
            )
        return bucket.take(now)

    # -- per document ---------------------------------------------------------------

    def document_faults(
        self, org: OrgConfig, patient_id: str, index: int, forced: frozenset[str]
    ) -> frozenset[str]:
        found = {name for name in DOCUMENT_FAULTS if name in forced and name != "looping_next"}
        for name in DOCUMENT_FAULTS:
            rate = org.faults.rate(name)
            if (
                name != "looping_next"
                and rate
                and unit(self.seed, name, org.id, patient_id, index) < rate
            ):
                found.add(name)
        return frozenset(found)

    def looping(self, org: OrgConfig, patient_id: str, forced: frozenset[str]) -> bool:
        if "looping_next" in forced:
            return True
        rate = org.faults.looping_next
        return bool(rate) and unit(self.seed, "looping_next", org.id, patient_id) < rate


# -- how faults are sent ------------------------------------------------------------


def error_response(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        fhir.dumps(fhir.operation_outcome(code, message)),
        status_code=status,
        media_type=fhir.FHIR_JSON,
        headers=dict(headers or {}),
    )


def status_fault_response(fault: str, retry_after: int) -> Response | None:
    if fault == "rate_limited":
        return error_response(
            429,
            "throttled",
            "too many requests (injected fault)",
            headers={"Retry-After": str(retry_after)},
        )
    if fault == "server_error":
        return error_response(500, "exception", "internal server error (injected fault)")
    if fault == "bad_gateway":
        return Response(
            b"<html><body><h1>502 Bad Gateway</h1></body></html>",
            status_code=502,
            media_type="text/html",
        )
    if fault == "service_unavailable":
        return error_response(
            503,
            "transient",
            "service unavailable (injected fault)",
            headers={"Retry-After": str(retry_after)},
        )
    return None


class DroppingResponse(Response):
    """Sends the headers (with the full Content-Length) and the first part of the body,
    then fails, which makes the server close the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: max(1, len(self.body) // 3)],
                "more_body": True,
            }
        )
        raise DroppedConnection()


def truncate(body: bytes) -> bytes:
    return body[: max(1, (len(body) * 3) // 5)]


def malformed(body: bytes) -> bytes:
    """Looks like the start of the real answer, then stops being JSON."""
    return body[: max(1, len(body) // 2)] + b',,"<!-- upstream error -->'


async def hang(config: NetworkConfig) -> Response:
    await asyncio.sleep(config.fault.hang_seconds)
    return error_response(504, "timeout", "the organization never answered (injected fault)")
