"""Cohort selection: each rule, every combination of them, and batch creation."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.selection import count_cohort, rules_from, select_cohort
from ehrfetch.settings import CohortSettings
from ehrfetch.store.cohort import eligible_ids
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Batch,
    BatchStatus,
    Document,
    DocumentStatus,
    Organization,
    Participant,
    Resource,
    Run,
    RunStatus,
)
from support import CTX, NOW, StoreUnderTest, roster_row, write_consents, write_roster

SETTINGS = CohortSettings(consent_type="ehr", batch_size=3, no_match_retry_days=30)


class Cohort:
    """Builds participants in given states, directly in the store."""

    def __init__(self, db: StoreUnderTest, tmp_path: Path) -> None:
        self.db = db
        self.tmp = tmp_path
        self.files = 0

    def add(self, *research_ids: str, ehr_on_file: bool = False) -> None:
        self.files += 1
        rows = [roster_row(r, ehr_on_file="true" if ehr_on_file else "") for r in research_ids]
        path = write_roster(self.tmp / f"roster{self.files}.csv", rows)
        assert import_roster(path, self.db.sessions, CTX).ok

    def consent(self, *rows: tuple[str, ...]) -> None:
        self.files += 1
        path = write_consents(self.tmp / f"consents{self.files}.csv", list(rows))
        assert import_consents(path, self.db.sessions, CTX).ok

    def pid(self, research_id: str) -> int:
        with self.db.sessions() as session:
            return session.scalars(
                select(Participant.id).where(Participant.research_id == research_id)
            ).one()

    def attempt(
        self,
        research_id: str,
        batch_status: BatchStatus,
        outcome: AttemptOutcome | None = None,
        finished_days_ago: float | None = None,
    ) -> None:
        finished = (
            NOW - timedelta(days=finished_days_ago) if finished_days_ago is not None else None
        )
        with self.db.sessions.begin() as session:
            run = Run(kind="test", status=RunStatus.RUNNING, parameters={}, started_at=NOW)
            session.add(run)
            session.flush()
            batch = Batch(
                run_id=run.id, seq=1, status=batch_status, size=1, tries=0, created_at=NOW
            )
            session.add(batch)
            session.flush()
            session.add(
                Attempt(
                    batch_id=batch.id,
                    participant_id=self.pid(research_id),
                    outcome=outcome,
                    finished_at=finished,
                )
            )

    def document(self, research_id: str, status: DocumentStatus = DocumentStatus.STORED) -> None:
        with self.db.sessions.begin() as session:
            if session.get(Organization, "org1") is None:
                session.add(
                    Organization(
                        id="org1", name="Org", base_url="http://o", host="o", updated_at=NOW
                    )
                )
                session.flush()
            session.add(
                Document(
                    participant_id=self.pid(research_id),
                    organization_id="org1",
                    document_reference_id=f"doc-{research_id}-{status}",
                    url="http://o/Binary/1",
                    content_type="text/plain",
                    status=status,
                    fetched_at=NOW,
                )
            )

    def resource(self, research_id: str) -> None:
        with self.db.sessions.begin() as session:
            session.add(
                Resource(
                    participant_id=self.pid(research_id),
                    resource_type="Condition",
                    fhir_id=f"c-{research_id}",
                    dedup_key="k",
                    body={"resourceType": "Condition"},
                    created_at=NOW,
                    updated_at=NOW,
                )
            )

    def eligible(self, settings: CohortSettings = SETTINGS) -> set[str]:
        with self.db.sessions() as session:
            ids = eligible_ids(session, rules_from(settings, NOW))
            return set(
                session.scalars(select(Participant.research_id).where(Participant.id.in_(ids)))
            )


@pytest.fixture
def cohort(db: StoreUnderTest, tmp_path: Path) -> Cohort:
    return Cohort(db, tmp_path)


ACTIVE = ("ehr", "active", "2024-01-01", "")


def test_consent_rules(cohort: Cohort) -> None:
    cohort.add("none", "declined", "withdrawn", "active", "other-type", "reconsented", "late-wd")
    cohort.consent(
        ("declined", "ehr", "declined", "2024-01-01", ""),
        ("withdrawn", "ehr", "withdrawn", "2024-01-01", "2024-06-01"),
        ("active", *ACTIVE),
        ("other-type", "primary", "active", "2024-01-01", ""),
        ("reconsented", "ehr", "withdrawn", "2020-01-01", "2021-01-01"),
        ("reconsented", "ehr", "active", "2023-01-01", ""),
        ("late-wd", "ehr", "active", "2020-01-01", ""),
        ("late-wd", "ehr", "withdrawn", "2023-01-01", "2023-02-01"),
    )
    assert cohort.eligible() == {"active", "reconsented"}
    counts = count_cohort(cohort.db.sessions, SETTINGS, NOW)
    assert (counts.participants, counts.consented, counts.withdrawn, counts.not_consented) == (
        7, 2, 2, 3,
    )  # fmt: skip


def test_ehr_on_file_rules(cohort: Cohort) -> None:
    everyone = ("plain", "doc", "quarantined-doc", "resource", "external", "cut-short")
    cohort.add(*[r for r in everyone if r != "external"])
    cohort.add("external", ehr_on_file=True)
    cohort.consent(*[(r, *ACTIVE) for r in everyone])
    for retrieved in ("doc", "quarantined-doc", "resource"):
        cohort.attempt(retrieved, BatchStatus.SUCCEEDED, AttemptOutcome.RETRIEVED, 1)
    cohort.document("doc")
    cohort.document("quarantined-doc", DocumentStatus.QUARANTINED)
    cohort.resource("resource")
    # Documents stored by an attempt that never got its outcome (the run was killed or
    # stopped between the two; the stale batch's close failed it): taken again, or the
    # participant stays "failed" with what may be only some organizations' documents.
    cohort.document("cut-short")
    cohort.attempt("cut-short", BatchStatus.FAILED, AttemptOutcome.FAILED, 0)
    # A quarantined document is not EHR on file: the participant still needs records.
    assert cohort.eligible() == {"plain", "quarantined-doc", "cut-short"}
    assert count_cohort(cohort.db.sessions, SETTINGS, NOW).with_ehr == 3


def test_open_batch_rules(cohort: Cohort) -> None:
    cohort.add("pending", "running", "succeeded", "failed", "partial")
    cohort.consent(
        *[(r, *ACTIVE) for r in ("pending", "running", "succeeded", "failed", "partial")]
    )
    cohort.attempt("pending", BatchStatus.PENDING)
    cohort.attempt("running", BatchStatus.RUNNING)
    cohort.attempt("succeeded", BatchStatus.SUCCEEDED, AttemptOutcome.NEEDS_REVIEW, 1)
    cohort.attempt("failed", BatchStatus.FAILED, AttemptOutcome.FAILED, 1)
    cohort.attempt("partial", BatchStatus.PARTIAL, AttemptOutcome.FAILED, 1)
    assert cohort.eligible() == {"succeeded", "failed", "partial"}
    assert count_cohort(cohort.db.sessions, SETTINGS, NOW).in_flight == 2


def test_no_match_waits_for_the_configured_time(cohort: Cohort) -> None:
    cohort.add("recent", "old", "failed-recently", "never")
    cohort.consent(*[(r, *ACTIVE) for r in ("recent", "old", "failed-recently", "never")])
    cohort.attempt("recent", BatchStatus.SUCCEEDED, AttemptOutcome.NO_MATCH, 29)
    cohort.attempt("old", BatchStatus.SUCCEEDED, AttemptOutcome.NO_MATCH, 31)
    cohort.attempt("failed-recently", BatchStatus.SUCCEEDED, AttemptOutcome.FAILED, 1)
    assert cohort.eligible() == {"old", "failed-recently", "never"}
    assert count_cohort(cohort.db.sessions, SETTINGS, NOW).waiting == 1
    no_wait = SETTINGS.model_copy(update={"no_match_retry_days": 0})
    assert cohort.eligible(no_wait) == {"recent", "old", "failed-recently", "never"}


# Every combination of the four rules, one participant each. The waterfall says which
# single category each falls in: withdrawn / not consented, then EHR, in flight, waiting.
CONSENT = ["active", "withdrawn", "none"]
COMBINATIONS = list(itertools.product(CONSENT, [False, True], [False, True], [False, True]))


def expected_category(consent: str, ehr: bool, in_flight: bool, waiting: bool) -> str:
    if consent != "active":
        return consent
    if ehr:
        return "with_ehr"
    if in_flight:
        return "in_flight"
    if waiting:
        return "waiting"
    return "eligible"


def test_every_combination_of_rules(cohort: Cohort) -> None:
    names = {combo: "P-" + "-".join(str(part) for part in combo) for combo in COMBINATIONS}
    cohort.add(*[names[c] for c in COMBINATIONS if not c[1]])
    cohort.add(*[names[c] for c in COMBINATIONS if c[1]], ehr_on_file=True)
    consent_rows: list[tuple[str, ...]] = []
    for combo, rid in names.items():
        if combo[0] == "active":
            consent_rows.append((rid, *ACTIVE))
        elif combo[0] == "withdrawn":
            consent_rows.append((rid, "ehr", "withdrawn", "2024-01-01", "2024-02-01"))
    cohort.consent(*consent_rows)
    for (_, _, in_flight, waiting), rid in names.items():
        if waiting:
            cohort.attempt(rid, BatchStatus.SUCCEEDED, AttemptOutcome.NO_MATCH, 2)
        if in_flight:
            cohort.attempt(rid, BatchStatus.RUNNING)

    expected = {rid: expected_category(*combo) for combo, rid in names.items()}
    assert cohort.eligible() == {rid for rid, cat in expected.items() if cat == "eligible"}
    counts = count_cohort(cohort.db.sessions, SETTINGS, NOW).as_dict()
    tally = {cat: list(expected.values()).count(cat) for cat in set(expected.values())}
    assert counts["participants"] == len(COMBINATIONS)
    assert counts["withdrawn"] == tally["withdrawn"]
    assert counts["not_consented"] == tally["none"]
    for category in ("with_ehr", "in_flight", "waiting", "eligible"):
        assert counts[category] == tally[category], category
    assert counts["consented"] == sum(
        counts[c] for c in ("with_ehr", "in_flight", "waiting", "eligible")
    )


def test_selection_persists_batches_in_order(cohort: Cohort) -> None:
    ids = [f"S{i:02d}" for i in range(7)]
    cohort.add(*ids)
    cohort.consent(*[(r, *ACTIVE) for r in ids])
    selection = select_cohort(cohort.db.sessions, SETTINGS, NOW)
    assert selection.participants == 7
    assert [(b.seq, b.size, b.first_research_id) for b in selection.batches] == [
        (1, 3, "S00"), (2, 3, "S03"), (3, 1, "S06"),
    ]  # fmt: skip
    with cohort.db.sessions() as session:
        run = session.get(Run, selection.run_id)
        assert run is not None and run.status is RunStatus.PENDING
        batches = session.scalars(select(Batch).where(Batch.run_id == run.id)).all()
        assert {b.status for b in batches} == {BatchStatus.PENDING}
        attempts = session.scalars(select(Attempt)).all()
        assert len(attempts) == 7 and all(a.outcome is None for a in attempts)
    # Everyone is now in flight: a second selection takes nobody and creates no run.
    again = select_cohort(cohort.db.sessions, SETTINGS, NOW)
    assert (again.run_id, again.participants) == (None, 0)
    assert count_cohort(cohort.db.sessions, SETTINGS, NOW).in_flight == 7


def test_selection_limit_and_batch_size_override(cohort: Cohort) -> None:
    ids = [f"S{i:02d}" for i in range(10)]
    cohort.add(*ids)
    cohort.consent(*[(r, *ACTIVE) for r in ids])
    first = select_cohort(cohort.db.sessions, SETTINGS, NOW, limit=4, batch_size=2)
    assert [b.size for b in first.batches] == [2, 2]
    second = select_cohort(cohort.db.sessions, SETTINGS, NOW)
    assert second.participants == 6
    assert second.batches[0].first_research_id == "S04"


def test_a_participant_is_pending_in_one_batch_at_most(cohort: Cohort) -> None:
    cohort.add("R1")
    cohort.attempt("R1", BatchStatus.PENDING)
    with pytest.raises(IntegrityError):
        cohort.attempt("R1", BatchStatus.PENDING)


def test_counts_on_an_empty_store(db: StoreUnderTest) -> None:
    counts = count_cohort(db.sessions, SETTINGS, datetime.now(UTC))
    assert set(counts.as_dict().values()) == {0}
