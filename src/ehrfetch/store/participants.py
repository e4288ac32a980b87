"""Participants and their name and address history: idempotent bulk upserts."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.store.chunks import chunks
from ehrfetch.store.tables import Participant, ParticipantAddress, ParticipantName, table_of
from ehrfetch.store.upsert import insert_rows


@dataclass
class UpsertCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: list[int] = field(default_factory=list)
    """Positions (in the upsert's input) of rows the store would not take."""

    def add(self, other: UpsertCounts) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged


def record_hash(record: ParticipantRecord) -> str:
    # repr of a frozen dataclass of str/date/enum fields is stable across runs.
    return hashlib.sha256(repr(record).encode()).hexdigest()


def upsert_participants(
    session: Session, records: Sequence[ParticipantRecord], now: datetime
) -> UpsertCounts:
    """Insert new research ids, update changed ones, leave unchanged ones untouched.

    A name or address that stops being current is kept as history, because matching
    needs the names a participant was known by at each organization.
    """
    counts = UpsertCounts()
    hashes = {r.research_id: record_hash(r) for r in records}
    known = {
        rid: (pid, stored)
        for rid, pid, stored in session.execute(
            select(Participant.research_id, Participant.id, Participant.record_hash).where(
                Participant.research_id.in_(hashes)
            )
        )
    }
    new = [r for r in records if r.research_id not in known]
    changed = [
        r
        for r in records
        if r.research_id in known and known[r.research_id][1] != hashes[r.research_id]
    ]
    counts.unchanged = len(records) - len(new) - len(changed)
    if new:
        _insert_new(session, new, hashes, now)
        counts.inserted = len(new)
    if changed:
        _update_changed(
            session,
            changed,
            {r: known[r][0] for r in (c.research_id for c in changed)},
            hashes,
            now,
        )
        counts.updated = len(changed)
    return counts


def _participant_row(record: ParticipantRecord, digest: str, now: datetime) -> dict[str, Any]:
    return {
        "research_id": record.research_id,
        "birth_date": record.birth_date,
        "sex": record.sex,
        "phone": record.phone,
        "email": record.email,
        "ssn_last4": record.ssn_last4,
        "ehr_on_file": record.ehr_on_file,
        "record_hash": digest,
        "updated_at": now,
    }


def _insert_new(
    session: Session, records: Sequence[ParticipantRecord], hashes: dict[str, str], now: datetime
) -> None:
    rows = [_participant_row(r, hashes[r.research_id], now) | {"created_at": now} for r in records]
    table = table_of(Participant)
    ids = session.scalars(
        insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
    ).all()
    names: list[dict[str, Any]] = []
    addresses: list[dict[str, Any]] = []
    for pid, record in zip(ids, records, strict=True):
        names.extend(_name_rows(pid, record.name, record.previous_names, ()))
        addresses.extend(_address_rows(pid, record.address, record.previous_addresses, ()))
    _insert(session, ParticipantName, names)
    _insert(session, ParticipantAddress, addresses)


def _update_changed(
    session: Session,
    records: Sequence[ParticipantRecord],
    ids: dict[str, int],
    hashes: dict[str, str],
    now: datetime,
) -> None:
    pids = list(ids.values())
    old_names: dict[int, list[PersonName]] = {pid: [] for pid in pids}
    for row in session.scalars(
        select(ParticipantName)
        .where(ParticipantName.participant_id.in_(pids))
        .order_by(ParticipantName.participant_id, ParticipantName.position)
    ):
        old_names[row.participant_id].append(
            PersonName(
                family=row.family or "", given=row.given, middle=row.middle, suffix=row.suffix
            )
        )
    old_addresses: dict[int, list[PostalAddress]] = {pid: [] for pid in pids}
    for arow in session.scalars(
        select(ParticipantAddress)
        .where(ParticipantAddress.participant_id.in_(pids))
        .order_by(ParticipantAddress.participant_id, ParticipantAddress.position)
    ):
        old_addresses[arow.participant_id].append(
            PostalAddress(arow.line1, arow.line2, arow.city, arow.state, arow.postal_code)
        )
    session.execute(
        update(Participant),
        [
            {"id": ids[r.research_id]} | _participant_row(r, hashes[r.research_id], now)
            for r in records
        ],
    )
    session.execute(delete(ParticipantName).where(ParticipantName.participant_id.in_(pids)))
    session.execute(delete(ParticipantAddress).where(ParticipantAddress.participant_id.in_(pids)))
    names: list[dict[str, Any]] = []
    addresses: list[dict[str, Any]] = []
    for record in records:
        pid = ids[record.research_id]
        names.extend(_name_rows(pid, record.name, record.previous_names, old_names[pid]))
        addresses.extend(
            _address_rows(pid, record.address, record.previous_addresses, old_addresses[pid])
        )
    _insert(session, ParticipantName, names)
    _insert(session, ParticipantAddress, addresses)


def _name_rows(
    pid: int, current: PersonName, previous: Iterable[PersonName], history: Iterable[PersonName]
) -> list[dict[str, Any]]:
    kept: list[PersonName] = [current]
    for name in (*previous, *history):
        if not any(name.same_as(k) for k in kept):
            kept.append(name)
    return [
        {
            "participant_id": pid,
            "current": position == 0,
            "position": position,
            "given": n.given,
            "middle": n.middle,
            "family": n.family,
            "suffix": n.suffix,
        }
        for position, n in enumerate(kept)
    ]


def _address_rows(
    pid: int,
    current: PostalAddress | None,
    previous: Iterable[PostalAddress],
    history: Iterable[PostalAddress],
) -> list[dict[str, Any]]:
    kept: list[PostalAddress] = [current] if current is not None else []
    for address in (*previous, *history):
        if not any(address.same_as(k) for k in kept):
            kept.append(address)
    return [
        {
            "participant_id": pid,
            "current": current is not None and position == 0,
            "position": position,
            "line1": a.line1,
            "line2": a.line2,
            "city": a.city,
            "state": a.state,
            "postal_code": a.postal_code,
        }
        for position, a in enumerate(kept)
    ]


def _insert(
    session: Session, table: type[ParticipantName | ParticipantAddress], rows: list[dict[str, Any]]
) -> None:
    if rows:
        insert_rows(session, table_of(table), rows)


def participant_ids(session: Session, research_ids: Iterable[str]) -> dict[str, int]:
    """research id → participant id, for the ids that exist."""
    wanted = list(set(research_ids))
    rows = session.execute(
        select(Participant.research_id, Participant.id).where(Participant.research_id.in_(wanted))
    )
    return dict(rows.all())


def load_records(session: Session, ids: Iterable[int]) -> dict[int, ParticipantRecord]:
    """The participants' demographics with their name and address history.

    Columns, not ORM instances: a batch loads a thousand participants with their names
    and addresses, and building ORM objects for them cost ~47 ms of CPU per 1,000
    participants; rows, ~30 ms.
    """
    wanted = list(set(ids))
    n, a, p = ParticipantName, ParticipantAddress, Participant
    names: dict[int, list[PersonName]] = {pid: [] for pid in wanted}
    for pid, family, given, middle, suffix in session.execute(
        select(n.participant_id, n.family, n.given, n.middle, n.suffix)
        .where(n.participant_id.in_(wanted))
        .order_by(n.participant_id, n.position)
    ):
        names[pid].append(
            PersonName(family=family or "", given=given, middle=middle, suffix=suffix)
        )
    current: dict[int, PostalAddress] = {}
    previous: dict[int, list[PostalAddress]] = {pid: [] for pid in wanted}
    for pid, is_current, *lines in session.execute(
        select(a.participant_id, a.current, a.line1, a.line2, a.city, a.state, a.postal_code)
        .where(a.participant_id.in_(wanted))
        .order_by(a.participant_id, a.position)
    ):
        address = PostalAddress(*lines)
        if not is_current:
            previous[pid].append(address)
        elif pid not in current:  # the first current one, as before
            current[pid] = address
    records = {}
    for row in session.execute(
        select(
            p.id, p.research_id, p.birth_date, p.sex, p.phone, p.email, p.ssn_last4, p.ehr_on_file
        ).where(p.id.in_(wanted))
    ):
        person_names = names[row.id]
        records[row.id] = ParticipantRecord(
            research_id=row.research_id,
            name=person_names[0] if person_names else PersonName(family=""),
            birth_date=row.birth_date,
            sex=row.sex,
            address=current.get(row.id),
            previous_names=tuple(person_names[1:]),
            previous_addresses=tuple(previous[row.id]),
            phone=row.phone,
            email=row.email,
            ssn_last4=row.ssn_last4,
            ehr_on_file=row.ehr_on_file,
        )
    return records


Row = tuple[int, str | None, str | None, str | None, str | None, str | None]


def housemates(session: Session, ids: Iterable[int]) -> dict[int, tuple[str, ...]]:
    """For each participant among ``ids`` who shares surname and address, or surname and
    phone, with other participants of the program (twins, parents and children,
    spouses): those housemates' given names.

    Matching uses them: a housemate's record at a site looks like the participant's, and
    its given name is the housemate's.
    """
    wanted = sorted(set(ids))
    mine: list[Row] = []
    for ids_chunk in chunks(wanted):
        mine.extend(_current_rows(session, Participant.id.in_(ids_chunk)))
    # The database hands back only people who share a surname and a ZIP code or a phone
    # number with one of ``mine`` (a superset of the household keys, which also compare
    # the street line); selecting by surname alone fetched ~47 % of a 300,000-person
    # cohort for every batch of 1,000 (1.1 s of CPU and +180 MB for the batch, growing
    # with the cohort).
    everyone: dict[int, Row] = {}
    for chunk in chunks(mine):
        condition = _sharing_a_key(chunk)
        if condition is not None:
            everyone.update((row[0], row) for row in _current_rows(session, condition))
    holders: dict[tuple[str, ...], set[int]] = {}
    given_of: dict[int, str] = {}
    for row in everyone.values():
        given_of[row[0]] = row[2] or ""
        for key in _household_keys(row):
            holders.setdefault(key, set()).add(row[0])
    found: dict[int, tuple[str, ...]] = {}
    for row in mine:
        others = set().union(*(holders.get(k, set()) for k in _household_keys(row))) - {row[0]}
        names = tuple(sorted({given_of[o] for o in others if given_of.get(o)}))
        if names:
            found[row[0]] = names
    return found


def _current_rows(session: Session, condition: Any) -> list[Row]:
    """Participants' current surname, given name, street line, postal code and phone."""
    query = (
        select(
            Participant.id,
            ParticipantName.family,
            ParticipantName.given,
            ParticipantAddress.line1,
            ParticipantAddress.postal_code,
            Participant.phone,
        )
        .join(
            ParticipantName,
            (ParticipantName.participant_id == Participant.id) & ParticipantName.current,
        )
        .outerjoin(
            ParticipantAddress,
            (ParticipantAddress.participant_id == Participant.id) & ParticipantAddress.current,
        )
        .where(condition)
    )
    return [(a, b, c, d, e, f) for a, b, c, d, e, f in session.execute(query)]


def _sharing_a_key(rows: Sequence[Row]) -> ColumnElement[bool] | None:
    """Who has one of these rows' (surname, ZIP code) or (surname, phone) pairs.

    Written for the database's plan: the surname test alone reads one table, so it
    filters that table's scan; the ZIP-or-phone test cuts what is left; the pairs,
    each compared as one string ``surname|key`` (a scalar IN list is hashed, a list of
    tuples is searched row by row: over ten minutes a batch at 300,000), are computed for
    those only. A name holding the separator can only let extra people through, whom
    ``_household_keys`` drops.

    The database may change the case of ASCII letters only (SQLite; PostgreSQL under
    the C locale), where ``_household_keys`` casefolds: the surname is compared both
    lowered and upper-cased, so the usual spellings of one name (NUÑEZ, Nuñez, nuñez)
    meet on one of the two.
    """
    zip5 = func.substr(ParticipantAddress.postal_code, 1, 5, type_=String)
    with_zip = [(f, z[:5]) for _, f, _, line1, z, _ in rows if f and line1 and z]
    with_phone = [(f, phone) for _, f, _, _, _, phone in rows if f and phone]
    if not with_zip and not with_phone:
        return None
    keyed: list[ColumnElement[bool]] = []
    if with_zip:
        keyed.append(zip5.in_(sorted({z for _, z in with_zip})))
    if with_phone:
        keyed.append(Participant.phone.in_(sorted({p for _, p in with_phone})))
    named: list[ColumnElement[bool]] = []
    paired: list[ColumnElement[bool]] = []
    for fold, sql in ((str.lower, func.lower), (str.upper, func.upper)):
        folded = sql(ParticipantName.family, type_=String)
        named.append(folded.in_(sorted({fold(f) for f, _ in (*with_zip, *with_phone)})))
        for key, pairs in ((zip5, with_zip), (Participant.phone, with_phone)):
            if pairs:
                wanted = sorted({f"{fold(f)}|{k}" for f, k in pairs})
                paired.append(folded.concat("|").concat(key).in_(wanted))
    return and_(or_(*named), or_(*keyed), or_(*paired))


def _household_keys(row: Row) -> list[tuple[str, ...]]:
    _, family, _, line1, postal, phone = row
    surname = " ".join((family or "").casefold().split())
    if not surname:
        return []
    keys: list[tuple[str, ...]] = []
    if line1 and postal:
        keys.append(("address", surname, " ".join(line1.casefold().split()), postal[:5]))
    if phone:
        keys.append(("phone", surname, phone))
    return keys
