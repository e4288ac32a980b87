"""TokenSource: the signed client assertion, caching, refresh, one fetch at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from ehrfetch.errors import ConfigError, InvalidResponse
from ehrfetch.network import TokenSource, load_signing_key
from ehrfetch.settings import NetworkSettings

NOW = 1_780_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """A token endpoint as a fetch function: numbered tokens, the forms it got."""

    def __init__(self, lifetime: Any = 300, *, delay: bool = False) -> None:
        self.lifetime = lifetime
        self.delay = delay
        self.forms: list[dict[str, str]] = []

    async def __call__(self, form: Callable[[], Mapping[str, str]]) -> Mapping[str, Any]:
        self.forms.append(dict(form()))
        if self.delay:
            for _ in range(3):
                await asyncio.sleep(0)  # let concurrent callers pile up on the lock
        return {
            "access_token": f"secret-token-{len(self.forms)}",
            "token_type": "bearer",
            "expires_in": self.lifetime,
        }


def claims_of(assertion: str, key: Any, settings: NetworkSettings) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        assertion,
        key,
        algorithms=["ES256", "RS256"],
        audience=settings.token_url,
        options={"verify_exp": False, "verify_iat": False},
    )
    return decoded


def test_assertion_is_signed_es256_with_the_smart_claims(
    settings: NetworkSettings, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    source = TokenSource(settings, clock=Clock())
    first, second = source.assertion(), source.assertion()
    assert jwt.get_unverified_header(first)["alg"] == "ES256"
    claims = claims_of(first, ec_key.public_key(), settings)
    assert claims["iss"] == claims["sub"] == "ehrfetch-test"
    assert claims["aud"] == "https://net.test/token"
    assert claims["iat"] == int(NOW)
    assert claims["exp"] - claims["iat"] == 240 <= 300
    assert claims["jti"] != claims_of(second, ec_key.public_key(), settings)["jti"]


def test_rsa_keys_sign_rs256_and_kid_is_sent_when_configured(
    settings: NetworkSettings, rsa_pem: str, rsa_key: rsa.RSAPrivateKey
) -> None:
    settings = settings.model_copy(update={"private_key": SecretStr(rsa_pem), "key_id": "k1"})
    assertion = TokenSource(settings, clock=Clock()).assertion()
    header = jwt.get_unverified_header(assertion)
    assert (header["alg"], header["kid"]) == ("RS256", "k1")
    claims_of(assertion, rsa_key.public_key(), settings)


def test_key_is_read_from_a_file(settings: NetworkSettings, ec_pem: str, tmp_path: Path) -> None:
    path = tmp_path / "client.key.pem"
    path.write_text(ec_pem)
    settings = settings.model_copy(update={"private_key": None, "private_key_file": path})
    assert load_signing_key(settings)[1] == "ES256"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"private_key": None}, "no client key"),
        ({"private_key": SecretStr("-----BEGIN NOT A KEY-----")}, "not an unencrypted PEM"),
        ({"private_key": None, "private_key_file": Path("/nonexistent/k.pem")}, "cannot read"),
    ],
)
def test_unusable_keys_are_config_errors_that_quote_nothing(
    settings: NetworkSettings, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        TokenSource(settings.model_copy(update=changes))
    assert "BEGIN" not in str(caught.value)


async def test_token_form_declares_purpose_and_scope(settings: NetworkSettings) -> None:
    endpoint = Endpoint()
    source = TokenSource(settings, clock=Clock())
    token = await source.token(endpoint)
    assert token.value == "secret-token-1" and token.purpose_of_use == "T-IAS"
    [form] = endpoint.forms
    assert form["grant_type"] == "client_credentials"
    assert form["purpose_of_use"] == "T-IAS"
    assert form["scope"].split() == [
        "system/Patient.read",
        "system/DocumentReference.read",
        "system/Binary.read",
    ]
    assert "secret-token-1" not in repr(token) and "secret-token-1" not in str(token)


async def test_token_is_cached_then_refreshed_before_expiry(settings: NetworkSettings) -> None:
    clock = Clock()
    endpoint = Endpoint(lifetime=300)
    source = TokenSource(settings, clock=clock)
    assert (await source.token(endpoint)).value == "secret-token-1"
    clock.now = NOW + 269.9  # the 30 s margin starts at 270
    assert (await source.token(endpoint)).value == "secret-token-1"
    clock.now = NOW + 270.0
    assert (await source.token(endpoint)).value == "secret-token-2"
    assert len(endpoint.forms) == 2


async def test_a_short_lived_token_is_used_for_half_its_life(settings: NetworkSettings) -> None:
    clock = Clock()
    endpoint = Endpoint(lifetime=20)  # shorter than twice the 30 s margin
    source = TokenSource(settings, clock=clock)
    await source.token(endpoint)
    clock.now = NOW + 9.9
    await source.token(endpoint)
    assert len(endpoint.forms) == 1


async def test_concurrent_callers_share_one_fetch(settings: NetworkSettings) -> None:
    endpoint = Endpoint(delay=True)
    source = TokenSource(settings, clock=Clock())
    tokens = await asyncio.gather(*(source.token(endpoint) for _ in range(20)))
    assert {t.value for t in tokens} == {"secret-token-1"}
    assert source.fetches == 1


async def test_invalidating_a_stale_token_twice_costs_one_fetch(
    settings: NetworkSettings,
) -> None:
    endpoint = Endpoint()
    source = TokenSource(settings, clock=Clock())
    stale = await source.token(endpoint)
    source.invalidate(stale)
    fresh = await source.token(endpoint)
    source.invalidate(stale)  # a second caller's 401 with the old token
    assert await source.token(endpoint) is fresh
    source.invalidate()
    assert (await source.token(endpoint)).value == "secret-token-3"


@pytest.mark.parametrize(
    "answer",
    [
        {"token_type": "Bearer", "expires_in": 300},
        {"access_token": "secret-token-x", "token_type": "mac", "expires_in": 300},
        {"access_token": "secret-token-x", "token_type": "Bearer", "expires_in": "soon"},
        {"access_token": "secret-token-x", "token_type": "Bearer", "expires_in": 0},
    ],
)
async def test_unusable_token_answers_are_invalid_responses(
    settings: NetworkSettings, answer: dict[str, Any]
) -> None:
    async def fetch(form: Callable[[], Mapping[str, str]]) -> Mapping[str, Any]:
        return answer

    with pytest.raises(InvalidResponse) as caught:
        await TokenSource(settings, clock=Clock()).token(fetch)
    assert "secret-token-x" not in str(caught.value)


def test_a_token_source_outlives_its_event_loop(settings: NetworkSettings) -> None:
    # A CLI may run several batches, each under its own asyncio.run, with one source.
    endpoint = Endpoint(delay=True)
    source = TokenSource(settings, clock=Clock())

    async def burst() -> set[str]:
        source.invalidate()
        tokens = await asyncio.gather(*(source.token(endpoint) for _ in range(3)))
        return {t.value for t in tokens}

    assert asyncio.run(burst()) == {"secret-token-1"}
    assert asyncio.run(burst()) == {"secret-token-2"}
