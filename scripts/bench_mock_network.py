"""Benchmark the mock network on loopback: $match throughput and latency next to a bare
FastAPI endpoint, and startup time and memory for a large population.

    .venv/bin/python scripts/bench_mock_network.py                    # everything, defaults
    .venv/bin/python scripts/bench_mock_network.py --seconds 10 --concurrency 16
    .venv/bin/python scripts/bench_mock_network.py --only startup --population 1000000

Both servers run as subprocesses under uvicorn with one worker, uvloop and httptools,
bound to 127.0.0.1; the load comes from this process (httpx, keep-alive, N concurrent
tasks). Faults, latency and rate limits are off (`serve --no-faults`). The bare server
answers POST /bare with a fixed 1 KiB JSON body. Every loop is bounded in time and count,
and every server started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mock_network.config import load_config  # noqa: E402
from mock_network.keys import write_key_pair  # noqa: E402
from mock_network.roster import build_roster  # noqa: E402
from mock_network.testing import match_parameters, roster_patient, token_form  # noqa: E402

CONFIG = REPO / "config" / "mock_network.toml"
KEYS = REPO / ".work" / "keys"
MAX_REQUESTS = 2_000_000  # a hard stop whatever --seconds says


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident set of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


class Server:
    def __init__(self, argv: list[str], port: int) -> None:
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.began = time.perf_counter()
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
            argv,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait_ready(self, path: str, timeout: float = 120.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    self.process.stderr.read().decode() if self.process.stderr else ""
                )
            try:
                if httpx.get(self.base + path, timeout=1.0).status_code == 200:
                    return time.perf_counter() - self.began
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.base}{path} not ready in {timeout} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_network(port: int, population: int | None = None) -> Server:
    argv = [
        sys.executable,
        "-m",
        "mock_network",
        "serve",
        "--config",
        str(CONFIG),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-faults",
        "--log-level",
        "warning",
    ]
    if population is not None:
        argv += ["--population-size", str(population)]
    return Server(argv, port)


def start_bare(port: int) -> Server:
    return Server([sys.executable, __file__, "--serve-bare", str(port)], port)


def serve_bare(port: int) -> None:
    """The baseline: FastAPI + uvicorn, same settings, one fixed body."""
    import uvicorn
    from fastapi import FastAPI
    from starlette.responses import Response

    body = json.dumps(
        {"resourceType": "Bundle", "type": "searchset", "total": 0, "padding": "x" * 960}
    ).encode()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/bare")
    async def bare() -> Response:
        return Response(body, media_type="application/fhir+json")

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(b"{}", media_type="application/json")

    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


def ensure_client_key() -> Path:
    private = KEYS / "ehrfetch.key.pem"
    if not private.exists():
        write_key_pair(KEYS, "ehrfetch", "ES256")
    return private


def get_token(base: str, private: bytes) -> str:
    now = int(time.time())
    signed = jwt.encode(
        {
            "iss": "ehrfetch",
            "sub": "ehrfetch",
            "aud": f"{base}/token",
            "iat": now,
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        },
        private,
        algorithm="ES256",
    )
    response = httpx.post(f"{base}/token", data=token_form(signed, "T-IAS"), timeout=10)
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


RequestMaker = Callable[[int], tuple[str, bytes]]


async def load(
    base: str,
    make: RequestMaker,
    headers: dict[str, str],
    seconds: float,
    concurrency: int,
    client_kind: str,
) -> dict[str, float]:
    """POST as fast as `concurrency` keep-alive connections allow, for `seconds`.

    aiohttp is the load generator that finds the server's ceiling; httpx is what ehrfetch
    itself speaks, so its figure is what a real client on this machine can ask for."""
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds
    counter = iter(range(MAX_REQUESTS))
    headers = {**headers, "Content-Type": "application/fhir+json"}
    if client_kind == "aiohttp":
        import aiohttp

        connector = aiohttp.TCPConnector(limit=concurrency)
        session = aiohttp.ClientSession(base, headers=headers, connector=connector)

        async def send(path: str, body: bytes) -> int:
            async with session.post(path, data=body) as response:
                await response.read()
                return response.status

        close: Callable[[], Any] = session.close
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=30)

        async def send(path: str, body: bytes) -> int:
            return (await client.post(path, content=body)).status_code

        close = client.aclose

    async def worker() -> None:
        nonlocal errors
        for n in counter:
            if time.perf_counter() >= stop_at:
                return
            path, body = make(n)
            began = time.perf_counter()
            status = await send(path, body)
            latencies.append(time.perf_counter() - began)
            errors += status != 200

    try:
        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    finally:
        await close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def match_requests(participants: int) -> RequestMaker:
    config = load_config(CONFIG)
    orgs = [org.id for org in config.orgs]
    bodies = [
        json.dumps(match_parameters(roster_patient(p.row))).encode()
        for p in build_roster(config, size=participants)
    ]

    def make(n: int) -> tuple[str, bytes]:
        # Each participant at every organization in turn, as a client's discovery does.
        return f"/orgs/{orgs[n % len(orgs)]}/fhir/Patient/$match", bodies[
            (n // len(orgs)) % len(bodies)
        ]

    return make


def bench_throughput(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"bare": {}, "match": {}}
    bare = start_bare(_free_port())
    try:
        bare.wait_ready("/healthz")
        fixed = b'{"resourceType":"Parameters"}'
        for kind in args.clients:
            asyncio.run(
                load(bare.base, lambda n: ("/bare", fixed), {}, 1.0, args.concurrency, kind)
            )
            results["bare"][kind] = asyncio.run(
                load(
                    bare.base, lambda n: ("/bare", fixed), {}, args.seconds, args.concurrency, kind
                )
            )
    finally:
        bare.stop()
    private = ensure_client_key().read_bytes()
    network = start_network(_free_port(), args.population)
    try:
        results["startup_s"] = round(network.wait_ready("/healthz"), 2)
        token = get_token(network.base, private)
        make = match_requests(args.participants)
        headers = {"Authorization": f"Bearer {token}"}
        for kind in args.clients:
            asyncio.run(load(network.base, make, headers, 1.0, args.concurrency, kind))  # warm
            results["match"][kind] = asyncio.run(
                load(network.base, make, headers, args.seconds, args.concurrency, kind)
            )
        results["network_rss_mb"], results["network_peak_rss_mb"] = (
            round(v, 1) for v in _rss_mb(network.process.pid)
        )
    finally:
        network.stop()
    results["match_vs_bare"] = {
        kind: round(results["match"][kind]["req_per_s"] / results["bare"][kind]["req_per_s"], 3)
        for kind in args.clients
    }
    return results


def bench_startup(args: argparse.Namespace) -> dict[str, Any]:
    network = start_network(_free_port(), args.population)
    try:
        ready = network.wait_ready("/healthz", timeout=300)
        health = httpx.get(f"{network.base}/healthz", timeout=5).json()
        rss, peak = _rss_mb(network.process.pid)
    finally:
        network.stop()
    return {
        "population": health["people"],
        "ready_s": round(ready, 2),
        "index_build_s": health["startup_s"],
        "rss_mb": round(rss, 1),
        "peak_rss_mb": round(peak, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--only", choices=("throughput", "startup"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--clients",
        nargs="+",
        default=["aiohttp", "httpx"],
        choices=("aiohttp", "httpx"),
        help="load generators to use",
    )
    parser.add_argument("--participants", type=int, default=2000)
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="population size (default: the config's, 300,000)",
    )
    parser.add_argument("--out", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return
    results: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
    }
    if args.only in (None, "startup"):
        results["startup"] = bench_startup(args)
    if args.only in (None, "throughput"):
        results["throughput"] = bench_throughput(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
