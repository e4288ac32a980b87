"""Parsing the network directory into organizations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ehrfetch.errors import InvalidResponse
from ehrfetch.network import Organization, parse_directory


def organization(org_id: str, *endpoints: str, **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": org_id,
        "name": org_id.title(),
    }
    if endpoints:
        resource["endpoint"] = [{"reference": ref} for ref in endpoints]
    return {
        "fullUrl": f"https://net.test/directory/Organization/{org_id}",
        "resource": resource | extra,
    }


def endpoint(ep_id: str, address: str, **extra: Any) -> dict[str, Any]:
    resource = {
        "resourceType": "Endpoint",
        "id": ep_id,
        "status": "active",
        "connectionType": {
            "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
            "code": "hl7-fhir-rest",
        },
        "payloadType": [{"text": "any"}],
        "address": address,
    }
    return {"fullUrl": f"https://net.test/directory/Endpoint/{ep_id}", "resource": resource | extra}


def bundle(*entries: dict[str, Any]) -> bytes:
    return json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": list(entries)}
    ).encode()


def test_organizations_with_their_base_url_and_host_in_directory_order() -> None:
    body = bundle(
        organization("mercy-ny", "Endpoint/mercy-fhir"),
        endpoint("mercy-fhir", "http://127.0.0.1:8900/orgs/mercy-ny/fhir/"),
        organization("pacific-ca", "https://net.test/directory/Endpoint/pacific-fhir"),
        endpoint("pacific-fhir", "https://Pacific.example.org/fhir"),
    )
    assert parse_directory(body) == [
        Organization(
            "mercy-ny", "Mercy-Ny", "http://127.0.0.1:8900/orgs/mercy-ny/fhir", "127.0.0.1:8900"
        ),
        Organization(
            "pacific-ca", "Pacific-Ca", "https://Pacific.example.org/fhir", "pacific.example.org"
        ),
    ]


def test_endpoint_found_through_its_managing_organization() -> None:
    body = bundle(
        organization("lake"),
        endpoint(
            "lake-fhir",
            "https://lake.test/fhir",
            managingOrganization={"reference": "Organization/lake"},
        ),
    )
    assert [o.base_url for o in parse_directory(body)] == ["https://lake.test/fhir"]


def test_unusable_organizations_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    body = bundle(
        organization("no-endpoint"),
        organization("inactive", "Endpoint/ok", active=False),
        organization("off", "Endpoint/off"),
        endpoint("off", "https://off.test/fhir", status="off"),
        organization("ftp", "Endpoint/ftp"),
        endpoint("ftp", "ftp://files.test/fhir"),
        organization("ok", "Endpoint/ok"),
        endpoint("ok", "https://ok.test/fhir"),
    )
    assert [o.id for o in parse_directory(body)] == ["ok"]
    assert "no-endpoint has no active FHIR endpoint" in caplog.text


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<html>", "not JSON"),
        (b'{"resourceType": "OperationOutcome", "issue": []}', "expected a FHIR Bundle"),
        (b'{"resourceType": "Bundle", "type": "collection", "entry": "many"}', "entry"),
    ],
)
def test_a_broken_directory_is_an_invalid_response(body: bytes, reason: str) -> None:
    with pytest.raises(InvalidResponse, match=f"directory: .*{reason}"):
        parse_directory(body, url="https://net.test/directory?x=1")
