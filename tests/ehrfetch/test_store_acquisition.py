"""Store writes of the acquisition: documents, resources, lineage, links, batches."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from ehrfetch.cohort.csvfile import CsvRow
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.roster_csv import parse_row
from ehrfetch.cohort.selection import rules_from, select_cohort
from ehrfetch.settings import CohortSettings
from ehrfetch.store import participants
from ehrfetch.store.batches import AttemptResult, claim_batch, finish_attempt, finish_batch
from ehrfetch.store.documents import (
    DerivedResource,
    FetchedDocument,
    SaveOutcome,
    quarantine_document,
    save_document,
)
from ehrfetch.store.links import LinkRow, OrganizationRow, save_links, upsert_organizations
from ehrfetch.store.participants import housemates, load_records, participant_ids
from ehrfetch.store.tables import (
    AttemptOutcome,
    BatchStatus,
    DecidedBy,
    Document,
    DocumentStatus,
    LinkDecision,
    PatientLink,
    Provenance,
    Quarantine,
    Resource,
    ResourceSource,
)
from support import CTX, NOW, StoreUnderTest, roster_row, write_consents, write_roster

SETTINGS = CohortSettings()
RULES = rules_from(SETTINGS, NOW)


@pytest.fixture
def pid(db: StoreUnderTest, tmp_path: Path) -> int:
    rows = [roster_row("R1", previous_names="Smith", previous_addresses="1 Elm St^^Salem^MA^01970")]
    import_roster(write_roster(tmp_path / "r.csv", rows), db.sessions, CTX)
    import_consents(
        write_consents(tmp_path / "c.csv", [("R1", "ehr", "active", "2024-01-01", "")]),
        db.sessions,
        CTX,
    )
    with db.sessions.begin() as session:
        upsert_organizations(
            session, [OrganizationRow("org1", "Org 1", "http://o1/fhir", "o1")], NOW
        )
        upsert_organizations(
            session, [OrganizationRow("org2", "Org 2", "http://o2/fhir", "o2")], NOW
        )
        return participant_ids(session, ["R1"])["R1"]


def fetched(pid: int, org: str = "org1", ref: str = "d1") -> FetchedDocument:
    return FetchedDocument(
        participant_id=pid, organization_id=org, link_id=None, document_reference_id=ref,
        url=f"http://{org}/fhir/Binary/{ref}", content_type="application/fhir+json",
        declared_size=3, declared_sha1="x", computed_sha1="x", sha256="ab" * 32, size=3,
        content=b"{ }",
    )  # fmt: skip


def resource(key: str, source_id: str = "s") -> DerivedResource:
    return DerivedResource(
        "Condition", f"id-{key}", key, {"resourceType": "Condition", "id": f"id-{key}"}, source_id
    )


def provenance_of(doc: str) -> Any:
    def build(targets: Any) -> tuple[str, dict[str, Any]]:
        return f"prov-{doc}", {"resourceType": "Provenance", "target": [list(t) for t in targets]}

    return build


def counts(db: StoreUnderTest) -> tuple[int, ...]:
    with db.sessions() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(t)) or 0
            for t in (Document, Resource, ResourceSource, Provenance, Quarantine)
        )


def test_document_is_saved_once_with_lineage_and_provenance(db: StoreUnderTest, pid: int) -> None:
    with db.sessions.begin() as session:
        first = save_document(
            session, fetched(pid), [resource("a"), resource("b")], provenance_of("d1"), RULES, NOW
        )
    assert (first.outcome, first.resources, first.new_resources) == (SaveOutcome.STORED, 2, 2)
    with db.sessions.begin() as session:
        again = save_document(
            session, fetched(pid), [resource("a"), resource("b")], provenance_of("d1"), RULES, NOW
        )
    assert again.outcome is SaveOutcome.ALREADY_STORED
    assert counts(db) == (1, 2, 2, 1, 0)


def test_same_fact_from_two_sites_is_one_resource_with_two_sources(
    db: StoreUnderTest, pid: int
) -> None:
    with db.sessions.begin() as session:
        save_document(session, fetched(pid), [resource("a", "x1")], provenance_of("1"), RULES, NOW)
    with db.sessions.begin() as session:
        second = save_document(
            session, fetched(pid, "org2", "d9"), [resource("a", "y7"), resource("c")],
            provenance_of("2"), RULES, NOW,
        )  # fmt: skip
    assert (second.resources, second.new_resources) == (2, 1)
    assert counts(db) == (2, 2, 3, 2, 0)
    with db.sessions() as session:
        sources = session.execute(
            select(ResourceSource.source_resource_id)
            .join(Resource, Resource.id == ResourceSource.resource_id)
            .where(Resource.dedup_key == "a")
        ).scalars()
        assert sorted(s or "" for s in sources) == ["x1", "y7"]
        bodies = [p.body for p in session.scalars(select(Provenance).order_by(Provenance.id))]
        assert bodies[1]["target"] == [["Condition", "id-a"], ["Condition", "id-c"]]


def test_nothing_is_stored_after_a_withdrawal(db: StoreUnderTest, pid: int, tmp_path: Path) -> None:
    import_consents(
        write_consents(
            tmp_path / "w.csv", [("R1", "ehr", "withdrawn", "2024-01-01", "2025-01-01")]
        ),
        db.sessions,
        CTX,
    )
    with db.sessions.begin() as session:
        result = save_document(
            session, fetched(pid), [resource("a")], provenance_of("d"), RULES, NOW
        )
    assert result.outcome is SaveOutcome.CONSENT_WITHDRAWN
    assert counts(db) == (0, 0, 0, 0, 0)


def test_quarantined_document_keeps_no_content_and_is_recorded_once(
    db: StoreUnderTest, pid: int
) -> None:
    for _ in range(2):
        with db.sessions.begin() as session:
            quarantine_document(
                session, fetched(pid), reason="about another patient", code="wrong_patient", now=NOW
            )
    assert counts(db) == (1, 0, 0, 0, 1)
    with db.sessions() as session:
        doc = session.scalars(select(Document)).one()
        assert (doc.status, doc.content) == (DocumentStatus.QUARANTINED, None)
        assert doc.quarantine_reason == "about another patient"


def test_links_refresh_but_operator_decisions_stand(db: StoreUnderTest, pid: int) -> None:
    link = LinkRow("org1", "p9", "probable", 0.8, 0.7, LinkDecision.REVIEW, ("given:nickname",))
    with db.sessions.begin() as session:
        save_links(session, pid, [link], NOW)
    with db.sessions.begin() as session:
        row = session.scalars(select(PatientLink)).one()
        row.decision, row.decided_by = LinkDecision.ACCEPT, DecidedBy.OPERATOR
    later = LinkRow("org1", "p9", "possible", 0.5, 0.4, LinkDecision.REJECT, ("dob:mismatch",))
    with db.sessions.begin() as session:
        save_links(session, pid, [later], NOW + timedelta(days=1))
    with db.sessions() as session:
        row = session.scalars(select(PatientLink)).one()
        assert (row.decision, row.decided_by, row.grade) == (
            LinkDecision.ACCEPT, DecidedBy.OPERATOR, "possible",
        )  # fmt: skip


def test_batch_lifecycle(db: StoreUnderTest, tmp_path: Path) -> None:
    ids = [f"B{i}" for i in range(3)]
    import_roster(write_roster(tmp_path / "r.csv", [roster_row(i) for i in ids]), db.sessions, CTX)
    import_consents(
        write_consents(tmp_path / "c.csv", [(i, "ehr", "active", "2024-01-01", "") for i in ids]),
        db.sessions,
        CTX,
    )
    selection = select_cohort(db.sessions, SETTINGS, NOW)
    batch_id = selection.batches[0].id
    with db.sessions.begin() as session:
        members = claim_batch(session, batch_id, NOW)
    assert [m.research_id for m in members] == ids
    with db.sessions.begin() as session:
        finish_attempt(
            session, members[0].attempt_id, AttemptResult(AttemptOutcome.NO_MATCH), NOW, NOW
        )
    with db.sessions.begin() as session:
        # The process stops before the other two: they fail with the batch, and the
        # batch is partial, not succeeded.
        assert finish_batch(session, batch_id, NOW, "interrupted") is BatchStatus.PARTIAL
    with db.sessions.begin() as session:
        assert claim_batch(session, batch_id, NOW) == []


def test_records_load_back_with_history(db: StoreUnderTest, pid: int) -> None:
    with db.sessions() as session:
        record = load_records(session, [pid])[pid]
    assert record.research_id == "R1"
    assert [n.family for n in (record.name, *record.previous_names)] == ["Castellano", "Smith"]
    assert record.address is not None and record.address.city == "Portland"
    assert [a.city for a in record.previous_addresses] == ["Salem"]


def test_records_load_back_exactly_as_the_roster_gave_them(
    db: StoreUnderTest, tmp_path: Path
) -> None:
    # Every field, in every shape: what matching sees is what the roster said.
    rows = [
        roster_row(
            "R1",
            previous_names="Smith^Rob^^Jr|Jones",
            previous_addresses="1 Elm St^Apt 2^Salem^MA^01970|9 Oak Ave^^Boston^MA^02101",
        ),
        roster_row("R2", middle="", suffix="III", address_line2="Unit 5", ehr_on_file="yes"),
        roster_row("R3", phone="", email="", ssn_last4="", sex="female"),
    ]
    import_roster(write_roster(tmp_path / "r.csv", rows), db.sessions, CTX)
    expected = {
        row["research_id"]: parse_row(CsvRow(2 + i, row), CTX) for i, row in enumerate(rows)
    }
    with db.sessions() as session:
        pids = participant_ids(session, list(expected))
        loaded = load_records(session, [*pids.values(), pids["R1"]])  # asked twice: once
    assert sorted(loaded) == sorted(pids.values())
    assert {pid: loaded[pid] for pid in pids.values()} == {
        pids[rid]: record for rid, record in expected.items()
    }
    assert len(loaded[pids["R1"]].previous_addresses) == 2  # the rows said what they meant


def test_housemates_are_found_by_surname_and_address_or_phone(
    db: StoreUnderTest, tmp_path: Path
) -> None:
    rows = [
        roster_row("T1", given="Velma"),
        roster_row("T2", given="Vilma", phone=""),  # same surname and address
        roster_row("S1", given="Jack", address_line1="9 Elm St", postal_code="04102"),  # phone
        roster_row("X1", given="Ann", family="Other"),  # same address, other surname
        roster_row("Z1", given="Zed", address_line1="1 Far Rd", postal_code="04103", phone=""),
    ]
    import_roster(write_roster(tmp_path / "h.csv", rows), db.sessions, CTX)
    with db.sessions() as session:
        pids = participant_ids(session, [r["research_id"] for r in rows])
        found = housemates(session, pids.values())
    by_rid = {rid: found.get(pid, ()) for rid, pid in pids.items()}
    assert by_rid["T1"] == ("Jack", "Vilma")
    assert by_rid["T2"] == ("Velma",)
    assert by_rid["S1"] == ("Velma",)  # shares T1's phone number
    assert by_rid["X1"] == ()
    assert by_rid["Z1"] == ()


def test_housemates_outside_the_batch_are_found_and_only_they_are_fetched(
    db: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is a slice of the cohort: housemates outside it count, and the database
    hands back only people sharing a surname and a ZIP code or phone with the batch,
    not everyone with its surnames (~47 % of a 300,000-person cohort per batch)."""
    rows = [
        roster_row("B1", given="Ana", family="NUÑEZ", phone=""),
        roster_row("H1", given="Bea", family="Nuñez", phone=""),  # B1's address, other case
        roster_row("B2", given="Cy", family="Nuñez", address_line1="5 Oak Ln", postal_code="04102"),
        # B2's phone (the roster's default), other address and case.
        roster_row("H2", given="Di", family="NUÑEZ", address_line1="7 Elm", postal_code="04105"),
        # The same surname elsewhere, with other phones: never fetched.
        *(
            roster_row(
                f"O{i}",
                given="Ed",
                family="Nuñez",
                address_line1=f"{i} Far Rd",
                postal_code=f"{10000 + i:05d}",
                phone=f"(207) 555-{1000 + i:04d}",
            )
            for i in range(40)
        ),
    ]
    import_roster(write_roster(tmp_path / "h.csv", rows), db.sessions, CTX)
    fetched: list[int] = []
    original = participants._current_rows

    def counting(session: Any, condition: Any) -> list[Any]:
        found = original(session, condition)
        fetched.append(len(found))
        return found

    monkeypatch.setattr(participants, "_current_rows", counting)
    with db.sessions() as session:
        pids = participant_ids(session, [r["research_id"] for r in rows])
        found = housemates(session, [pids["B1"], pids["B2"]])
    assert found == {pids["B1"]: ("Bea",), pids["B2"]: ("Di",)}
    assert fetched == [2, 4]  # the batch, then B1, H1, B2 and H2: none of the 40 others
