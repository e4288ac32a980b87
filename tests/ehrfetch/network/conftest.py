"""Fixtures for the network client's tests: keys, settings, an organization, a router.

Typed helpers (fake clock, token endpoint, FHIR builders) live in the test modules that
use them: a conftest cannot be imported by name under ``--import-mode=importlib``.
Nothing here opens a socket: HTTP goes to a respx router via ``httpx.MockTransport``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from ehrfetch.network import Organization
from ehrfetch.settings import NetworkSettings

NET = "https://net.test"
ORG_BASE = "https://alpha.test/fhir"


def _pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_pem(ec_key: ec.EllipticCurvePrivateKey) -> str:
    return _pem(ec_key)


@pytest.fixture(scope="session")
def rsa_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return _pem(rsa_key)


@pytest.fixture
def settings(ec_pem: str) -> NetworkSettings:
    """Fast pacing (tests about pacing set their own), five tries, pages of two."""
    return NetworkSettings(
        directory_url=f"{NET}/directory",
        token_url=f"{NET}/token",
        client_id="ehrfetch-test",
        private_key=SecretStr(ec_pem),
        purpose_of_use="T-IAS",
        requests_per_second=1000.0,
        burst=1000,
        max_tries=5,
        backoff_base_s=0.5,
        backoff_max_s=8.0,
        retry_after_max_s=60.0,
        page_size=2,
        max_pages=10,
    )


@pytest.fixture
def org() -> Organization:
    return Organization(id="alpha", name="Alpha Health", base_url=ORG_BASE, host="alpha.test")


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    # assert_all_mocked: a request no route expects fails the test instead of leaving.
    with respx.MockRouter(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock
