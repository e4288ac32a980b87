"""Helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.store.links import OrganizationRow, upsert_organizations
from ehrfetch.store.participants import participant_ids

# A fixed "now" so date checks (future birth dates, consents) do not drift with the calendar.
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CTX = ReadContext(now=NOW, region="US", research_id_system="urn:ehrfetch:research-id")

ROSTER_COLUMNS = [
    "research_id", "given", "middle", "family", "suffix", "birth_date", "sex",
    "address_line1", "address_line2", "city", "state", "postal_code", "phone", "email",
    "ssn_last4", "previous_names", "previous_addresses", "ehr_on_file",
]  # fmt: skip


@dataclass
class StoreUnderTest:
    backend: str
    url: str
    """A URL ehrfetch's settings accept (``EHRFETCH__STORE__URL``) for this test's store."""
    engine: Engine
    sessions: sessionmaker[Session]


def roster_row(research_id: str, /, **overrides: str) -> dict[str, str]:
    """A valid roster row; tests override the field they are about."""
    row = {
        "research_id": research_id,
        "given": "Robert",
        "middle": "Lee",
        "family": "Castellano",
        "suffix": "",
        "birth_date": "1961-07-04",
        "sex": "male",
        "address_line1": "12 Harbor View Rd",
        "address_line2": "",
        "city": "Portland",
        "state": "ME",
        "postal_code": "04101",
        "phone": "(207) 555-0134",
        "email": "rcastellano@example.org",
        "ssn_last4": "4821",
        "previous_names": "",
        "previous_addresses": "",
        "ehr_on_file": "",
    }
    row.update(overrides)
    return row


def write_roster(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns or ROSTER_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_consents(path: Path, rows: list[tuple[str, ...]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["research_id", "type", "status", "recorded_at", "withdrawn_at"])
        writer.writerows(rows)
    return path


TWO_ORGS = [
    OrganizationRow("org1", "Org 1", "http://o1/fhir", "o1"),
    OrganizationRow("org2", "Org 2", "http://o2/fhir", "o2"),
]


def enroll(db: StoreUnderTest, folder: Path, rows: list[dict[str, str]]) -> dict[str, int]:
    """Import ``rows`` with an active ``ehr`` consent each and list org1 and org2; the
    participants' store ids by research id."""
    rids = [row["research_id"] for row in rows]
    consents: list[tuple[str, ...]] = [(rid, "ehr", "active", "2024-01-01", "") for rid in rids]
    assert import_roster(write_roster(folder / "r.csv", rows), db.sessions, CTX).ok
    assert import_consents(write_consents(folder / "c.csv", consents), db.sessions, CTX).ok
    with db.sessions.begin() as session:
        upsert_organizations(session, TWO_ORGS, NOW)
        return participant_ids(session, rids)


PROJECT = Path(__file__).resolve().parents[1]
# CI clones the project with the steering repo's shared/ beside it.
CCDA_EXAMPLES = PROJECT.parent / "shared" / "ccda-examples"


def require_ccda_examples() -> Path:
    """The shared HL7 C-CDA examples; under CI their absence is a failure, not a skip."""
    import os

    import pytest

    if not CCDA_EXAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{CCDA_EXAMPLES} is missing: CI runs with ../shared beside the project")
        pytest.skip(f"{CCDA_EXAMPLES} is missing (outside CI, ../shared is optional)")
    return CCDA_EXAMPLES
