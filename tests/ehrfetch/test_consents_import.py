"""Consents import: validation, unknown participants, duplicates, upsert."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.store.tables import Consent, ConsentStatus
from support import CTX, StoreUnderTest, roster_row, write_consents, write_roster


@pytest.fixture
def roster(db: StoreUnderTest, tmp_path: Path) -> StoreUnderTest:
    rows = [roster_row(f"R{i}") for i in (1, 2, 3)]
    assert import_roster(write_roster(tmp_path / "roster.csv", rows), db.sessions, CTX).ok
    return db


def consents(db: StoreUnderTest) -> list[tuple[str, ConsentStatus, datetime, datetime | None]]:
    with db.sessions() as session:
        return [
            (c.type, c.status, c.recorded_at, c.withdrawn_at)
            for c in session.scalars(select(Consent).order_by(Consent.id))
        ]


def test_good_rows_are_imported_with_times_in_utc(roster: StoreUnderTest, tmp_path: Path) -> None:
    path = write_consents(
        tmp_path / "c.csv",
        [
            ("R1", "EHR", "active", "2024-05-05T09:00:00-05:00", ""),
            ("R2", "ehr", "Withdrawn", "2023-01-01", "2025-02-03T10:00:00Z"),
            ("R3", "primary", "declined", "2022-07-08T10:11:12", ""),
        ],
    )
    report = import_consents(path, roster.sessions, CTX)
    assert (report.inserted, report.skipped) == (3, 0)
    assert consents(roster) == [
        ("ehr", ConsentStatus.ACTIVE, datetime(2024, 5, 5, 14, tzinfo=UTC), None),
        (
            "ehr",
            ConsentStatus.WITHDRAWN,
            datetime(2023, 1, 1, tzinfo=UTC),
            datetime(2025, 2, 3, 10, tzinfo=UTC),
        ),
        ("primary", ConsentStatus.DECLINED, datetime(2022, 7, 8, 10, 11, 12, tzinfo=UTC), None),
    ]


@pytest.mark.parametrize(
    ("row", "column", "reason"),
    [
        (("R9", "ehr", "active", "2024-01-01", ""), "research_id", "unknown research id"),
        (("", "ehr", "active", "2024-01-01", ""), "research_id", "missing"),
        (("R2", "", "active", "2024-01-01", ""), "type", "missing"),
        (("R2", "e h r", "active", "2024-01-01", ""), "type", "lowercase token"),
        (("R2", "ehr", "maybe", "2024-01-01", ""), "status", "unknown status"),
        (("R2", "ehr", "active", "", ""), "recorded_at", "missing"),
        (("R2", "ehr", "active", "01/02/2024", ""), "recorded_at", "ISO 8601"),
        (("R2", "ehr", "active", "2027-01-01", ""), "recorded_at", "future"),
        (("R2", "ehr", "withdrawn", "2024-01-01", ""), "withdrawn_at", "needs withdrawn_at"),
        (("R2", "ehr", "active", "2024-01-01", "2024-02-01"), "withdrawn_at", "must be empty"),
        (("R2", "ehr", "withdrawn", "2024-01-01", "2023-01-01"), "withdrawn_at", "before"),
    ],
)
def test_bad_row_is_reported_and_skipped(
    roster: StoreUnderTest, tmp_path: Path, row: tuple[str, ...], column: str, reason: str
) -> None:
    path = write_consents(
        tmp_path / "c.csv",
        [("R1", "ehr", "active", "2024-01-01", ""), row, ("R3", "ehr", "active", "2024-01-01", "")],
    )
    report = import_consents(path, roster.sessions, CTX)
    assert (report.inserted, report.skipped) == (2, 1)
    [problem] = report.problems
    assert (problem.line, problem.column) == (3, column)
    assert reason in problem.reason


def test_same_consent_twice_in_one_file_is_ambiguous(
    roster: StoreUnderTest, tmp_path: Path
) -> None:
    path = write_consents(
        tmp_path / "c.csv",
        [
            ("R1", "ehr", "active", "2024-01-01", ""),
            ("R1", "ehr", "withdrawn", "2024-01-01", "2024-03-01"),
            ("R1", "ehr", "active", "2025-01-01", ""),
        ],
    )
    report = import_consents(path, roster.sessions, CTX)
    assert (report.inserted, report.skipped) == (1, 2)
    assert sorted(p.line for p in report.problems) == [2, 3]


def test_reimport_with_a_withdrawal_updates_the_same_consent(
    roster: StoreUnderTest, tmp_path: Path
) -> None:
    first = write_consents(tmp_path / "a.csv", [("R1", "ehr", "active", "2024-01-01", "")])
    import_consents(first, roster.sessions, CTX)
    again = import_consents(first, roster.sessions, CTX)
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1)
    later = write_consents(
        tmp_path / "b.csv", [("R1", "ehr", "withdrawn", "2024-01-01", "2025-01-01")]
    )
    report = import_consents(later, roster.sessions, CTX)
    assert (report.inserted, report.updated) == (0, 1)
    assert [(s, w) for _, s, _, w in consents(roster)] == [
        (ConsentStatus.WITHDRAWN, datetime(2025, 1, 1, tzinfo=UTC))
    ]


def test_an_old_export_cannot_undo_a_withdrawal(roster: StoreUnderTest, tmp_path: Path) -> None:
    withdrawn = write_consents(
        tmp_path / "w.csv", [("R1", "ehr", "withdrawn", "2024-01-01", "2025-01-01")]
    )
    import_consents(withdrawn, roster.sessions, CTX)
    stale = write_consents(tmp_path / "s.csv", [("R1", "ehr", "active", "2024-01-01", "")])
    report = import_consents(stale, roster.sessions, CTX)
    assert (report.updated, report.skipped) == (0, 1)
    [problem] = report.problems
    assert (problem.line, problem.column, problem.research_id) == (2, "status", "R1")
    assert "does not undo a withdrawal" in problem.reason
    assert [s for _, s, _, _ in consents(roster)] == [ConsentStatus.WITHDRAWN]
    # Consenting again is a new consent, with its own date: that is taken.
    again = write_consents(tmp_path / "a.csv", [("R1", "ehr", "active", "2025-06-01", "")])
    assert import_consents(again, roster.sessions, CTX).inserted == 1
