"""Documents, the resources derived from them, lineage and provenance.

Everything derived from one document is written in one transaction, so a crash leaves
either all of it or none of it; every row has a natural key, so writing it again (a
re-run) changes nothing. Consent is checked inside that transaction: a participant
who withdrew while their batch ran gets nothing stored after the withdrawal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from ehrfetch.store.cohort import CohortRules
from ehrfetch.store.purge import consent_gate
from ehrfetch.store.tables import (
    Document,
    DocumentStatus,
    Provenance,
    Quarantine,
    Resource,
    ResourceSource,
    table_of,
)
from ehrfetch.store.upsert import insert_missing


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    participant_id: int
    organization_id: str
    link_id: int | None
    document_reference_id: str
    url: str
    content_type: str
    declared_size: int | None
    declared_sha1: str | None
    computed_sha1: str | None
    sha256: str | None
    size: int | None
    content: bytes | None


@dataclass(frozen=True, slots=True)
class DerivedResource:
    resource_type: str
    fhir_id: str
    dedup_key: str
    body: dict[str, Any]
    source_id: str | None


class SaveOutcome(StrEnum):
    STORED = "stored"
    ALREADY_STORED = "already_stored"
    CONSENT_WITHDRAWN = "consent_withdrawn"


@dataclass(frozen=True, slots=True)
class SaveResult:
    outcome: SaveOutcome
    document_id: int | None = None
    resources: int = 0
    new_resources: int = 0


def stored_document_ids(session: Session, participant_id: int) -> set[tuple[str, str]]:
    """(organization, DocumentReference id) of every document already fetched, in any state."""
    rows = session.execute(
        select(Document.organization_id, Document.document_reference_id).where(
            Document.participant_id == participant_id
        )
    )
    return {(org, ref) for org, ref in rows}


def consent_active(session: Session, participant_id: int, rules: CohortRules) -> bool:
    # The participant's lock first, the check after it: see store/purge.py for why one
    # SELECT … FOR UPDATE with the consent in its WHERE misses a concurrent withdrawal.
    return consent_gate(session, participant_id, rules)


def save_document(
    session: Session,
    document: FetchedDocument,
    resources: Sequence[DerivedResource],
    provenance: Callable[[Sequence[tuple[str, str]]], tuple[str, dict[str, Any]]],
    rules: CohortRules,
    now: datetime,
) -> SaveResult:
    """Store a document, its resources, lineage and Provenance — or nothing.

    ``provenance`` builds (fhir id, body) from the (type, id) targets, so the Provenance
    lists exactly what this document contributed, merged facts included.
    """
    if not consent_active(session, document.participant_id, rules):
        return SaveResult(SaveOutcome.CONSENT_WITHDRAWN)
    existing = _document_id(session, document)
    if existing is not None:
        return SaveResult(SaveOutcome.ALREADY_STORED, existing)
    doc = Document(**_document_fields(document), status=DocumentStatus.STORED, fetched_at=now)
    session.add(doc)
    session.flush()

    keys = [(r.resource_type, r.dedup_key) for r in resources]
    before = _resource_ids(session, document.participant_id, keys)
    insert_missing(
        session,
        table_of(Resource),
        [
            {
                "participant_id": document.participant_id,
                "resource_type": r.resource_type,
                "fhir_id": r.fhir_id,
                "dedup_key": r.dedup_key,
                "body": r.body,
                "created_at": now,
                "updated_at": now,
            }
            for r in resources
        ],
        ["participant_id", "resource_type", "dedup_key"],
    )
    ids = _resource_ids(session, document.participant_id, keys)
    insert_missing(
        session,
        table_of(ResourceSource),
        [
            {
                "resource_id": ids[(r.resource_type, r.dedup_key)],
                "document_id": doc.id,
                "source_resource_id": r.source_id,
                "created_at": now,
            }
            for r in resources
        ],
        ["resource_id", "document_id"],
    )
    targets = [(r.resource_type, r.fhir_id) for r in resources]
    fhir_id, body = provenance(targets)
    session.add(
        Provenance(
            participant_id=document.participant_id,
            document_id=doc.id,
            fhir_id=fhir_id,
            body=body,
            recorded_at=now,
        )
    )
    session.flush()
    return SaveResult(
        SaveOutcome.STORED, doc.id, resources=len(ids), new_resources=len(ids) - len(before)
    )


def quarantine_document(
    session: Session,
    document: FetchedDocument,
    *,
    reason: str,
    code: str,
    now: datetime,
    keep_content: bool = False,
    rules: CohortRules | None = None,
) -> int | None:
    """Record a refused document (and why), once; its bytes only if ``keep_content``.

    A document about another patient is never kept: it is a stranger's record. With
    ``rules``, nothing is recorded (None) once the participant's consent is withdrawn.
    """
    if rules is not None and not consent_active(session, document.participant_id, rules):
        return None
    existing = _document_id(session, document)
    if existing is not None:
        return existing
    fields = _document_fields(document)
    if not keep_content:
        fields["content"] = None
    doc = Document(
        **fields, status=DocumentStatus.QUARANTINED, quarantine_reason=reason, fetched_at=now
    )
    session.add(doc)
    session.flush()
    session.add(
        Quarantine(
            participant_id=document.participant_id,
            document_id=doc.id,
            organization_id=document.organization_id,
            kind="document",
            reason=reason,
            detail={"code": code},
            created_at=now,
        )
    )
    return doc.id


def _document_fields(document: FetchedDocument) -> dict[str, Any]:
    return {
        "participant_id": document.participant_id,
        "organization_id": document.organization_id,
        "link_id": document.link_id,
        "document_reference_id": document.document_reference_id,
        "url": document.url,
        "content_type": document.content_type,
        "declared_size": document.declared_size,
        "declared_sha1": document.declared_sha1,
        "computed_sha1": document.computed_sha1,
        "sha256": document.sha256,
        "size": document.size,
        "content": document.content,
    }


def _document_id(session: Session, document: FetchedDocument) -> int | None:
    return session.scalars(
        select(Document.id).where(
            Document.participant_id == document.participant_id,
            Document.organization_id == document.organization_id,
            Document.document_reference_id == document.document_reference_id,
        )
    ).first()


def _resource_ids(
    session: Session, participant_id: int, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    if not keys:
        return {}
    rows = session.execute(
        select(Resource.resource_type, Resource.dedup_key, Resource.id).where(
            Resource.participant_id == participant_id,
            tuple_(Resource.resource_type, Resource.dedup_key).in_(list(set(keys))),
        )
    )
    return {(kind, key): rid for kind, key, rid in rows}
