"""The export's queries: resources, Provenance and participants, streamed.

Every query is read in chunks of ``chunk`` rows (``yield_per``: a server-side cursor on
PostgreSQL, ``fetchmany`` on SQLite), so what a caller holds at once is one chunk,
however large the store. Resources come ordered by (type, id) — the order of the
``(resource_type, fhir_id)`` unique index — so a writer needs one open file at a time
and two exports of the same store are byte-for-byte comparable.

Scope (:class:`ExportScope`): ``since`` keeps resources created or updated at or after
it and Provenance recorded at or after it; ``research_id`` keeps one participant. The
participants exported are exactly those with at least one resource or Provenance in
scope, so every ``Patient/{research id}`` reference in the export resolves.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select, true
from sqlalchemy.orm import Session

from ehrfetch.errors import StoreError
from ehrfetch.store.tables import (
    Participant,
    ParticipantAddress,
    ParticipantName,
    Provenance,
    Resource,
    Sex,
)

DEFAULT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ExportScope:
    since: datetime | None = None
    research_id: str | None = None


@dataclass(frozen=True, slots=True)
class NameRow:
    current: bool
    given: str | None
    middle: str | None
    family: str | None
    suffix: str | None


@dataclass(frozen=True, slots=True)
class AddressRow:
    current: bool
    line1: str | None
    line2: str | None
    city: str | None
    state: str | None
    postal_code: str | None


@dataclass(frozen=True, slots=True)
class ParticipantRow:
    research_id: str
    birth_date: date | None = None
    sex: Sex | None = None
    phone: str | None = None
    email: str | None = None
    names: tuple[NameRow, ...] = ()
    addresses: tuple[AddressRow, ...] = ()


def participant_key(session: Session, research_id: str) -> int:
    """The participant's row id; :class:`StoreError` for an unknown research id."""
    found = session.scalar(select(Participant.id).where(Participant.research_id == research_id))
    if found is None:
        raise StoreError(f"no participant with research id {research_id}")
    return found


def stream_resources(
    session: Session, scope: ExportScope, chunk: int = DEFAULT_CHUNK
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(resource type, body) of every resource in scope, by type then id."""
    stmt = (
        select(Resource.resource_type, Resource.body)
        .where(_resource_filter(session, scope))
        .order_by(Resource.resource_type, Resource.fhir_id)
    )
    for row in session.execute(stmt, execution_options={"yield_per": chunk}):
        yield row.resource_type, row.body


def stream_provenance(
    session: Session, scope: ExportScope, chunk: int = DEFAULT_CHUNK
) -> Iterator[dict[str, Any]]:
    """The body of every Provenance in scope, by id."""
    stmt = (
        select(Provenance.body)
        .where(_provenance_filter(session, scope))
        .order_by(Provenance.fhir_id)
    )
    yield from session.scalars(stmt, execution_options={"yield_per": chunk})


def stream_participants(
    session: Session,
    scope: ExportScope,
    *,
    demographics: bool,
    chunk: int = DEFAULT_CHUNK,
) -> Iterator[ParticipantRow]:
    """Participants with data in scope, by research id; demographics only when asked."""
    has_data = or_(
        exists().where(Resource.participant_id == Participant.id, _resource_filter(session, scope)),
        exists().where(
            Provenance.participant_id == Participant.id, _provenance_filter(session, scope)
        ),
    )
    stmt = select(
        Participant.id,
        Participant.research_id,
        Participant.birth_date,
        Participant.sex,
        Participant.phone,
        Participant.email,
    ).where(has_data)
    if scope.research_id is not None:
        stmt = stmt.where(Participant.research_id == scope.research_id)
    stmt = stmt.order_by(Participant.research_id)
    result = session.execute(stmt, execution_options={"yield_per": chunk})
    for rows in result.partitions():
        if not demographics:
            for row in rows:
                yield ParticipantRow(row.research_id)
            continue
        # One query per chunk for names and one for addresses: never one per participant.
        ids = [row.id for row in rows]
        names = _names(session, ids)
        addresses = _addresses(session, ids)
        for row in rows:
            yield ParticipantRow(
                research_id=row.research_id,
                birth_date=row.birth_date,
                sex=row.sex,
                phone=row.phone,
                email=row.email,
                names=tuple(names.get(row.id, ())),
                addresses=tuple(addresses.get(row.id, ())),
            )


def _names(session: Session, ids: list[int]) -> dict[int, list[NameRow]]:
    found: dict[int, list[NameRow]] = {}
    stmt = (
        select(ParticipantName)
        .where(ParticipantName.participant_id.in_(ids))
        .order_by(ParticipantName.participant_id, ParticipantName.position)
    )
    for n in session.scalars(stmt):
        found.setdefault(n.participant_id, []).append(
            NameRow(n.current, n.given, n.middle, n.family, n.suffix)
        )
    return found


def _addresses(session: Session, ids: list[int]) -> dict[int, list[AddressRow]]:
    found: dict[int, list[AddressRow]] = {}
    stmt = (
        select(ParticipantAddress)
        .where(ParticipantAddress.participant_id.in_(ids))
        .order_by(ParticipantAddress.participant_id, ParticipantAddress.position)
    )
    for a in session.scalars(stmt):
        found.setdefault(a.participant_id, []).append(
            AddressRow(a.current, a.line1, a.line2, a.city, a.state, a.postal_code)
        )
    return found


def _participant_id(session: Session, scope: ExportScope) -> int | None:
    return None if scope.research_id is None else participant_key(session, scope.research_id)


def _resource_filter(session: Session, scope: ExportScope) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    pid = _participant_id(session, scope)
    if pid is not None:
        conditions.append(Resource.participant_id == pid)
    if scope.since is not None:
        conditions.append(
            or_(Resource.updated_at >= scope.since, Resource.created_at >= scope.since)
        )
    return _all(conditions)


def _provenance_filter(session: Session, scope: ExportScope) -> ColumnElement[bool]:
    conditions: list[ColumnElement[bool]] = []
    pid = _participant_id(session, scope)
    if pid is not None:
        conditions.append(Provenance.participant_id == pid)
    if scope.since is not None:
        conditions.append(Provenance.recorded_at >= scope.since)
    return _all(conditions)


def _all(conditions: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    combined = conditions[0]
    for condition in conditions[1:]:
        combined = combined & condition
    return combined
