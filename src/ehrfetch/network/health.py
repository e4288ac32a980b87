"""Waiting for a server to be ready (the demo's and the benchmarks' mock network)."""

from __future__ import annotations

import asyncio
import time

import httpx

from ehrfetch.errors import TransportError


async def wait_until_ready(url: str, *, timeout_s: float = 60.0, interval_s: float = 0.2) -> None:
    """Poll ``url`` until it answers 200, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TransportError(f"not ready after {timeout_s:.0f} s", url=url)
            await asyncio.sleep(interval_s)
