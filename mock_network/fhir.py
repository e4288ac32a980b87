"""FHIR R4 resources the network answers with, built as plain dicts.

Plain dicts serialized with orjson, not fhir.resources models: $match must be fast and
pydantic validation on every answer would cost more than the matching. The tests check
every kind of answer against fhir.resources' R4B models (R4-compatible) instead.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from mock_network.config import NetworkConfig, OrgConfig
from mock_network.population import OrgRecord

FHIR_JSON = "application/fhir+json"
MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
ENDPOINT_HOST_URL = "urn:mock-network:StructureDefinition:endpoint-host"
LOINC = "http://loinc.org"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
# A fixed instant: resources carry no wall-clock time, so the same request always gets the
# same bytes.
PUBLISHED = "2025-01-01T00:00:00Z"

Json = dict[str, Any]


def dumps(resource: Mapping[str, Any]) -> bytes:
    return orjson.dumps(resource)


def mrn_system(org_id: str) -> str:
    return f"urn:mock-network:{org_id}:mrn"


def operation_outcome(
    code: str, diagnostics: str, *, severity: str = "error", details: str | None = None
) -> Json:
    issue: Json = {"severity": severity, "code": code, "diagnostics": diagnostics}
    if details:
        issue["details"] = {
            "coding": [
                {
                    "system": "urn:mock-network:CodeSystem:error",
                    "code": details,
                }
            ],
            "text": details,
        }
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def _phone_display(e164: str) -> str:
    # Organizations store numbers the way their desk typed them, not in E.164.
    digits = e164[-10:]
    return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"


def patient(record: OrgRecord, org: OrgConfig) -> Json:
    given = [record.given] + ([record.middle] if record.middle else [])
    official: Json = {"use": "official", "family": record.family, "given": given}
    if record.suffix:
        official["suffix"] = [record.suffix]
    names: list[Json] = [official]
    names.extend(
        {"use": "maiden" if i == 0 else "old", "family": family, "given": [record.given]}
        for i, family in enumerate(record.other_families)
    )
    telecom: list[Json] = []
    if record.phone:
        telecom.append({"system": "phone", "value": _phone_display(record.phone), "use": "home"})
    if record.email:
        telecom.append({"system": "email", "value": record.email})
    address = record.address
    lines = [address.line1] + ([address.line2] if address.line2 else [])
    resource: Json = {
        "resourceType": "Patient",
        "id": record.patient_id,
        "identifier": [
            {
                "use": "usual",
                "type": {
                    "coding": [
                        {"system": V2_0203, "code": "MR", "display": "Medical record number"}
                    ]
                },
                "system": mrn_system(org.id),
                "value": record.mrn,
            }
        ],
        "active": True,
        "name": names,
        "gender": record.sex,
        "birthDate": record.birth_date.isoformat(),
        "address": [
            {
                "use": "home",
                "line": lines,
                "city": address.city,
                "state": address.state,
                "postalCode": address.postal_code,
                "country": "US",
            }
        ],
        "managingOrganization": {"reference": f"Organization/{org.id}", "display": org.name},
    }
    if telecom:
        resource["telecom"] = telecom
    return resource


def match_entry(base: str, resource: Json, score: float, grade: str) -> Json:
    return {
        "fullUrl": f"{base}/Patient/{resource['id']}",
        "resource": resource,
        "search": {
            "extension": [{"url": MATCH_GRADE_URL, "valueCode": grade}],
            "mode": "match",
            "score": score,
        },
    }


def searchset(
    entries: Sequence[Json], *, self_url: str, next_url: str | None = None, total: int | None = None
) -> Json:
    links: list[Json] = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    bundle: Json = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(entries) if total is None else total,
        "link": links,
    }
    if entries:
        bundle["entry"] = list(entries)
    return bundle


def directory(config: NetworkConfig, base_url: str) -> Json:
    host = base_url.split("://", 1)[-1].split("/", 1)[0]
    entries: list[Json] = []
    for org in config.orgs:
        org_base = f"{base_url}/orgs/{org.id}/fhir"
        entries.append(
            {
                "fullUrl": f"{base_url}/directory/Organization/{org.id}",
                "resource": {
                    "resourceType": "Organization",
                    "id": org.id,
                    "identifier": [{"system": "urn:mock-network:organization", "value": org.id}],
                    "active": True,
                    "type": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                                    "code": "prov",
                                    "display": "Healthcare Provider",
                                }
                            ]
                        }
                    ],
                    "name": org.name,
                    "address": [{"state": org.state, "country": "US"}],
                    "endpoint": [{"reference": f"Endpoint/{org.id}-fhir"}],
                },
            }
        )
        entries.append(
            {
                "fullUrl": f"{base_url}/directory/Endpoint/{org.id}-fhir",
                "resource": {
                    "resourceType": "Endpoint",
                    "id": f"{org.id}-fhir",
                    "extension": [{"url": ENDPOINT_HOST_URL, "valueString": host}],
                    "status": "active",
                    "connectionType": {
                        "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                        "code": "hl7-fhir-rest",
                    },
                    "name": f"{org.name} FHIR R4",
                    "managingOrganization": {"reference": f"Organization/{org.id}"},
                    "payloadType": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                                    "code": "any",
                                }
                            ]
                        }
                    ],
                    "payloadMimeType": [FHIR_JSON],
                    "address": org_base,
                },
            }
        )
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": PUBLISHED,
        "entry": entries,
    }


def capability_statement(org: OrgConfig, base: str, token_url: str) -> Json:
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": PUBLISHED[:10],
        "publisher": "mock_network",
        "kind": "instance",
        "software": {"name": "mock_network"},
        "implementation": {"description": f"{org.name} (mock network member)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [{"url": "token", "valueUri": token_url}],
                        }
                    ],
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "description": "SMART backend services: client_credentials with a signed JWT "
                    "assertion and a declared purpose of use.",
                },
                "resource": [
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}],
                        "operation": [
                            {
                                "name": "match",
                                "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match",
                            }
                        ],
                    },
                    {
                        "type": "DocumentReference",
                        "interaction": [{"code": "search-type"}, {"code": "read"}],
                        "searchParam": [
                            {"name": "patient", "type": "reference"},
                            {"name": "status", "type": "token"},
                            {"name": "_count", "type": "number"},
                        ],
                    },
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                ],
            }
        ],
    }


FORMAT_CODES = {
    "application/fhir+json": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
    "application/xml": "urn:hl7-org:sdwg:ccda-structuredBody:2.1",
    "application/hl7-v3+xml": "urn:hl7-org:sdwg:ccda-structuredBody:2.1",
    "application/pdf": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
    "text/plain": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
}


def document_reference(
    *,
    doc_id: str,
    patient_id: str,
    org: OrgConfig,
    title: str,
    type_code: str,
    date: dt.datetime,
    content_type: str,
    url: str,
    size: int,
    sha1: bytes,
) -> Json:
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "masterIdentifier": {"system": f"urn:mock-network:{org.id}:document", "value": doc_id},
        "status": "current",
        "docStatus": "final",
        "type": {"coding": [{"system": LOINC, "code": type_code, "display": title}]},
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                        "code": "clinical-note",
                    }
                ]
            }
        ],
        "subject": {"reference": f"Patient/{patient_id}"},
        "date": date.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "custodian": {"display": org.name},
        "description": title,
        "content": [
            {
                "attachment": {
                    "contentType": content_type,
                    "url": url,
                    "size": size,
                    "hash": base64.b64encode(sha1).decode("ascii"),
                    "title": title,
                },
                "format": {
                    "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                    "code": FORMAT_CODES.get(
                        content_type, "urn:ihe:iti:xds:2017:mimeTypeSufficient"
                    ),
                },
            }
        ],
    }


def break_fhir(resource: Json) -> Json:
    """Valid JSON that no FHIR parser accepts: a wrong code, a wrong type and an element
    that does not exist, the shapes a misconfigured server really sends."""
    broken = dict(resource)
    if broken.get("resourceType") == "Bundle":
        broken["type"] = "search-set"
        broken["total"] = "several"
    else:
        broken["status"] = 42
    broken["patientName"] = "unexpected element"
    return broken


def parameters_values(body: Mapping[str, Any]) -> Iterable[tuple[str, Mapping[str, Any]]]:
    for parameter in body.get("parameter", []) or []:
        if isinstance(parameter, Mapping) and isinstance(parameter.get("name"), str):
            yield parameter["name"], parameter
