"""The mock network in a process of its own, for the demo and the benchmarks.

ehrfetch never imports ``mock_network``: it starts it as a program (``python -m
mock_network``) and talks to it over HTTP on 127.0.0.1, exactly as it would to a real
network. The context manager stops it however the block ends.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ehrfetch.errors import ConfigError
from ehrfetch.network.health import wait_until_ready
from ehrfetch.settings import Settings

DEFAULT_CONFIG = Path("config/mock_network.toml")
CLIENT_ID = "ehrfetch"


def keys_for(network_config: Path) -> Path:
    """Where the mock network's config expects the client's key pair (see its [[clients]])."""
    return network_config.parent / ".." / ".work" / "keys"


@dataclass(frozen=True)
class RunningNetwork:
    base_url: str
    keys: Path
    log: Path
    pid: int

    def settings(self, settings: Settings) -> Settings:
        """``settings`` pointed at this network, with the client key made for it."""
        network = settings.network.model_copy(
            update={
                "directory_url": f"{self.base_url}/directory",
                "token_url": f"{self.base_url}/token",
                "client_id": CLIENT_ID,
                "private_key": None,
                "private_key_file": self.keys / f"{CLIENT_ID}.key.pem",
            }
        )
        return settings.model_copy(update={"network": network})


def mock(*args: str) -> None:
    """Run one ``python -m mock_network`` command to completion."""
    subprocess.run(  # noqa: S603 - our own module, fixed arguments
        [sys.executable, "-m", "mock_network", *args], check=True, stdout=subprocess.DEVNULL
    )


def require_config(network_config: Path) -> None:
    if not network_config.is_file():
        raise ConfigError(
            f"{network_config} not found: run from the project folder or pass --network-config"
        )


def write_roster(network_config: Path, out: Path, size: int) -> None:
    require_config(network_config)
    mock("roster", "--config", str(network_config), "--out", str(out), "--size", str(size))


@contextmanager
def running_network(
    network_config: Path, log: Path, *, extra: tuple[str, ...] = (), ready_timeout_s: float = 90
) -> Iterator[RunningNetwork]:
    require_config(network_config)
    keys = keys_for(network_config)
    mock("keygen", "--out-dir", str(keys), "--name", CLIENT_ID)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with log.open("w") as log_file:
        server = subprocess.Popen(  # noqa: S603 - our own module, fixed arguments
            [sys.executable, "-m", "mock_network", "serve", "--config", str(network_config),
             "--host", "127.0.0.1", "--port", str(port), *extra],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            asyncio.run(wait_until_ready(f"{base}/healthz", timeout_s=ready_timeout_s))
            yield RunningNetwork(base, keys, log, server.pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
