"""POST /token and bearer checks: every way a token request or a FHIR call is refused."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.operationoutcome import OperationOutcome

from mock_network.app import create_app
from mock_network.config import ClientConfig, NetworkConfig
from mock_network.keys import generate_private_key, private_pem, public_jwk, public_pem
from mock_network.testing import TEST_BASE as BASE
from mock_network.testing import TEST_CLIENT_ID as CLIENT_ID
from mock_network.testing import KeyPair, small_config, token_form
from mock_network.testing import client_assertion as assertion

TokenGetter = Callable[..., Awaitable[str]]
MATCH = "/orgs/org-a/fhir/Patient/$match"
QUERY = {
    "resourceType": "Parameters",
    "parameter": [
        {
            "name": "resource",
            "resource": {
                "resourceType": "Patient",
                "name": [{"family": "Smith", "given": ["Ann"]}],
                "birthDate": "1970-01-01",
            },
        }
    ],
}


def _refused(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    outcome = OperationOutcome.model_validate(response.json())
    details = outcome.issue[0].details
    assert details is not None and details.coding is not None
    assert details.coding[0].code == code


async def test_token_is_issued_for_a_signed_assertion(
    client: httpx.AsyncClient, key_pair: KeyPair
) -> None:
    response = await client.post("/token", data=token_form(assertion(key_pair), "HRESCH"))
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["purpose_of_use"] == "HRESCH"
    assert response.headers["cache-control"] == "no-store"
    search = await client.post(
        MATCH, json=QUERY, headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert search.status_code == 200


@pytest.mark.parametrize("where", ["scope", "b2b"])
async def test_purpose_may_be_declared_in_scope_or_b2b_extension(
    client: httpx.AsyncClient, key_pair: KeyPair, where: str
) -> None:
    if where == "scope":
        form = token_form(
            assertion(key_pair), None, scope="system/Patient.read purpose_of_use/HRESCH"
        )
    else:
        signed = assertion(
            key_pair,
            extra={
                "extensions": {
                    "hl7-b2b": {"purpose_of_use": ["urn:oid:2.16.840.1.113883.5.8#HRESCH"]}
                }
            },
        )
        form = token_form(signed, None)
    response = await client.post("/token", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["purpose_of_use"] == "HRESCH"


async def test_unknown_client(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    response = await client.post("/token", data=token_form(assertion(key_pair, client_id="nobody")))
    _refused(response, 401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_wrong_key(client: httpx.AsyncClient) -> None:
    other = generate_private_key("ES256")
    stranger = KeyPair(private_pem(other), public_pem(other), "ES256")
    _refused(
        await client.post("/token", data=token_form(assertion(stranger))), 401, "invalid_client"
    )


async def test_expired_assertion(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    old = assertion(key_pair, issued=time.time() - 600, lifetime=120)
    _refused(await client.post("/token", data=token_form(old)), 401, "invalid_client")


async def test_assertion_living_longer_than_five_minutes(
    client: httpx.AsyncClient, key_pair: KeyPair
) -> None:
    long = assertion(key_pair, lifetime=301)
    _refused(await client.post("/token", data=token_form(long)), 401, "invalid_client")


async def test_replayed_jti(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    first = await client.post("/token", data=token_form(assertion(key_pair, jti="once")))
    assert first.status_code == 200
    again = await client.post("/token", data=token_form(assertion(key_pair, jti="once")))
    _refused(again, 401, "invalid_client")
    assert "jti" in again.json()["issue"][0]["diagnostics"]


async def test_wrong_audience(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    signed = assertion(key_pair, aud="http://elsewhere.test/token")
    _refused(await client.post("/token", data=token_form(signed)), 401, "invalid_client")


async def test_purpose_not_allowed_for_client(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    # TREAT is a network purpose, but this client may not use it.
    _refused(
        await client.post("/token", data=token_form(assertion(key_pair), "TREAT")),
        403,
        "invalid_scope",
    )


async def test_purpose_unknown_to_network(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    _refused(
        await client.post("/token", data=token_form(assertion(key_pair), "MARKETING")),
        403,
        "invalid_scope",
    )


async def test_purpose_missing_or_ambiguous(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    _refused(
        await client.post("/token", data=token_form(assertion(key_pair), None)),
        400,
        "invalid_request",
    )
    two = token_form(assertion(key_pair), "T-IAS", scope="purpose_of_use/HRESCH")
    _refused(await client.post("/token", data=two), 400, "invalid_request")


async def test_bad_grant_and_assertion_type(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    form = token_form(assertion(key_pair))
    _refused(
        await client.post("/token", data={**form, "grant_type": "password"}),
        400,
        "unsupported_grant_type",
    )
    _refused(
        await client.post("/token", data={**form, "client_assertion_type": "basic"}),
        400,
        "invalid_request",
    )
    _refused(
        await client.post("/token", data={**form, "client_assertion": "not.a.jwt"}),
        401,
        "invalid_client",
    )


async def test_fhir_call_without_or_with_a_bad_token(client: httpx.AsyncClient) -> None:
    _refused(await client.post(MATCH, json=QUERY), 401, "invalid_token")
    _refused(
        await client.post(MATCH, json=QUERY, headers={"Authorization": "Bearer nope"}),
        401,
        "invalid_token",
    )
    for path in ("/orgs/org-a/fhir/DocumentReference?patient=1", "/orgs/org-a/fhir/Binary/1-0"):
        _refused(await client.get(path), 401, "invalid_token")


async def test_expired_token(config: NetworkConfig, key_pair: KeyPair) -> None:
    now = [time.time()]
    app = create_app(config, clock=lambda: now[0])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        token = (await client.post("/token", data=token_form(assertion(key_pair)))).json()[
            "access_token"
        ]
        headers = {"Authorization": f"Bearer {token}"}
        assert (await client.post(MATCH, json=QUERY, headers=headers)).status_code == 200
        now[0] += 301
        response = await client.post(MATCH, json=QUERY, headers=headers)
        _refused(response, 401, "invalid_token")
        assert "expired" in response.json()["issue"][0]["diagnostics"]


async def test_token_is_bound_to_its_purpose(
    client: httpx.AsyncClient, get_token: TokenGetter
) -> None:
    # org-c answers T-IAS and TREAT only: a research token is refused there, not at org-a.
    research = {"Authorization": f"Bearer {await get_token('HRESCH')}"}
    _refused(
        await client.post("/orgs/org-c/fhir/Patient/$match", json=QUERY, headers=research),
        403,
        "insufficient_scope",
    )
    assert (await client.post(MATCH, json=QUERY, headers=research)).status_code == 200
    access = {"Authorization": f"Bearer {await get_token('T-IAS')}"}
    ok = await client.post("/orgs/org-c/fhir/Patient/$match", json=QUERY, headers=access)
    assert ok.status_code == 200


async def test_scopes_limit_what_a_token_reads(
    client: httpx.AsyncClient, key_pair: KeyPair
) -> None:
    form = token_form(assertion(key_pair), scope="system/Patient.read")
    token = (await client.post("/token", data=form)).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert (await client.post(MATCH, json=QUERY, headers=headers)).status_code == 200
    _refused(
        await client.get("/orgs/org-a/fhir/DocumentReference?patient=1", headers=headers),
        403,
        "insufficient_scope",
    )
    bad = token_form(assertion(key_pair), scope="user/Patient.read")
    _refused(await client.post("/token", data=bad), 400, "invalid_scope")


@pytest.mark.parametrize("source", ["pem_file", "jwks_file"])
async def test_keys_registered_as_files_written_after_start(
    tmp_path: Path, key_pair: KeyPair, source: str
) -> None:
    key = generate_private_key("RS384")
    pair = KeyPair(private_pem(key), public_pem(key), "RS384")
    path = tmp_path / ("demo.pub.pem" if source == "pem_file" else "demo.jwks.json")
    registered = (
        ClientConfig(client_id="demo", public_key_file=path, allowed_purposes=("T-IAS",))
        if source == "pem_file"
        else ClientConfig(client_id="demo", jwks_file=path, allowed_purposes=("T-IAS",))
    )
    config = small_config(key_pair, clients=(registered,))
    app = create_app(config)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        missing = await client.post("/token", data=token_form(assertion(pair, client_id="demo")))
        _refused(missing, 401, "invalid_client")
        if source == "pem_file":
            path.write_bytes(pair.public)
        else:
            path.write_text(json.dumps({"keys": [public_jwk(key, "demo")]}))
        response = await client.post("/token", data=token_form(assertion(pair, client_id="demo")))
        assert response.status_code == 200, response.text


async def test_each_client_has_its_own_key(client: httpx.AsyncClient, key_pair: KeyPair) -> None:
    # The registered client signs with its key; its id with another key is refused.
    assert (await client.post("/token", data=token_form(assertion(key_pair)))).status_code == 200
    assert CLIENT_ID == "tester"
