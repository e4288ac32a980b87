"""Fixtures for the mock network's tests: a small network built in code, a client key
pair made at run time, tokens, and an in-process httpx client (helpers live in
mock_network.testing so test modules import them by a unique name)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI

from mock_network.app import create_app
from mock_network.config import NetworkConfig
from mock_network.population import Population
from mock_network.roster import Participant, build_roster
from mock_network.testing import TEST_BASE, KeyPair, client_assertion, small_config, token_form

TokenGetter = Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def key_pair() -> KeyPair:
    return KeyPair.generate("ES256")


@pytest.fixture(scope="session")
def config(key_pair: KeyPair) -> NetworkConfig:
    return small_config(key_pair)


@pytest.fixture(scope="session")
def population(config: NetworkConfig) -> Population:
    return Population(config)


@pytest.fixture(scope="session")
def participants(config: NetworkConfig, population: Population) -> list[Participant]:
    return build_roster(config, population, 300)


@pytest.fixture
def app(config: NetworkConfig) -> FastAPI:
    return create_app(config)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=TEST_BASE) as c:
        yield c


@pytest.fixture
def get_token(client: httpx.AsyncClient, key_pair: KeyPair) -> TokenGetter:
    async def get(purpose: str = "T-IAS") -> str:
        response = await client.post("/token", data=token_form(client_assertion(key_pair), purpose))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    return get


@pytest.fixture
async def auth(get_token: TokenGetter) -> dict[str, str]:
    return {"Authorization": f"Bearer {await get_token()}"}
