"""The batch's httpx client and the capped read (no sockets: a mock transport)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from ehrfetch.errors import ResponseTooLarge
from ehrfetch.network import build_client, read_capped
from ehrfetch.network.transport import default_transport
from ehrfetch.settings import NetworkSettings


async def test_client_has_timeouts_user_agent_and_follows_no_redirects() -> None:
    settings = NetworkSettings(connect_timeout_s=2, read_timeout_s=9, user_agent="ehrfetch/test")
    transport = httpx.MockTransport(lambda request: httpx.Response(302, headers={"Location": "/x"}))
    async with build_client(settings, transport) as client:
        assert client.timeout.connect == 2 and client.timeout.read == 9
        assert client.headers["User-Agent"] == "ehrfetch/test"
        response = await client.get("https://a.test/")
        assert response.status_code == 302  # handed back, not followed


@pytest.mark.parametrize(
    ("name", "kind"), [("httpx", "AsyncHTTPTransport"), ("aiohttp", "AiohttpTransport")]
)
async def test_the_production_transport_is_chosen_by_setting(name: str, kind: str) -> None:
    transport = default_transport(NetworkSettings(transport=name))
    assert type(transport).__name__ == kind
    await transport.aclose()


class Chunks(httpx.AsyncByteStream):
    def __init__(self, n: int, size: int) -> None:
        self.n, self.size, self.sent = n, size, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.n):
            self.sent += 1
            yield b"y" * self.size


def streamed(stream: Chunks) -> httpx.Response:
    return httpx.Response(
        200, stream=stream, request=httpx.Request("GET", "https://a.test/b?patient=1")
    )


async def test_read_capped_reads_up_to_the_cap() -> None:
    assert await read_capped(streamed(Chunks(4, 10)), 40) == b"y" * 40


async def test_read_capped_stops_just_past_the_cap_and_says_so() -> None:
    stream = Chunks(100, 10)
    with pytest.raises(ResponseTooLarge) as caught:
        await read_capped(streamed(stream), 35, organization_id="alpha")
    assert stream.sent == 4
    assert "35-byte cap" in str(caught.value) and "stopped after 40 bytes" in str(caught.value)
    assert caught.value.url == "https://a.test/b"


async def test_error_bodies_are_truncated_not_refused() -> None:
    stream = Chunks(100, 10)
    assert await read_capped(streamed(stream), 25, truncate=True) == b"y" * 25
    assert stream.sent == 3


async def test_the_client_keeps_no_cookies() -> None:
    sent: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, headers={"Set-Cookie": "session=abc; Path=/"})

    async with build_client(NetworkSettings(), httpx.MockTransport(server)) as client:
        await client.get("https://a.test/one")
        await client.get("https://a.test/two")
        assert not client.cookies
        with pytest.raises(TypeError):
            client.cookies = {"session": "abc"}
        with pytest.raises(TypeError):
            client.cookies.set("session", "abc")
    assert [r.headers.get("cookie") for r in sent] == [None, None]
