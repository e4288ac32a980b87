"""A realistic, misbehaving stand-in for a national health-information exchange.

`create_app(config)` builds the FastAPI application; `python -m mock_network serve` runs
it under uvicorn. This package never imports `ehrfetch`: the two meet only over HTTP.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from mock_network.config import NetworkConfig

__all__ = ["create_app"]


def create_app(config: NetworkConfig, **kwargs: Any) -> FastAPI:
    # Imported lazily so `mock_network.population` and friends load without FastAPI.
    from mock_network.app import create_app as _create_app

    return _create_app(config, **kwargs)
