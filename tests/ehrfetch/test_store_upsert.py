"""insert_rows: many rows in one statement, storing exactly what a row-by-row insert stores."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, insert, select
from sqlalchemy.exc import StatementError

from ehrfetch.store.tables import (
    Audit,
    DecidedBy,
    LinkDecision,
    Organization,
    Participant,
    PatientLink,
    Sex,
    table_of,
)
from ehrfetch.store.upsert import insert_missing, insert_rows, update_rows
from support import StoreUnderTest

EASTERN = timezone(timedelta(hours=-5))


def audit_rows(batch_id: int) -> list[dict[str, Any]]:
    """Every kind of value the store writes, the awkward ones included."""
    texts = ['say "hi"', "back\\slash", "ünïcødé ✓", "new\nline", "", "'; DROP TABLE audit; --"]
    floats = [0.1, 1e-300, 123456.789, -0.0, None, 7.0]
    rows = []
    for i, (text_value, number) in enumerate(zip(texts, floats, strict=True)):
        rows.append(
            {
                "at": datetime(2026, 1, 2, 3, 4, 5, 123456 + i, tzinfo=EASTERN),
                "research_id": f"R{i}" if i % 2 else None,
                "organization_id": text_value,
                "operation": "match",
                "purpose": None,
                "outcome": text_value,
                "http_status": 200 + i,
                "duration_ms": number,
                "run_id": 2**40 + i,
                "batch_id": batch_id,
            }
        )
    return rows


def stored_audit(db: StoreUnderTest, batch_id: int) -> list[tuple[Any, ...]]:
    table = table_of(Audit)
    columns = [c for c in table.c if c.name not in ("id", "batch_id")]
    with db.sessions() as session:
        found = session.execute(
            select(*columns).where(table.c.batch_id == batch_id).order_by(table.c.http_status)
        )
        return [tuple(row) for row in found]


def test_rows_come_back_as_a_row_by_row_insert_stores_them(db: StoreUnderTest) -> None:
    with db.sessions.begin() as session:
        insert_rows(session, table_of(Audit), audit_rows(1))
        session.execute(insert(table_of(Audit)), audit_rows(2))
    bulk, plain = stored_audit(db, 1), stored_audit(db, 2)
    assert len(bulk) == 6
    assert bulk == plain
    first = bulk[0]
    assert first[0] == datetime(2026, 1, 2, 8, 4, 5, 123456, tzinfo=UTC)  # to the microsecond
    assert first[0].tzinfo is not None


def test_a_float_json_cannot_carry_is_stored_as_row_by_row(db: StoreUnderTest) -> None:
    # JSON has no NaN or Infinity: such rows must not turn into NULLs on the way.
    rows = audit_rows(1)[:3]
    rows[0]["duration_ms"] = math.nan
    rows[1]["duration_ms"] = math.inf
    with db.sessions.begin() as session:
        insert_rows(session, table_of(Audit), rows)
        session.execute(insert(table_of(Audit)), [dict(r, batch_id=2) for r in rows])
    bulk, plain = stored_audit(db, 1), stored_audit(db, 2)
    durations = [row[7] for row in bulk]  # duration_ms
    assert durations[1] == [row[7] for row in plain][1]
    if db.backend == "postgresql":
        assert math.isnan(durations[0]) and durations[1] == math.inf


def test_naive_datetimes_are_refused(db: StoreUnderTest) -> None:
    rows = audit_rows(1)
    rows[3]["at"] = datetime(2026, 1, 1, 12, 0)
    with pytest.raises(StatementError, match="naive datetime"), db.sessions.begin() as session:
        insert_rows(session, table_of(Audit), rows)
    assert stored_audit(db, 1) == []  # nothing of the statement is left


def add_participant(db: StoreUnderTest) -> int:
    now = datetime.now(UTC)
    with db.sessions.begin() as session:
        participant = Participant(
            research_id="R1", birth_date=date(1970, 1, 1), sex=Sex.FEMALE,
            created_at=now, updated_at=now,
        )  # fmt: skip
        session.add(participant)
        session.add(
            Organization(id="org1", name="Org", base_url="https://o", host="o", updated_at=now)
        )
        session.flush()
        return participant.id


def link_row(pid: int, patient: str, decision: LinkDecision, reasons: list[str]) -> dict[str, Any]:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    return {
        "participant_id": pid,
        "organization_id": "org1",
        "network_patient_id": patient,
        "grade": "certain",
        "network_score": 0.99,
        "score": 0.97,
        "decision": decision,
        "decided_by": DecidedBy.AUTO,
        "reasons": reasons,
        "created_at": now,
        "decided_at": now,
    }


def stored_links(db: StoreUnderTest) -> dict[str, tuple[Any, ...]]:
    with db.sessions() as session:
        rows = session.execute(
            select(PatientLink.network_patient_id, PatientLink.decision, PatientLink.reasons)
        )
        return {patient: (decision, reasons) for patient, decision, reasons in rows}


def test_skip_existing_keeps_stored_rows_and_adds_the_rest(db: StoreUnderTest) -> None:
    pid = add_participant(db)
    keys = ["participant_id", "organization_id", "network_patient_id"]
    reasons = ['quote " and \\', "ünï", "{not json}"]
    with db.sessions.begin() as session:
        insert_missing(
            session,
            table_of(PatientLink),
            [link_row(pid, "p1", LinkDecision.ACCEPT, reasons)],
            keys,
        )
    with db.sessions.begin() as session:
        insert_missing(
            session,
            table_of(PatientLink),
            [
                link_row(pid, "p1", LinkDecision.REJECT, ["changed"]),
                link_row(pid, "p2", LinkDecision.REVIEW, []),
            ],
            keys,
        )
    assert stored_links(db) == {
        "p1": (LinkDecision.ACCEPT, reasons),  # the JSON list came back a list, unchanged
        "p2": (LinkDecision.REVIEW, []),
    }


def test_returning_hands_back_the_inserted_rows_and_none_skipped(db: StoreUnderTest) -> None:
    pid = add_participant(db)
    keys = ["participant_id", "organization_id", "network_patient_id"]
    with db.sessions.begin() as session:
        insert_rows(session, table_of(PatientLink), [link_row(pid, "p1", LinkDecision.ACCEPT, [])])
    with db.sessions.begin() as session:
        found = insert_rows(
            session,
            table_of(PatientLink),
            [link_row(pid, patient, LinkDecision.REVIEW, []) for patient in ("p1", "p2", "p3")],
            skip_existing=keys,
            returning=("network_patient_id", "decision", "id"),
        )
        stored = dict(session.execute(select(PatientLink.network_patient_id, PatientLink.id)).all())
    # p1 was there: skipped, so not handed back. The others with the ids they were given,
    # and values read back through the column types (the enum, not its text).
    assert sorted(found) == sorted(
        (patient, LinkDecision.REVIEW, stored[patient]) for patient in ("p2", "p3")
    )
    with db.sessions.begin() as session:
        assert (
            insert_rows(
                session, table_of(PatientLink), [link_row(pid, "p4", LinkDecision.ACCEPT, [])]
            )
            == []
        )


def test_unknown_enum_values_are_refused(db: StoreUnderTest) -> None:
    pid = add_participant(db)
    row = link_row(pid, "p1", LinkDecision.ACCEPT, [])
    row["decision"] = "maybe"
    with pytest.raises(StatementError), db.sessions.begin() as session:
        insert_rows(session, table_of(PatientLink), [row])
    assert stored_links(db) == {}


def test_postgresql_gets_one_statement_whatever_the_number_of_rows(db: StoreUnderTest) -> None:
    sent: list[tuple[str, bool]] = []

    def record(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool
    ) -> None:
        sent.append((statement, many))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.sessions.begin() as session:
            insert_rows(session, table_of(Audit), audit_rows(1) * 5)
            insert_rows(session, table_of(Audit), audit_rows(2)[:2])
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    inserts = [(statement, many) for statement, many in sent if "INSERT" in statement]
    assert len(stored_audit(db, 1)) == 30
    assert len(inserts) == 2
    if db.backend == "sqlite":  # in-process, no round trips: its executemany stays
        assert all(many for _, many in inserts)
        return
    assert not any(many for _, many in inserts)
    assert inserts[0][0] == inserts[1][0]  # one text: psycopg keeps it prepared


def test_rows_with_different_columns_are_refused_before_anything_is_sent(
    db: StoreUnderTest,
) -> None:
    rows = audit_rows(1)
    rows[2] = {**rows[2], "unknown_extra": 1}
    with pytest.raises(ValueError, match="row 2 has columns"), db.sessions.begin() as session:
        insert_rows(session, table_of(Audit), rows)
    rows = audit_rows(1)
    del rows[4]["purpose"]
    with pytest.raises(ValueError, match="row 4 has columns"), db.sessions.begin() as session:
        insert_rows(session, table_of(Audit), rows)
    assert stored_audit(db, 1) == []


def test_update_rows_sets_each_rows_values_by_key_and_obeys_where(db: StoreUnderTest) -> None:
    pid = add_participant(db)
    table = table_of(PatientLink)
    with db.sessions.begin() as session:
        ids = {
            patient: rid
            for patient, _, rid in insert_rows(
                session,
                table,
                [
                    link_row(pid, "p1", LinkDecision.REVIEW, []),
                    link_row(pid, "p2", LinkDecision.REVIEW, []),
                    link_row(pid, "p3", LinkDecision.REJECT, ["kept"]),
                    link_row(pid, "p4", LinkDecision.REVIEW, ["untouched"]),
                ],
                returning=("network_patient_id", "decision", "id"),
            )
        }
    later = datetime(2026, 4, 1, 12, 0, 0, 654321, tzinfo=EASTERN)
    sent: list[bool] = []

    def record(*arguments: Any) -> None:
        sent.append(arguments[-1])  # executemany or not

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        with db.sessions.begin() as session:
            update_rows(
                session,
                table,
                [
                    {
                        "id": ids[patient],
                        "decision": LinkDecision.ACCEPT,
                        "reasons": [f'{patient} "quoted"'],
                        "decided_at": later,
                    }
                    for patient in ("p1", "p2", "p3")
                ],
                key="id",
                # a further condition on the stored row: a rejection stays
                where=table.c.decision != LinkDecision.REJECT,
            )
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    assert stored_links(db) == {
        "p1": (LinkDecision.ACCEPT, ['p1 "quoted"']),
        "p2": (LinkDecision.ACCEPT, ['p2 "quoted"']),
        "p3": (LinkDecision.REJECT, ["kept"]),
        "p4": (LinkDecision.REVIEW, ["untouched"]),
    }
    with db.sessions() as session:
        decided = session.scalar(select(PatientLink.decided_at).where(PatientLink.id == ids["p1"]))
    assert decided == later  # through the column's type: aware, to the microsecond
    if db.backend == "postgresql":
        assert sent == [False]  # one statement, not one per row


def test_update_rows_refuses_rows_without_the_key_or_with_differing_columns(
    db: StoreUnderTest,
) -> None:
    table = table_of(PatientLink)
    with db.sessions.begin() as session:
        with pytest.raises(ValueError, match="no 'id'"):
            update_rows(session, table, [{"decision": LinkDecision.ACCEPT}], key="id")
        with pytest.raises(ValueError, match="row 1 has columns"):
            update_rows(
                session,
                table,
                [{"id": 1, "decision": LinkDecision.ACCEPT}, {"id": 2, "score": 0.5}],
                key="id",
            )
