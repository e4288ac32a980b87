"""Every fault, forced for one request with X-Mock-Fault and drawn from configured rates."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import httpx
import orjson
import pytest
from fhir.resources.R4B.bundle import Bundle
from pydantic import ValidationError

from mock_network.app import create_app
from mock_network.config import (
    ClientConfig,
    FaultRates,
    LatencyConfig,
    NetworkConfig,
    RateLimit,
    TestingConfig,
)
from mock_network.documents_api import DocumentStore
from mock_network.faults import DroppedConnection
from mock_network.population import Population
from mock_network.testing import (
    TEST_BASE,
    KeyPair,
    client_assertion,
    match_parameters,
    small_config,
    token_form,
)

PATIENT = {
    "resourceType": "Patient",
    "name": [{"family": "Smith", "given": ["Ann"]}],
    "birthDate": "1970-01-01",
}
MATCH = "/orgs/org-a/fhir/Patient/$match"


def _fault(name: str) -> dict[str, str]:
    return {"X-Mock-Fault": name}


def _patient(population: Population, org: str, at_least: int = 1) -> str:
    store = DocumentStore(population.config, population)
    for index in range(population.size):
        if org in population.orgs_of(index) and store.count(index, org) >= at_least:
            return population.patient_id(index, org)
    raise AssertionError("no such patient")


async def _references(
    client: httpx.AsyncClient, headers: dict[str, str], patient_id: str, org: str = "org-a"
) -> list[dict[str, Any]]:
    response = await client.get(
        f"/orgs/{org}/fhir/DocumentReference?patient={patient_id}&_count=50", headers=headers
    )
    assert response.status_code == 200
    return [e["resource"] for e in response.json()["entry"]]


def _sha1(body: bytes) -> str:
    return base64.b64encode(hashlib.sha1(body).digest()).decode()  # noqa: S324


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("rate_limited", 429),
        ("server_error", 500),
        ("bad_gateway", 502),
        ("service_unavailable", 503),
    ],
)
async def test_status_faults(
    client: httpx.AsyncClient, auth: dict[str, str], name: str, status: int
) -> None:
    response = await client.post(
        MATCH, json=match_parameters(PATIENT), headers={**auth, **_fault(name)}
    )
    assert response.status_code == status
    if status in (429, 503):
        assert int(response.headers["retry-after"]) >= 1
    # The header affects one request only.
    assert (
        await client.post(MATCH, json=match_parameters(PATIENT), headers=auth)
    ).status_code == 200


async def test_dropped_connection(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    with pytest.raises(httpx.RemoteProtocolError) as caught:
        await client.post(
            MATCH, json=match_parameters(PATIENT), headers={**auth, **_fault("dropped_connection")}
        )
    assert isinstance(caught.value, DroppedConnection)


async def test_hang(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    began = time.perf_counter()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(
            client.post(MATCH, json=match_parameters(PATIENT), headers={**auth, **_fault("hang")}),
            0.3,
        )
    assert time.perf_counter() - began < 5


async def test_truncated_body(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    whole = await client.post(MATCH, json=match_parameters(PATIENT), headers=auth)
    cut = await client.post(
        MATCH, json=match_parameters(PATIENT), headers={**auth, **_fault("truncated_body")}
    )
    assert cut.status_code == 200
    assert int(cut.headers["content-length"]) == len(cut.content) < len(whole.content)
    assert whole.content.startswith(cut.content)
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(cut.content)


async def test_malformed_json(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.get("/orgs/org-a/fhir/metadata", headers=_fault("malformed_json"))
    assert response.status_code == 200
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(response.content)


async def test_invalid_fhir(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post(
        MATCH, json=match_parameters(PATIENT), headers={**auth, **_fault("invalid_fhir")}
    )
    body = response.json()  # still JSON ...
    with pytest.raises(ValidationError):  # ... but not FHIR
        Bundle.model_validate(body)


async def test_wrong_hash_and_wrong_size(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient(population, "org-a")
    for fault, field in (("wrong_hash", "hash"), ("wrong_size", "size")):
        (reference, *_) = await _references(client, {**auth, **_fault(fault)}, patient_id)
        attachment = reference["content"][0]["attachment"]
        body = (await client.get(attachment["url"], headers=auth)).content
        honest = {"hash": _sha1(body), "size": len(body)}
        assert attachment[field] != honest[field]
        other = "size" if field == "hash" else "hash"
        assert attachment[other] == honest[other]


async def test_wrong_patient(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient(population, "org-a")
    normal = await _references(client, auth, patient_id)
    forced = await _references(client, {**auth, **_fault("wrong_patient")}, patient_id)
    for honest, lying in zip(normal, forced, strict=True):
        assert lying["subject"] == honest["subject"]  # the reference claims our patient ...
        attachment = lying["content"][0]["attachment"]
        body = (await client.get(attachment["url"], headers=auth)).content
        assert attachment["hash"] == _sha1(body)  # ... the bytes are intact ...
        if attachment["contentType"] != "application/pdf":
            assert patient_id.encode() not in body  # ... and about someone else
        honest_body = (
            await client.get(honest["content"][0]["attachment"]["url"], headers=auth)
        ).content
        assert body != honest_body


async def test_foreign_host(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient(population, "org-a")
    for reference in await _references(client, {**auth, **_fault("foreign_host")}, patient_id):
        url = httpx.URL(reference["content"][0]["attachment"]["url"])
        assert url.host == "files.example.net"


async def test_oversized(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient(population, "org-a")
    (reference, *_) = await _references(client, {**auth, **_fault("oversized")}, patient_id)
    attachment = reference["content"][0]["attachment"]
    assert attachment["size"] == 3 * 1024 * 1024
    body = (await client.get(attachment["url"], headers=auth)).content
    assert len(body) == attachment["size"] and _sha1(body) == attachment["hash"]


async def test_looping_next(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient(population, "org-a", at_least=1)
    url = f"/orgs/org-a/fhir/DocumentReference?patient={patient_id}&_count=50"
    page = (await client.get(url, headers={**auth, **_fault("looping_next")})).json()
    links = {link["relation"]: link["url"] for link in page["link"]}
    assert links["next"] == links["self"]  # one page whose next is itself


async def test_unknown_fault_name(client: httpx.AsyncClient, auth: dict[str, str]) -> None:
    response = await client.post(
        MATCH, json=match_parameters(PATIENT), headers={**auth, **_fault("gremlins")}
    )
    assert response.status_code == 400


async def test_header_ignored_unless_test_config_enables_it(key_pair: KeyPair) -> None:
    config = small_config(key_pair, testing=TestingConfig(allow_forced_faults=False))
    async with _client(config) as client:
        headers = await _auth(client, key_pair)
        response = await client.post(
            MATCH, json=match_parameters(PATIENT), headers={**headers, **_fault("server_error")}
        )
        assert response.status_code == 200


def _client(config: NetworkConfig) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(config)), base_url=TEST_BASE
    )


async def _auth(
    client: httpx.AsyncClient, key: KeyPair, client_id: str = "tester"
) -> dict[str, str]:
    response = await client.post(
        "/token", data=token_form(client_assertion(key, client_id=client_id))
    )
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def _with_org_a(config: NetworkConfig, **changes: Any) -> NetworkConfig:
    orgs = tuple(
        org.model_copy(update=changes) if org.id == "org-a" else org for org in config.orgs
    )
    return config.model_copy(update={"orgs": orgs})


async def test_configured_rates_apply_without_any_header(key_pair: KeyPair) -> None:
    config = _with_org_a(
        small_config(key_pair), faults=FaultRates(server_error=1.0, wrong_hash=1.0)
    )
    async with _client(config) as client:
        headers = await _auth(client, key_pair)
        for _ in range(5):
            assert (
                await client.post(MATCH, json=match_parameters(PATIENT), headers=headers)
            ).status_code == 500
        ok = await client.post(
            "/orgs/org-b/fhir/Patient/$match", json=match_parameters(PATIENT), headers=headers
        )
        assert ok.status_code == 200


async def test_document_faults_from_rates_are_stable(
    key_pair: KeyPair, population: Population
) -> None:
    config = _with_org_a(small_config(key_pair), faults=FaultRates(wrong_hash=1.0))
    patient_id = _patient(population, "org-a")
    async with _client(config) as client:
        headers = await _auth(client, key_pair)
        first = await _references(client, headers, patient_id)
        assert first == await _references(client, headers, patient_id)
        for reference in first:
            attachment = reference["content"][0]["attachment"]
            body = (await client.get(attachment["url"], headers=headers)).content
            assert attachment["hash"] != _sha1(body)


async def test_latency(key_pair: KeyPair, monkeypatch: pytest.MonkeyPatch) -> None:
    # The delays asked for, not the clock: a busy machine makes every answer slow.
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr("mock_network.faults.asyncio.sleep", sleep)
    config = _with_org_a(small_config(key_pair), latency=LatencyConfig(median_ms=80, p99_ms=81))
    async with _client(config) as client:
        assert (await client.get("/orgs/org-a/fhir/metadata")).status_code == 200
        assert len(asked) == 1 and 0.07 <= asked[0] <= 0.09, asked
        assert (await client.get("/orgs/org-b/fhir/metadata")).status_code == 200
        assert len(asked) == 1  # org-b has no latency configured


async def test_rate_limit_per_client_per_org(key_pair: KeyPair) -> None:
    other = KeyPair.generate("ES256")
    base = small_config(key_pair)
    clients = (*base.clients, ClientConfig(client_id="other", public_key_pem=other.public.decode()))
    config = _with_org_a(
        base.model_copy(update={"clients": clients}), rate_limit=RateLimit(per_second=0.5, burst=2)
    )
    async with _client(config) as client:
        mine, theirs = await _auth(client, key_pair), await _auth(client, other, "other")
        statuses = [
            (await client.post(MATCH, json=match_parameters(PATIENT), headers=mine)).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 429]
        limited = await client.post(MATCH, json=match_parameters(PATIENT), headers=mine)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        # Another client, and another organization, have their own budgets.
        assert (
            await client.post(MATCH, json=match_parameters(PATIENT), headers=theirs)
        ).status_code == 200
        elsewhere = await client.post(
            "/orgs/org-b/fhir/Patient/$match", json=match_parameters(PATIENT), headers=mine
        )
        assert elsewhere.status_code == 200


async def test_looping_next_from_rates_sends_a_naive_pager_round_and_round(
    key_pair: KeyPair, population: Population
) -> None:
    config = _with_org_a(small_config(key_pair), faults=FaultRates(looping_next=1.0))
    patient_id = _patient(population, "org-a", at_least=3)
    async with _client(config) as client:
        headers = await _auth(client, key_pair)
        url: str | None = f"/orgs/org-a/fhir/DocumentReference?patient={patient_id}&_count=1"
        seen: list[str] = []
        while url is not None and len(seen) < 12:  # bounded: the loop never ends by itself
            page = (await client.get(url, headers=headers)).json()
            links = {link["relation"]: link["url"] for link in page["link"]}
            seen.append(links["self"])
            url = links.get("next")
        assert url is not None  # still going after 12 pages
        assert len(set(seen)) == page["total"] < len(seen)  # the same pages, again
