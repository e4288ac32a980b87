"""The network directory: a Bundle of Organization and Endpoint resources.

Each member organization points at its FHIR endpoint (``Organization.endpoint``, or
the endpoint names it as ``managingOrganization``); the endpoint's ``address`` is the
organization's FHIR base URL and its host the only place ehrfetch fetches that
organization's documents from. Organizations without a usable endpoint are left out
with a warning: they cannot be queried, and the rest of the network still can.
"""

from __future__ import annotations

import logging
from typing import Any

from ehrfetch.errors import InvalidResponse
from ehrfetch.network import _fhir
from ehrfetch.network._urls import host_of, same_origin
from ehrfetch.network.model import Organization

log = logging.getLogger("ehrfetch.network.directory")

Json = dict[str, Any]


def parse_directory(body: bytes, *, url: str | None = None) -> list[Organization]:
    """The organizations of a directory answer, in the directory's order."""

    def invalid(message: str) -> InvalidResponse:
        return InvalidResponse(f"directory: {message}", url=url)

    bundle = _fhir.validate(_fhir.load_object(body, invalid), "Bundle", invalid)
    entries = bundle.get("entry") or []
    resources = [entry.get("resource") or {} for entry in entries]
    # Organization.endpoint may reference an Endpoint relatively or by its fullUrl.
    endpoints: dict[str, Json] = {}
    for entry, res in zip(entries, resources, strict=True):
        if res.get("resourceType") == "Endpoint" and res.get("id"):
            endpoints[f"Endpoint/{res['id']}"] = res
            if entry.get("fullUrl"):
                endpoints[entry["fullUrl"]] = res
    organizations: list[Organization] = []
    seen: set[str] = set()
    for res in resources:
        if res.get("resourceType") != "Organization" or res.get("active") is False:
            continue
        org_id = res.get("id")
        if not org_id or org_id in seen:
            log.warning("directory: organization without an id or listed twice: %s", org_id)
            continue
        address = _address(res, endpoints)
        if address is None:
            log.warning("directory: organization %s has no active FHIR endpoint; skipped", org_id)
            continue
        seen.add(org_id)
        base = address.rstrip("/")
        organizations.append(
            Organization(
                id=org_id, name=res.get("name") or org_id, base_url=base, host=host_of(base)
            )
        )
    return organizations


def _usable(endpoint: Json) -> bool:
    address = endpoint.get("address")
    connection = (endpoint.get("connectionType") or {}).get("code")
    return (
        endpoint.get("status", "active") == "active"
        and connection in (None, "hl7-fhir-rest")
        and isinstance(address, str)
        # only absolute http(s) URLs with a host: a same_origin check against itself
        and same_origin(address, address)
    )


def _address(org: Json, endpoints: dict[str, Json]) -> str | None:
    reference = f"Organization/{org['id']}"
    candidates = [endpoints.get(str(ref.get("reference"))) for ref in org.get("endpoint") or []] + [
        ep
        for key, ep in endpoints.items()
        if key.startswith("Endpoint/")
        and (ep.get("managingOrganization") or {}).get("reference") == reference
    ]
    for endpoint in candidates:
        if endpoint is not None and _usable(endpoint):
            address: str = endpoint["address"]
            return address
    return None
