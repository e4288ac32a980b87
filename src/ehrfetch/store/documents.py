"""Documents, the resources derived from them, lineage and provenance.

Everything derived from a document is written in the transaction that writes the
document (a participant's documents are written together, ``save_documents``), so a
crash leaves either all of it or none of it; every row has a natural key, so writing it
again (a re-run) changes nothing. Consent is checked inside that transaction: a participant
who withdrew while their batch ran gets nothing stored after the withdrawal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import bindparam, insert, select, tuple_
from sqlalchemy.orm import Session

from ehrfetch.store.cohort import CohortRules
from ehrfetch.store.merge import Resolution, resolve_documents
from ehrfetch.store.purge import consent_gate
from ehrfetch.store.tables import (
    Document,
    DocumentStatus,
    Provenance,
    Quarantine,
    Resource,
    ResourceAlias,
    ResourceSource,
    table_of,
)
from ehrfetch.store.upsert import insert_missing, insert_rows

_DOCUMENT = table_of(Document)
# Built once with an expanding parameter: it runs for every participant's documents.
_KNOWN_DOCUMENTS = select(
    _DOCUMENT.c.organization_id, _DOCUMENT.c.document_reference_id, _DOCUMENT.c.id
).where(
    _DOCUMENT.c.participant_id == bindparam("pid"),
    tuple_(_DOCUMENT.c.organization_id, _DOCUMENT.c.document_reference_id).in_(
        bindparam("keys", expanding=True)
    ),
)


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


def stored_document_ids(
    session: Session, participant_id: int
) -> dict[tuple[str, str], DocumentStatus]:
    """(organization, DocumentReference id) of every document already fetched, with its
    state (stored or quarantined)."""
    rows = session.execute(
        select(Document.organization_id, Document.document_reference_id, Document.status).where(
            Document.participant_id == participant_id
        )
    )
    return {(org, ref): status for org, ref, status in rows}


def consent_active(session: Session, participant_id: int, rules: CohortRules) -> bool:
    # The participant's lock first, the check after it: see store/purge.py for why one
    # SELECT … FOR UPDATE with the consent in its WHERE misses a concurrent withdrawal.
    return consent_gate(session, participant_id, rules)


@dataclass(frozen=True, slots=True)
class DocumentToSave:
    """A fetched document with what was derived from it, ready to be written."""

    document: FetchedDocument
    resources: Sequence[DerivedResource]
    provenance: Callable[[Sequence[tuple[str, str]]], tuple[str, dict[str, Any]]]
    """Builds (fhir id, body) from the (type, id) targets as stored."""
    now: datetime


def save_document(
    session: Session,
    document: FetchedDocument,
    resources: Sequence[DerivedResource],
    provenance: Callable[[Sequence[tuple[str, str]]], tuple[str, dict[str, Any]]],
    rules: CohortRules,
    now: datetime,
    *,
    consent_checked: bool = False,
) -> SaveResult:
    """Store one document, its resources, lineage and Provenance — or nothing."""
    items = [DocumentToSave(document, resources, provenance, now)]
    return save_documents(session, items, rules, consent_checked=consent_checked)[0]


def save_documents(
    session: Session,
    items: Sequence[DocumentToSave],
    rules: CohortRules,
    *,
    consent_checked: bool = False,
) -> list[SaveResult]:
    """Store one participant's documents, their resources, lineage and Provenance.

    The result for each item, in order. ``consent_checked``: the caller took
    :func:`consent_gate` in this transaction already.

    Each resource is stored once per fact (``store/merge.py``, docs/dedup.md): one the
    participant already has — sent by another site or by an earlier document of
    ``items``, possibly coded in another terminology — gains this document as a source
    and keeps its stored body. ``provenance`` builds (fhir id, body) from the (type, id)
    targets as stored, so the Provenance lists exactly what this document contributed,
    merged facts included, under the ids the export writes them with. A document nothing
    was derived from (PDF, text) gets none: a Provenance must have a target.

    The result is what saving the documents one by one in this order would store, in a
    statement per table instead of a statement per table and document: statements, not
    rows, were the store's cost per participant (docs/benchmarks.md, "Throughput").
    """
    if not items:
        return []
    participant_id = items[0].document.participant_id
    if any(item.document.participant_id != participant_id for item in items):
        raise ValueError("save_documents: the documents of one participant at a time")
    if not consent_checked and not consent_active(session, participant_id, rules):
        return [SaveResult(SaveOutcome.CONSENT_WITHDRAWN)] * len(items)
    known = _document_ids(session, participant_id, [_key(item.document) for item in items])
    results: list[SaveResult | None] = [None] * len(items)
    fresh: list[int] = []
    first_of: dict[tuple[str, str], int] = {}
    for index, item in enumerate(items):
        key = _key(item.document)
        if key in known:
            results[index] = SaveResult(SaveOutcome.ALREADY_STORED, known[key])
        elif key not in first_of:
            first_of[key] = index
            fresh.append(index)
    if not fresh:
        return _completed(results, items, first_of)
    # Core inserts, not ORM objects: this runs for every document of every participant,
    # and the unit of work's flush was a large share of the store's time per document.
    doc_ids = _insert_documents(
        session,
        [
            {
                **_document_fields(items[i].document),
                "status": DocumentStatus.STORED,
                "fetched_at": items[i].now,
            }
            for i in fresh
        ],
    )
    merged = resolve_documents(session, participant_id, [items[i].resources for i in fresh])
    ids = _insert_new(
        session,
        participant_id,
        [(items[i].now, m) for i, m in zip(fresh, merged, strict=True)],
    )
    lineage: list[dict[str, Any]] = []
    aliases: dict[tuple[str, str, int], dict[str, Any]] = {}
    provenances: list[dict[str, Any]] = []
    for index, doc_id, resolution in zip(fresh, doc_ids, merged, strict=True):
        item = items[index]
        for group in resolution.new:
            group.resource_id = ids[(group.resource_type, group.dedup_key)]
        sources: dict[int, dict[str, Any]] = {}
        for group, r in zip(resolution.groups, item.resources, strict=True):
            assert group.resource_id is not None
            # One row per stored resource: a fact twice in this document (two codings
            # of it) keeps the first entry's id in the document as its source.
            sources.setdefault(
                group.resource_id,
                {
                    "resource_id": group.resource_id,
                    "document_id": doc_id,
                    "source_resource_id": r.source_id,
                    "created_at": item.now,
                },
            )
        lineage.extend(sources.values())
        for group, alias, (system, code) in resolution.aliases:
            assert group.resource_id is not None
            aliases.setdefault(
                (group.resource_type, alias, group.resource_id),
                {
                    "participant_id": participant_id,
                    "resource_type": group.resource_type,
                    "alias_key": alias,
                    "resource_id": group.resource_id,
                    "system": system,
                    "code": code,
                },
            )
        # The ids as stored: a fact merged into one another site sent first is that one.
        targets = list(dict.fromkeys((g.resource_type, g.fhir_id) for g in resolution.groups))
        # Nothing derived (a PDF, a text, a document of skipped entries): no Provenance, as
        # FHIR requires one target or more; the document's row keeps where it came from.
        if targets:
            fhir_id, body = item.provenance(targets)
            provenances.append(
                {
                    "participant_id": participant_id,
                    "document_id": doc_id,
                    "fhir_id": fhir_id,
                    "body": body,
                    "recorded_at": item.now,
                }
            )
        results[index] = SaveResult(
            SaveOutcome.STORED, doc_id, resources=len(sources), new_resources=len(resolution.new)
        )
    insert_missing(session, table_of(ResourceSource), lineage, ["resource_id", "document_id"])
    insert_missing(
        session,
        table_of(ResourceAlias),
        list(aliases.values()),
        ["participant_id", "resource_type", "alias_key", "resource_id"],
    )
    if provenances:
        insert_rows(session, table_of(Provenance), provenances)
    return _completed(results, items, first_of)


def _completed(
    results: list[SaveResult | None],
    items: Sequence[DocumentToSave],
    first_of: dict[tuple[str, str], int],
) -> list[SaveResult]:
    """Fill in the repeats: a document listed twice is stored by its first mention."""
    done: list[SaveResult] = []
    for index, result in enumerate(results):
        if result is None:
            first = results[first_of[_key(items[index].document)]]
            assert first is not None
            result = SaveResult(SaveOutcome.ALREADY_STORED, first.document_id)
        done.append(result)
    return done


def quarantine_document(
    session: Session,
    document: FetchedDocument,
    *,
    reason: str,
    code: str,
    now: datetime,
    keep_content: bool = False,
    rules: CohortRules | None = None,
    consent_checked: bool = False,
) -> int | None:
    """Record a refused document (and why), once; its bytes only if ``keep_content``.

    A document about another patient is never kept: it is a stranger's record. With
    ``rules``, nothing is recorded (None) once the participant's consent is withdrawn.
    """
    if (
        rules is not None
        and not consent_checked
        and not consent_active(session, document.participant_id, rules)
    ):
        return None
    existing = _document_ids(session, document.participant_id, [_key(document)]).get(_key(document))
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


def _insert_documents(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert the documents; their ids in the order of ``rows`` (one statement)."""
    table = table_of(Document)
    result = session.execute(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
    )
    return [int(row_id) for row_id in result.scalars()]


def _key(document: FetchedDocument) -> tuple[str, str]:
    return (document.organization_id, document.document_reference_id)


def _document_ids(
    session: Session, participant_id: int, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """The ids of those of ``keys`` (organization, DocumentReference id) already stored."""
    rows = session.execute(_KNOWN_DOCUMENTS, {"pid": participant_id, "keys": sorted(set(keys))})
    return {(org, ref): doc_id for org, ref, doc_id in rows}


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


def _insert_new(
    session: Session, participant_id: int, merged: Sequence[tuple[datetime, Resolution]]
) -> dict[tuple[str, str], int]:
    """Insert the new resources of every document; their row ids by (type, dedup key).

    RETURNING hands the ids back with the insert (one statement on PostgreSQL, one
    parameter whatever the number of rows: ``insert_rows``) instead of a query after
    it. No conflict is possible: the participant's row is locked (``consent_gate``) and
    ``resolve`` found none of these keys stored (nor gave one key to two new resources).
    """
    rows = [
        {
            "participant_id": participant_id,
            "resource_type": group.resource_type,
            "fhir_id": group.fhir_id,
            "dedup_key": group.dedup_key,
            "body": _renamed(group.body, resolution.renamed),
            "created_at": now,
            "updated_at": now,
        }
        for now, resolution in merged
        for group in resolution.new
    ]
    if not rows:
        return {}
    found = insert_rows(
        session,
        table_of(Resource),
        rows,
        skip_existing=("participant_id", "resource_type", "dedup_key"),
        returning=("resource_type", "dedup_key", "id"),
    )
    return {(kind, key): int(rid) for kind, key, rid in found}


def _renamed(body: dict[str, Any] | None, renamed: dict[str, str]) -> dict[str, Any]:
    """The body with references to resources merged under another id pointed at it.

    An Encounter's diagnosis naming this document's Condition must name the Condition
    as stored, when that is the one another site sent first.
    """
    assert body is not None
    if not renamed:
        return body
    result = _repoint(body, renamed)
    assert isinstance(result, dict)
    return result


def _repoint(node: Any, renamed: dict[str, str]) -> Any:
    if isinstance(node, list):
        return [_repoint(item, renamed) for item in node]
    if not isinstance(node, dict):
        return node
    out = {name: _repoint(value, renamed) for name, value in node.items()}
    reference = out.get("reference")
    if isinstance(reference, str) and reference in renamed:
        out["reference"] = renamed[reference]
    return out
