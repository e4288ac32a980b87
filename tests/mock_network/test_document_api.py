"""DocumentReference search (paged) and Binary retrieval: hashes, sizes, determinism."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import orjson
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference

from mock_network.app import create_app
from mock_network.config import NetworkConfig
from mock_network.documents_api import DocumentStore
from mock_network.population import Population
from mock_network.testing import TEST_BASE, KeyPair, client_assertion, token_form


def _patient_with_documents(population: Population, org: str, at_least: int, skip: int = 0) -> str:
    store = DocumentStore(population.config, population)
    for index in range(skip, population.size):
        if org in population.orgs_of(index) and store.count(index, org) >= at_least:
            return population.patient_id(index, org)
    raise AssertionError("no such patient")


async def _all_pages(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], limit: int = 20
) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url and len(pages) < limit:
        response = await client.get(next_url, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        Bundle.model_validate(page)
        pages.append(page)
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    return pages


async def test_pages_hash_size_and_bytes_agree(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient_with_documents(population, "org-a", 5)
    pages = await _all_pages(
        client,
        f"/orgs/org-a/fhir/DocumentReference?patient={patient_id}&status=current&_count=2",
        auth,
    )
    assert len(pages) >= 3
    references = [e["resource"] for page in pages for e in page.get("entry", [])]
    assert len(references) == pages[0]["total"]
    assert len({r["id"] for r in references}) == len(references)
    types = set()
    for resource in references:
        DocumentReference.model_validate(resource)
        assert resource["subject"]["reference"] == f"Patient/{patient_id}"
        attachment = resource["content"][0]["attachment"]
        assert attachment["url"].startswith("http://mock.test/orgs/org-a/fhir/Binary/")
        binary = await client.get(attachment["url"], headers=auth)
        assert binary.status_code == 200
        assert binary.headers["content-type"].split(";")[0] == attachment["contentType"]
        assert len(binary.content) == attachment["size"]
        digest = hashlib.sha1(binary.content).digest()  # noqa: S324 (FHIR R4 hash is SHA-1)
        assert base64.b64encode(digest).decode() == attachment["hash"]
        types.add(attachment["contentType"])
    assert types <= {
        "application/fhir+json",
        "application/hl7-v3+xml",
        "application/xml",
        "application/pdf",
        "text/plain",
    }


async def test_same_url_same_bytes_across_restarts(
    client: httpx.AsyncClient,
    auth: dict[str, str],
    population: Population,
    config: NetworkConfig,
    key_pair: KeyPair,
) -> None:
    patient_id = _patient_with_documents(population, "org-b", 1)
    search = f"/orgs/org-b/fhir/DocumentReference?patient={patient_id}"
    listing = (await client.get(search, headers=auth)).content
    url = orjson.loads(listing)["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    body = (await client.get(url, headers=auth)).content
    restarted = create_app(config)  # a second network from the same config
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=restarted), base_url=TEST_BASE
    ) as again:
        token = (await again.post("/token", data=token_form(client_assertion(key_pair)))).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        assert (await again.get(search, headers=headers)).content == listing
        assert (await again.get(url, headers=headers)).content == body


async def test_page_size_default_and_cap(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient_with_documents(population, "org-a", 5)
    page = (
        await client.get(
            f"/orgs/org-a/fhir/DocumentReference?patient=Patient/{patient_id}", headers=auth
        )
    ).json()
    assert len(page["entry"]) == 4  # documents.page_size
    big = (
        await client.get(
            f"/orgs/org-a/fhir/DocumentReference?patient={patient_id}&_count=500", headers=auth
        )
    ).json()
    assert len(big["entry"]) == big["total"]
    assert not any(link["relation"] == "next" for link in big["link"])


async def test_search_edge_cases(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient_with_documents(population, "org-a", 1)
    base = "/orgs/org-a/fhir/DocumentReference"
    superseded = (
        await client.get(f"{base}?patient={patient_id}&status=superseded", headers=auth)
    ).json()
    assert superseded["total"] == 0 and "entry" not in superseded
    unknown = (await client.get(f"{base}?patient=0000000001", headers=auth)).json()
    assert unknown["total"] == 0
    missing = await client.get(base, headers=auth)
    assert missing.status_code == 400
    bad = await client.get(f"{base}?patient={patient_id}&_count=zero", headers=auth)
    assert bad.status_code == 400


async def test_binary_not_found(
    client: httpx.AsyncClient, auth: dict[str, str], population: Population
) -> None:
    patient_id = _patient_with_documents(population, "org-a", 1)
    for binary_id in ("nonsense", f"{patient_id}-99", "0000000001-0", f"{patient_id}-0-zz"):
        response = await client.get(f"/orgs/org-a/fhir/Binary/{binary_id}", headers=auth)
        assert response.status_code == 404, binary_id
