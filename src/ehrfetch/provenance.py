"""FHIR Provenance for what ehrfetch derived from one fetched document.

One Provenance per document: its targets are the resources derived from it (including
facts another site had already sent: the lineage of a merged fact lists every
document), its source entity is the site's DocumentReference with the attachment's URL
and hashes, the site is the transmitter and ehrfetch the performer, and the policy is
the purpose of use the data was requested under.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from ehrfetch.errors import sanitize_url

PURPOSE_OF_USE_URI = "urn:oid:2.16.840.1.113883.5.8#"  # HL7 v3 ActReason, as UDAP uses it
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
SHA256_SYSTEM = "urn:ehrfetch:sha256"


@cache
def software() -> str:
    # Cached: reading package metadata costs more than building the whole Provenance.
    try:
        return f"ehrfetch {version('ehrfetch')}"
    except PackageNotFoundError:  # running from a source tree without installing
        return "ehrfetch"


@dataclass(frozen=True, slots=True)
class SourceDocument:
    organization_id: str
    organization_name: str
    document_reference_id: str
    url: str
    sha256: str
    sha1: str | None
    content_type: str


def provenance_id(research_id: str, source: SourceDocument) -> str:
    key = f"{research_id}|{source.organization_id}|{source.document_reference_id}"
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def build_provenance(
    *,
    research_id: str,
    source: SourceDocument,
    targets: Sequence[tuple[str, str]],
    purpose_of_use: str,
    recorded: datetime,
) -> dict[str, Any]:
    """The Provenance resource for ``targets`` as (type, id) pairs.

    Not validated here: it is built for every stored document, and fhir.resources'
    validation was most of its cost (5 % of a batch worker's CPU). Every value in it is
    valid by construction or was validated where it came in: the DocumentReference's
    id, attachment URL, hash and content type with the search result that listed it,
    the targets with the resources derived, the organization with the directory.
    ``test_provenance.py`` validates what this builds, in each of its shapes.
    """
    if recorded.tzinfo is None:
        raise ValueError("build_provenance: recorded must be timezone-aware (a FHIR instant)")
    body: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": provenance_id(research_id, source),
        "target": [{"reference": f"{kind}/{fhir_id}"} for kind, fhir_id in targets],
        "recorded": recorded.isoformat(),
        "policy": [PURPOSE_OF_USE_URI + purpose_of_use],
        "activity": {
            "coding": [{"system": DATA_OPERATION, "code": "CREATE", "display": "create"}],
            "text": "derived from a document fetched from a network member",
        },
        "agent": [
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "transmitter"}]},
                "who": {
                    "reference": f"Organization/{source.organization_id}",
                    "display": source.organization_name,
                },
            },
            {
                "type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "performer"}]},
                "who": {"display": software()},
            },
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "reference": f"DocumentReference/{source.document_reference_id}",
                    "identifier": {"system": SHA256_SYSTEM, "value": source.sha256},
                    "display": f"{sanitize_url(source.url)} ({source.content_type})",
                },
            }
        ],
    }
    if source.sha1:
        body["entity"][0]["what"]["extension"] = [
            {
                # FHIR's Attachment.hash: the SHA-1 the site declared, as verified.
                "url": "urn:ehrfetch:attachment-sha1",
                "valueBase64Binary": source.sha1,
            }
        ]
    return body
