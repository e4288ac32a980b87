"""Which HTTP implementation should sit under ehrfetch's httpx client?

Measures httpx's own transport (httpcore) against aiohttp's (httpx-aiohttp) on loopback:
client CPU per request (this process only; the server runs in a subprocess) and wall
time, for the answer sizes ehrfetch sees — a small FHIR answer (a $match Bundle, ~2 KiB),
a document (256 KiB) and a large document (4 MiB) — then checks that both behave the same
where ehrfetch depends on it: streaming with the size cap, read and request timeouts, a
refused connection and a connection dropped mid-body, each surfacing as the same
ehrfetch error.

    .venv/bin/python scripts/bench_transport.py                       # defaults
    .venv/bin/python scripts/bench_transport.py --requests 3000 --concurrency 1,4,16 --rounds 5

Both transports go through ehrfetch's own path (``build_client`` + ``read_capped``), with
keep-alive and the same connection limits. The server is a bare ASGI app under uvicorn
(one worker, uvloop and httptools when installed) on 127.0.0.1; it is stopped on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ehrfetch.errors import NetworkError, ResponseTooLarge  # noqa: E402
from ehrfetch.network import build_client, read_capped  # noqa: E402
from ehrfetch.network.client import transport_failure  # noqa: E402
from ehrfetch.network.retry import Retryable  # noqa: E402
from ehrfetch.settings import NetworkSettings  # noqa: E402

SIZES = {"small": 2 * 1024, "doc": 256 * 1024, "large": 4 * 1024 * 1024}
TRANSPORTS = ("httpx", "aiohttp")

# -- the server (run as a subprocess: python bench_transport.py --serve PORT) ----------

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"].strip("/")
    if path == "hang":
        await asyncio.sleep(30)
    if path == "drop":
        body = b"{" * 30_000
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body[:10_000], "more_body": True})
        raise RuntimeError("drop the connection mid-body")
    size = SIZES.get(path, 16)
    body = b"x" * size
    headers = [(b"content-type", b"application/fhir+json")]
    if path != "chunked":
        headers.append((b"content-length", str(size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if path == "chunked":  # no Content-Length: the cap must stop a stream, not a header
        for _ in range(64):
            await send({"type": "http.response.body", "body": b"y" * 65536, "more_body": True})
    await send({"type": "http.response.body", "body": body})


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(
        "bench_transport:app",
        app_dir=str(Path(__file__).parent),
        host="127.0.0.1",
        port=port,
        log_level="critical",  # the dropped connection is on purpose
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,  # do not wait for /hang
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
        [sys.executable, __file__, "--serve", str(port)], cwd=REPO
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/ping", timeout=0.5)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the benchmark server did not start")


# -- the client ------------------------------------------------------------------------


def settings_for(transport: str, **changes: Any) -> NetworkSettings:
    base = NetworkSettings(transport=transport, max_connections=32, max_keepalive_connections=32)
    return base.model_copy(update=changes)


async def fetch(client: httpx.AsyncClient, url: str, cap: int) -> bytes:
    request = client.build_request("GET", url)
    response = await client.send(request, stream=True)
    try:
        return await read_capped(response, cap)
    finally:
        await response.aclose()


async def load(transport: str, url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(client CPU µs per request, wall µs per request) for one round."""
    settings = settings_for(transport)
    async with build_client(settings) as client:
        for _ in range(concurrency):  # warm the pool
            await fetch(client, url, settings.max_body_bytes)
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                await fetch(client, url, settings.max_body_bytes)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / requests * 1e6, wall / requests * 1e6


async def outcome(client: httpx.AsyncClient, settings: NetworkSettings, url: str) -> str:
    """How one request ends, as ``what happened -> what ehrfetch does``."""
    try:
        async with asyncio.timeout(settings.request_timeout_s):
            body = await fetch(client, url, settings.max_body_bytes)
    except ResponseTooLarge as error:
        return f"{str(error).split('; ')[-1]} -> too_large"
    except TimeoutError:
        return "request_timeout_s -> transport (retried)"
    except httpx.HTTPError as error:
        mapped = transport_failure(error, None, url)
        retried = isinstance(mapped, Retryable)
        final: NetworkError = mapped.error if isinstance(mapped, Retryable) else mapped
        return f"{type(error).__name__} -> {final.code}{' (retried)' if retried else ''}"
    return f"{len(body)} bytes -> ok"


async def failure_of(transport: str, url: str, **changes: Any) -> str:
    settings = settings_for(transport, **changes)
    async with build_client(settings) as client:
        return await outcome(client, settings, url)


async def reuse_after_stop(transport: str, base: str) -> str:
    """A connection left with an unread body must not serve the next request."""
    settings = settings_for(transport, max_body_bytes=1024 * 1024, max_connections=1)
    async with build_client(settings) as client:
        await outcome(client, settings, f"{base}/chunked")
        return await outcome(client, settings, f"{base}/small")


async def behaviour(transport: str, base: str, closed: str) -> dict[str, str]:
    return {
        "stream past the cap": await failure_of(
            transport, f"{base}/chunked", max_body_bytes=1024 * 1024
        ),
        "declared past the cap": await failure_of(
            transport, f"{base}/large", max_body_bytes=1024 * 1024
        ),
        "read timeout": await failure_of(transport, f"{base}/hang", read_timeout_s=0.3),
        "request timeout": await failure_of(
            transport, f"{base}/hang", read_timeout_s=5, request_timeout_s=0.3
        ),
        "refused": await failure_of(transport, f"{closed}/small"),
        "dropped mid-body": await failure_of(transport, f"{base}/drop"),
        "next request after stop": await reuse_after_stop(transport, base),
    }


async def main(args: argparse.Namespace) -> None:
    port = free_port()
    server = start_server(port)
    base = f"http://127.0.0.1:{port}"
    closed = f"http://127.0.0.1:{free_port()}"
    try:
        print(f"python {sys.version.split()[0]}, httpx {httpx.__version__}, {os.cpu_count()} CPUs")
        print(
            f"{args.requests} small requests (1/8 as many docs, 1/64 as many large) x "
            f"{args.rounds} rounds per cell, keep-alive; median of rounds\n"
        )
        print(
            f"{'answer':<7} {'tasks':>5} {'transport':<9} {'client CPU µs/req':>18} "
            f"{'wall µs/req':>12}"
        )
        for name in SIZES:
            requests = max(
                50, args.requests // (1 if name == "small" else 8 if name == "doc" else 64)
            )
            for concurrency in args.concurrency:
                for transport in TRANSPORTS:
                    rounds = [
                        await load(transport, f"{base}/{name}", requests, concurrency)
                        for _ in range(args.rounds)
                    ]
                    cpu = statistics.median(r[0] for r in rounds)
                    wall = statistics.median(r[1] for r in rounds)
                    print(f"{name:<7} {concurrency:>5} {transport:<9} {cpu:>18.0f} {wall:>12.0f}")
        print("\nbehaviour (as ehrfetch sees it)")
        results = {t: await behaviour(t, base, closed) for t in TRANSPORTS}
        for case in results["httpx"]:
            # What ehrfetch does with it (the part after "->") is what must agree; the
            # httpx exception class is shown for the record.
            seen = {results[t][case].rpartition("-> ")[2] for t in TRANSPORTS}
            same = "same" if len(seen) == 1 else "DIFFERS"
            print(
                f"  {case:<22} httpx: {results['httpx'][case]:<40} aiohttp: "
                f"{results['aiohttp'][case]:<40} {same}"
            )
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 16],
        help="comma-separated task counts (default 1,16)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    arguments = parser.parse_args()
    if arguments.serve:
        serve(arguments.serve)
    else:
        asyncio.run(main(arguments))
