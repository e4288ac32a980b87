"""The HTTP client of one batch, and reading answers with a hard size cap.

Redirects are never followed by httpx: the network client follows same-origin ones
itself and refuses the rest, so a redirect cannot carry a bearer token (or a request
for a patient's document) to another host.

Which implementation sits under httpx is a setting (``network.transport``): aiohttp's
through httpx-aiohttp (the default: 1.6-3.5x less client CPU per request on loopback),
or httpx's own (httpcore). Both raise httpx's exceptions and both map, through
``client.transport_failure``, to the same ehrfetch errors, so nothing above this module
can tell them apart; ``scripts/bench_transport.py`` measures both and checks that.
Known differences below that line: aiohttp reports a refused connection as
``ConnectTimeout`` (still a retried transport error), enforces no write timeout (the
per-try ``request_timeout_s`` still does), and ignores ``max_keepalive_connections``.

The httpx client keeps no cookies: nothing ehrfetch calls needs one, and httpx would
otherwise look through every answer for ``Set-Cookie``, building a urllib request per
answer to do it (about 6 % of the client's CPU on loopback, scripts/bench_client_path.py).
(aiohttp's session, under httpx, still has its own jar; its per-request cost is nil.)
"""

from __future__ import annotations

from typing import Any, NoReturn

import httpx

from ehrfetch.errors import ConfigError, ResponseTooLarge
from ehrfetch.settings import NetworkSettings

ERROR_BODY_BYTES = 64 * 1024
"""Read of an error answer: enough for any OperationOutcome, never a document."""


def limits(settings: NetworkSettings) -> httpx.Limits:
    return httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
    )


def timeout(settings: NetworkSettings) -> httpx.Timeout:
    return httpx.Timeout(
        connect=settings.connect_timeout_s,
        read=settings.read_timeout_s,
        write=settings.write_timeout_s,
        pool=settings.pool_timeout_s,
    )


def default_transport(settings: NetworkSettings) -> httpx.AsyncBaseTransport:
    """The production transport named by ``network.transport``, with the connection limits.

    (httpx applies ``limits`` only to a transport it builds itself, so they are passed
    here.) No transport-level retries: the retry policy owns retrying.
    """
    if settings.transport == "aiohttp":
        try:
            from httpx_aiohttp import AiohttpTransport
        except ImportError:
            raise ConfigError(
                "network.transport = 'aiohttp' needs the httpx-aiohttp package"
            ) from None
        return AiohttpTransport(limits=limits(settings))
    return httpx.AsyncHTTPTransport(limits=limits(settings), retries=0)


class NoCookies(httpx.Cookies):
    """A cookie jar that stays empty: answers' ``Set-Cookie`` headers are not read."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None  # not parsed, not kept (see the module's docstring)

    def set(self, name: str, value: str, domain: str = "", path: str = "/") -> NoReturn:
        raise TypeError("ehrfetch's HTTP client keeps no cookies")


class CookielessClient(httpx.AsyncClient):
    """``httpx.AsyncClient`` whose cookie jar stays empty (see the module's docstring)."""

    def __init__(self, **options: Any) -> None:
        if options.get("cookies"):
            raise TypeError("ehrfetch's HTTP client keeps no cookies")
        super().__init__(**options)
        self._no_cookies = NoCookies()

    # httpx reads the jar through this property only: when it sends (to add a Cookie
    # header) and when an answer comes (to store its Set-Cookie).
    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> NoReturn:
        raise TypeError("ehrfetch's HTTP client keeps no cookies")


def build_client(
    settings: NetworkSettings, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` of one batch (tests pass an ASGI or respx transport)."""
    return CookielessClient(
        transport=transport if transport is not None else default_transport(settings),
        limits=limits(settings),
        timeout=timeout(settings),
        headers={"User-Agent": settings.user_agent},
        follow_redirects=False,
    )


async def read_capped(
    response: httpx.Response,
    max_bytes: int,
    *,
    organization_id: str | None = None,
    truncate: bool = False,
) -> bytes:
    """The body of a streamed response, reading no more than ``max_bytes`` (decoded).

    Past the cap: ``ResponseTooLarge``, or with ``truncate`` the first ``max_bytes``
    (for error answers, whose body only explains). A declared ``Content-Length`` over
    the cap fails before reading anything. The caller closes the response.
    """
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes and not truncate:
        raise ResponseTooLarge(
            f"declared {int(declared)} bytes, over the {max_bytes}-byte cap "
            "(network.max_body_bytes); not read",
            organization_id=organization_id,
            url=str(response.request.url),
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            if truncate:
                return bytes(body[:max_bytes])
            raise ResponseTooLarge(
                f"body over the {max_bytes}-byte cap (network.max_body_bytes); "
                f"reading stopped after {len(body)} bytes",
                organization_id=organization_id,
                url=str(response.request.url),
            )
    return bytes(body)
