"""Consent withdrawal: the purge, its audit row, the CLI, and withdrawal during a batch."""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner, Result

from ehrfetch.acquire import ConsentWatch
from ehrfetch.batch import run_batch
from ehrfetch.cli import app
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.selection import rules_from, select_cohort
from ehrfetch.errors import ConsentNotInForce, StoreError
from ehrfetch.settings import AcquireSettings, CohortSettings, NetworkSettings, Settings
from ehrfetch.store.batches import (
    AttemptResult,
    claim_batch,
    finish_attempt,
    finish_attempts,
    finish_batch,
)
from ehrfetch.store.cohort import create_run
from ehrfetch.store.documents import (
    DerivedResource,
    FetchedDocument,
    SaveOutcome,
    quarantine_document,
    save_document,
)
from ehrfetch.store.links import LinkRow, save_links
from ehrfetch.store.purge import (
    ConsentChange,
    PurgeCounts,
    WithdrawalResult,
    acquired_counts,
    withdraw_consent,
)
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Audit,
    Base,
    Batch,
    Consent,
    ConsentStatus,
    Document,
    DocumentStatus,
    LinkDecision,
    Participant,
    ParticipantAddress,
    ParticipantName,
    PatientLink,
    Provenance,
    Quarantine,
    Resource,
    ResourceSource,
    table_of,
)
from mock_network import create_app
from mock_network.config import NetworkConfig
from mock_network.roster import write_roster as write_mock_roster
from mock_network.testing import TEST_BASE, KeyPair, small_config
from support import CTX, NOW, StoreUnderTest, enroll, roster_row, write_consents

RULES = rules_from(CohortSettings(), NOW)
WITHDRAWN_AT = NOW - timedelta(days=1)
T = TypeVar("T")

# R1 is withdrawn in these tests; every value here is PHI that must never reach the audit
# trail or the terminal. R2 keeps the support module's defaults.
R1_PHI = {
    "given": "Philomena",
    "middle": "Odessa",
    "family": "Quarterman",
    "birth_date": "1958-03-17",
    "address_line1": "77 Larkspur Lane",
    "city": "Bangor",
    "postal_code": "04401",
    "phone": "(207) 555-0199",
    "email": "pquarterman@example.org",
    "ssn_last4": "7312",
}


PHI_FIELDS = (
    "given", "middle", "family", "birth_date", "address_line1", "address_line2", "city",
    "postal_code", "phone", "email", "ssn_last4",
)  # fmt: skip


def phi_needles(values: dict[str, str]) -> list[str]:
    """The values, and the forms a birth date or phone number could take elsewhere."""
    # A middle initial alone identifies nobody (and is a word of many texts).
    needles = [values[k] for k in PHI_FIELDS if len(values.get(k) or "") > 1]
    if birth := values.get("birth_date"):
        day = date.fromisoformat(birth)
        needles += [day.strftime("%Y%m%d"), day.strftime("%m/%d/%Y")]
    if phone := values.get("phone"):
        needles.append(re.sub(r"\D", "", phone))
    return needles


# --- building a store with two participants' acquisitions ------------------------------


@pytest.fixture
def pids(db: StoreUnderTest, tmp_path: Path) -> dict[str, int]:
    """R1 and R2, consented, each with links, documents, resources, provenance,
    a quarantined document, a finished attempt and a pending one."""
    ids = enroll(db, tmp_path, [roster_row("R1", **R1_PHI), roster_row("R2")])
    for rid, pid in ids.items():
        with db.sessions.begin() as session:
            acquire_for(session, pid, rid)
    with db.sessions.begin() as session:
        finished = create_run(
            session, list(ids.values()), batch_size=10, kind="select", parameters={}, now=NOW
        )
        batch_id = session.scalars(select(Batch.id).where(Batch.run_id == finished.id)).one()
        for member in claim_batch(session, batch_id, NOW):
            finish_attempt(
                session,
                member.attempt_id,
                AttemptResult(AttemptOutcome.RETRIEVED, documents=2, resources=3),
                NOW,
                NOW,
            )
        finish_batch(session, batch_id, NOW)
        # A second run, not started yet: both participants wait in it.
        create_run(
            session, list(ids.values()), batch_size=10, kind="select", parameters={}, now=NOW
        )
    return ids


def acquire_for(session: Any, pid: int, tag: str) -> None:
    links = save_links(
        session,
        pid,
        [
            LinkRow("org1", f"{tag}-p1", "certain", 0.99, 0.97, LinkDecision.ACCEPT, ("ok",)),
            LinkRow("org2", f"{tag}-p2", "possible", 0.5, 0.6, LinkDecision.REVIEW, ("dob",)),
        ],
        NOW,
    )
    link_id = links[("org1", f"{tag}-p1")].id
    for org, ref, keys in (("org1", "d1", "ab"), ("org2", "d2", "ac")):
        result = save_document(
            session,
            fetched(pid, org, f"{tag}-{ref}", link_id if org == "org1" else None),
            [resource(tag, key) for key in keys],
            provenance_of(f"{tag}-{ref}"),
            RULES,
            NOW,
        )
        assert result.outcome is SaveOutcome.STORED
    # A quarantined document whose bytes were kept (an unreadable one).
    quarantine_document(
        session,
        fetched(pid, "org1", f"{tag}-d3", link_id),
        reason="cannot be read",
        code="unreadable_document",
        now=NOW,
        keep_content=True,
    )


def fetched(pid: int, org: str, ref: str, link_id: int | None = None) -> FetchedDocument:
    return FetchedDocument(
        participant_id=pid, organization_id=org, link_id=link_id, document_reference_id=ref,
        url=f"http://{org}/fhir/Binary/{ref}", content_type="application/fhir+json",
        declared_size=3, declared_sha1="x", computed_sha1="x", sha256="ab" * 32, size=3,
        content=b"{ }",
    )  # fmt: skip


def resource(tag: str, key: str) -> DerivedResource:
    fhir_id = f"{tag}-{key}"
    return DerivedResource(
        "Condition", fhir_id, key, {"resourceType": "Condition", "id": fhir_id}, f"src-{key}"
    )


def provenance_of(doc: str) -> Any:
    def build(targets: Any) -> tuple[str, dict[str, Any]]:
        return f"prov-{doc}", {"resourceType": "Provenance", "target": [list(t) for t in targets]}

    return build


ACQUIRED: tuple[type[Base], ...] = (
    PatientLink, Document, Resource, ResourceSource, Provenance, Quarantine,
)  # fmt: skip
ROSTER: tuple[type[Base], ...] = (Participant, ParticipantName, ParticipantAddress, Consent)


def owned_rows(db: StoreUnderTest) -> dict[str, dict[str, list[tuple[Any, ...]]]]:
    """Every row of the acquisition, roster and attempt tables, by research id and table."""
    out: dict[str, dict[str, list[tuple[Any, ...]]]] = {}
    with db.sessions() as session:
        rid = dict(session.execute(select(Participant.id, Participant.research_id)).all())
        resource_owner = dict(session.execute(select(Resource.id, Resource.participant_id)).all())
        models: tuple[type[Base], ...] = (*ACQUIRED, *ROSTER, Attempt)
        for model in models:
            table = table_of(model)
            for row in session.execute(select(table)).mappings():
                if model is ResourceSource:
                    owner = resource_owner[row["resource_id"]]
                elif model is Participant:
                    owner = row["id"]
                else:
                    owner = row["participant_id"]
                values = tuple(str(v) for v in row.values())
                out.setdefault(rid[owner], {}).setdefault(table.name, []).append(values)
    for tables in out.values():
        for rows in tables.values():
            rows.sort()
    return out


def audit_rows(db: StoreUnderTest) -> list[dict[str, Any]]:
    with db.sessions() as session:
        return [dict(row) for row in session.execute(select(table_of(Audit))).mappings()]


AUDIT_TEXT = ("research_id", "organization_id", "operation", "purpose", "outcome")


def assert_no_phi(rows: list[dict[str, Any]], phi: dict[str, str]) -> None:
    """No audit text column contains a PHI value; short values (a zip code, the SSN's
    last four digits) must not be a whole word of one, long ones not even a part."""
    needles = [n.lower() for n in phi_needles(phi)]
    for row in rows:
        for column in AUDIT_TEXT:
            value = str(row[column] or "").lower()
            words = set(re.split(r"[^0-9a-z]+", value))
            for needle in needles:
                found = needle in value if len(needle) > 5 else needle in words
                assert not found, f"PHI ({needle!r}) in audit.{column}"


def withdraw(db: StoreUnderTest, research_id: str = "R1", **kw: Any) -> WithdrawalResult:
    args: dict[str, Any] = {"consent_type": "ehr", "withdrawn_at": WITHDRAWN_AT, "now": NOW}
    args.update(kw)
    with db.sessions.begin() as session:
        return withdraw_consent(session, research_id, **args)


# --- the purge ---------------------------------------------------------------------------


def test_purge_removes_exactly_that_participants_acquired_data(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    before = owned_rows(db)
    with db.sessions() as session:
        preview = acquired_counts(session, "R1")

    result = withdraw(db)

    assert result.consent is ConsentChange.RECORDED
    assert result.withdrawn_at == WITHDRAWN_AT
    assert result.purge_counts == preview
    assert result.purge_counts == PurgeCounts(
        links=2, documents=3, resources=3, lineage=4, provenance=2, quarantine=1,
        attempts_withdrawn=1,
    )  # fmt: skip
    after = owned_rows(db)
    # Nothing acquired for R1 survives; R2 is untouched, row for row.
    for model in ACQUIRED:
        assert table_of(model).name not in after["R1"], table_of(model).name
    assert after["R2"] == before["R2"]
    # The roster is the program's: R1's demographics stay.
    for model in (Participant, ParticipantName, ParticipantAddress):
        name = table_of(model).name
        assert after["R1"][name] == before["R1"][name]
    with db.sessions() as session:
        consent = session.scalars(select(Consent).where(Consent.participant_id == pids["R1"])).one()
        attempts = session.scalars(
            select(Attempt).where(Attempt.participant_id == pids["R1"]).order_by(Attempt.id)
        ).all()
    assert (consent.status, consent.withdrawn_at) == (ConsentStatus.WITHDRAWN, WITHDRAWN_AT)
    # The finished attempt is history and stays; the pending one is closed.
    assert [a.outcome for a in attempts] == [AttemptOutcome.RETRIEVED, AttemptOutcome.WITHDRAWN]
    assert attempts[0].documents == 2


def test_a_withdrawal_has_the_last_word_over_an_outcome_recorded_after_it(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    """A worker that was acquiring R1 when the withdrawal closed R1's attempt records its
    outcome afterwards: the attempt stays withdrawn; R2's outcome is recorded as usual."""
    with db.sessions() as session:
        pending = dict(
            session.execute(
                select(Attempt.participant_id, Attempt.id).where(Attempt.outcome.is_(None))
            ).all()
        )
    withdraw(db)
    late = AttemptResult(AttemptOutcome.RETRIEVED, documents=4, resources=9)
    with db.sessions.begin() as session:
        finish_attempts(
            session, [(pending[pid], late, NOW, NOW) for pid in (pids["R1"], pids["R2"])]
        )
    with db.sessions() as session:
        outcomes = {
            pid: (outcome, documents)
            for pid, outcome, documents in session.execute(
                select(Attempt.participant_id, Attempt.outcome, Attempt.documents).where(
                    Attempt.id.in_(pending.values())
                )
            )
        }
    assert outcomes == {
        pids["R1"]: (AttemptOutcome.WITHDRAWN, 0),
        pids["R2"]: (AttemptOutcome.RETRIEVED, 4),
    }


def test_audit_row_is_kept_with_the_research_id_and_no_phi(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    withdraw(db)
    [row] = [r for r in audit_rows(db) if r["research_id"] == "R1"]
    assert row["operation"] == "withdraw"
    assert row["outcome"] == "l=2 d=3 r=3 s=4 p=2 q=1 a=1"
    assert row["purpose"] == "consent:ehr:recorded"
    assert row["at"] == NOW
    assert_no_phi(audit_rows(db), R1_PHI)


def test_withdrawing_twice_purges_nothing_more(db: StoreUnderTest, pids: dict[str, int]) -> None:
    withdraw(db)
    between = owned_rows(db)

    again = withdraw(db, withdrawn_at=NOW, now=NOW + timedelta(hours=1))

    assert again.consent is ConsentChange.ALREADY_WITHDRAWN
    assert again.withdrawn_at == WITHDRAWN_AT  # the first withdrawal's time stands
    assert again.purge_counts == PurgeCounts()
    assert not again.purged_anything
    assert owned_rows(db) == between
    operations = [(r["operation"], r["outcome"]) for r in audit_rows(db)]
    assert operations[-1] == ("purge", "l=0 d=0 r=0 s=0 p=0 q=0 a=0")


def test_a_withdrawal_imported_from_the_consents_file_is_finished_by_withdraw(
    db: StoreUnderTest, pids: dict[str, int], tmp_path: Path
) -> None:
    import_consents(
        write_consents(
            tmp_path / "w.csv", [("R1", "ehr", "withdrawn", "2024-01-01", "2025-01-01")]
        ),
        db.sessions,
        CTX,
    )
    result = withdraw(db)
    assert result.consent is ConsentChange.ALREADY_WITHDRAWN
    assert result.purge_counts.documents == 3
    assert "document" not in owned_rows(db)["R1"]


def test_unknown_research_id_is_an_error_that_changes_nothing(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    before = owned_rows(db)
    with pytest.raises(StoreError, match=r"^no participant with research id R404$"):
        withdraw(db, "R404")
    assert owned_rows(db) == before
    assert audit_rows(db) == []


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"consent_type": "biobank"}, "R1 has no 'biobank' consent", id="no-consent"),
        pytest.param({"withdrawn_at": NOW + timedelta(days=1)}, "in the future", id="future"),
        pytest.param(
            {"withdrawn_at": NOW.replace(year=2023)}, "before the consent", id="before-consent"
        ),
    ],
)
def test_a_withdrawal_that_cannot_be_recorded_purges_nothing(
    db: StoreUnderTest, pids: dict[str, int], changes: dict[str, Any], message: str
) -> None:
    before = owned_rows(db)
    with pytest.raises(StoreError, match=message):
        withdraw(db, **changes)
    assert owned_rows(db) == before
    assert audit_rows(db) == []


def test_links_are_not_saved_for_a_withdrawn_participant(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    withdraw(db)
    link = LinkRow("org1", "new", "certain", 0.99, 0.97, LinkDecision.ACCEPT, ())
    with pytest.raises(ConsentNotInForce), db.sessions.begin() as session:
        save_links(session, pids["R1"], [link], NOW, rules=RULES)
    with db.sessions.begin() as session:
        save_links(session, pids["R2"], [link], NOW, rules=RULES)
    assert "patient_link" not in owned_rows(db)["R1"]


# --- a withdrawal and a store write at the same time (two connections) -----------------


def during_withdrawal(db: StoreUnderTest, write: Callable[[], T]) -> T:
    """Run ``write`` while another connection's withdrawal of R1 holds its lock.

    The withdrawal has purged and not yet committed when ``write`` starts; a correct
    write waits for it and then sees the consent withdrawn. The result is read after
    both ended, so a write that did not wait shows up as data that survived.
    """
    locked = threading.Event()
    failure: list[BaseException] = []

    def withdrawal() -> None:
        try:
            with db.sessions.begin() as session:
                withdraw_consent(
                    session, "R1", consent_type="ehr", withdrawn_at=WITHDRAWN_AT, now=NOW
                )
                locked.set()
                time.sleep(0.5)  # the write starts meanwhile and must wait for this commit
        except BaseException as exc:  # reported in the test's thread
            failure.append(exc)
            locked.set()

    thread = threading.Thread(target=withdrawal)
    thread.start()
    try:
        assert locked.wait(10)
        return write()
    finally:
        thread.join(30)
        assert not failure, failure


def test_links_written_during_a_withdrawal_wait_for_it_and_are_refused(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    link = LinkRow("org1", "late", "certain", 0.99, 0.97, LinkDecision.ACCEPT, ())

    def write() -> None:
        with db.sessions.begin() as session:
            save_links(session, pids["R1"], [link], NOW, rules=RULES)

    with pytest.raises(ConsentNotInForce):
        during_withdrawal(db, write)
    assert "patient_link" not in owned_rows(db)["R1"]


def test_a_document_saved_during_a_withdrawal_waits_for_it_and_is_refused(
    db: StoreUnderTest, pids: dict[str, int]
) -> None:
    def write() -> SaveOutcome:
        with db.sessions.begin() as session:
            return save_document(
                session,
                fetched(pids["R1"], "org1", "late"),
                [resource("R1", "z")],
                provenance_of("late"),
                RULES,
                NOW,
            ).outcome

    outcome = during_withdrawal(db, write)
    assert "document" not in owned_rows(db)["R1"]
    assert outcome is SaveOutcome.CONSENT_WITHDRAWN


# --- the command ---------------------------------------------------------------------------


def run(args: list[str], url: str, stdin: str | None = None) -> Result:
    env = {"COLUMNS": "200", "EHRFETCH__STORE__URL": url}
    return CliRunner().invoke(app, args, env=env, input=stdin)


def test_cli_withdraw_with_yes_prints_counts_only(db: StoreUnderTest, pids: dict[str, int]) -> None:
    result = run(["consents", "withdraw", "R1", "--yes", "--at", "2026-05-01T09:30:00Z"], db.url)
    assert result.exit_code == 0, result.output
    assert "R1: 'ehr' consent withdrawn at 2026-05-01T09:30:00+00:00" in result.stdout
    assert (
        "purged: 2 patient links, 3 documents, 3 resources, 4 lineage rows, "
        "2 provenance records, 1 quarantine records" in result.stdout
    )
    assert "pending attempts closed as withdrawn: 1" in result.stdout
    for needle in phi_needles(R1_PHI):
        assert needle not in result.output
    assert "document" not in owned_rows(db)["R1"]

    again = run(["consents", "withdraw", "R1", "--yes"], db.url)
    assert again.exit_code == 0, again.output
    assert "already withdrawn (at 2026-05-01T09:30:00+00:00)" in again.stdout
    assert "nothing left to purge" in again.stdout


def test_cli_asks_first_and_a_no_changes_nothing(db: StoreUnderTest, pids: dict[str, int]) -> None:
    before = owned_rows(db)
    result = run(["consents", "withdraw", "R1"], db.url, stdin="n\n")
    assert result.exit_code == 1, result.output
    assert "purge 2 patient links, 3 documents" in result.stdout
    assert "nothing changed" in result.stderr
    assert owned_rows(db) == before

    confirmed = run(["consents", "withdraw", "R1"], db.url, stdin="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "purged: 2 patient links" in confirmed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["R404", "--yes"], "no participant with research id R404", id="unknown"),
        pytest.param(["R404"], "no participant with research id R404", id="unknown-asked"),
        pytest.param(["R1", "--yes", "--type", "biobank"], "no 'biobank' consent", id="type"),
        pytest.param(["R1", "--yes", "--at", "yesterday"], "not an ISO 8601", id="bad-at"),
        pytest.param(["R1", "--yes", "--at", "2099-01-01"], "in the future", id="future-at"),
    ],
)
def test_cli_errors_exit_2_and_change_nothing(
    db: StoreUnderTest, pids: dict[str, int], args: list[str], message: str
) -> None:
    before = owned_rows(db)
    result = run(["consents", "withdraw", *args], db.url)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())
    assert owned_rows(db) == before


# --- withdrawn while their batch runs, against the mock network ---------------------------

CLIENT_ID = "ehrfetch-test"
COHORT = 12
BINARY = re.compile(r"/orgs/(?P<org>[^/]+)/fhir/Binary/(?P<patient>[^/?]+)-\d+$")


@dataclass
class MockNetwork:
    key: KeyPair
    config: NetworkConfig
    roster: Path
    owner: dict[tuple[str, str], str]
    """(organization, network patient id) → research id, from the truth file."""
    phi: dict[str, dict[str, str]]
    """research id → roster values."""

    def settings(self) -> Settings:
        network = NetworkSettings(
            directory_url=f"{TEST_BASE}/directory",
            token_url=f"{TEST_BASE}/token",
            client_id=CLIENT_ID,
            private_key=self.key.private.decode(),
            max_tries=4,
            backoff_base_s=0.01,
            backoff_max_s=0.05,
        )
        return Settings(network=network)


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> MockNetwork:
    import csv

    key = KeyPair.generate("ES256")
    config = small_config(key, client_id=CLIENT_ID)
    roster = tmp_path_factory.mktemp("roster")
    write_mock_roster(config, roster, size=COHORT * 2)
    owner: dict[tuple[str, str], str] = {}
    with (roster / "truth.ndjson").open() as fh:
        for row in map(json.loads, fh):
            for org, patient in row["known_at"].items():
                if patient:
                    owner[(org, patient)] = row["research_id"]
    with (roster / "roster.csv").open(newline="") as fh:
        phi = {
            row["research_id"]: {k: v for k, v in row.items() if k != "research_id"}
            for row in csv.DictReader(fh)
        }
    return MockNetwork(key, config, roster, owner, phi)


class WithdrawOnSecondDocument(httpx.AsyncBaseTransport):
    """The mock network, and a withdrawal part-way through someone's documents.

    A participant's links are stored before their documents are fetched, and the
    documents are written together once fetched: when their second document is
    requested, links (and for a large document set, documents) are in the store. The
    first participant to get that far is withdrawn right then, before the request goes on.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, mock: MockNetwork, db: StoreUnderTest):
        self.inner, self.mock, self.db = inner, mock, db
        self.fetched: dict[str, set[str]] = {}
        self.target: str | None = None
        self.stored_before: PurgeCounts | None = None
        self.result: WithdrawalResult | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        found = BINARY.search(request.url.path)
        if found and self.target is None:
            rid = self.mock.owner.get((found["org"], found["patient"]))
            if rid is not None:
                urls = self.fetched.setdefault(rid, set())
                urls.add(str(request.url))
                if len(urls) == 2:
                    self.withdraw(rid)
        return await self.inner.handle_async_request(request)

    def withdraw(self, rid: str) -> None:
        # No transaction is open across an await in ehrfetch, so a blocking store call
        # here is one more writer between two of the batch's transactions.
        self.target = rid
        with self.db.sessions.begin() as session:
            self.stored_before = acquired_counts(session, rid)
            self.result = withdraw_consent(
                session, rid, consent_type="ehr", withdrawn_at=NOW, now=NOW
            )

    async def aclose(self) -> None:
        await self.inner.aclose()


async def no_wait(_seconds: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def batch(db: StoreUnderTest, mock: MockNetwork) -> int:
    assert import_roster(mock.roster / "roster.csv", db.sessions, CTX).skipped == 0
    assert import_consents(mock.roster / "consents.csv", db.sessions, CTX).skipped == 0
    selection = select_cohort(
        db.sessions, mock.settings().cohort, CTX.now, limit=COHORT, batch_size=COHORT
    )
    [only] = selection.batches
    return only.id


async def test_a_participant_withdrawn_while_their_batch_runs_keeps_nothing(
    db: StoreUnderTest, mock: MockNetwork, batch: int
) -> None:
    transport = WithdrawOnSecondDocument(httpx.ASGITransport(app=create_app(mock.config)), mock, db)
    result = await run_batch(
        batch, mock.settings(), db.sessions, transport=transport, sleep=no_wait, clock=lambda: NOW
    )
    target = transport.target
    assert target is not None, "no participant had two documents"
    assert transport.stored_before is not None and transport.stored_before.links >= 1
    assert transport.result is not None
    assert transport.result.purge_counts.links == transport.stored_before.links
    assert transport.result.purge_counts.documents == transport.stored_before.documents

    with db.sessions() as session:
        pid = session.scalar(select(Participant.id).where(Participant.research_id == target))
        for column in (
            PatientLink.participant_id, Document.participant_id, Resource.participant_id,
            Provenance.participant_id, Quarantine.participant_id,
        ):  # fmt: skip
            left = session.scalar(select(func.count()).where(column == pid))
            assert left == 0, f"{column.class_.__tablename__} rows survived the withdrawal"
        lineage = session.scalar(
            select(func.count())
            .select_from(ResourceSource)
            .join(Document, Document.id == ResourceSource.document_id)
            .where(Document.participant_id == pid)
        )
        attempts = {
            rid: (a.outcome, a.documents)
            for a, rid in session.execute(
                select(Attempt, Participant.research_id).join(
                    Participant, Participant.id == Attempt.participant_id
                )
            )
        }
        stored = dict(
            session.execute(
                select(Participant.research_id, func.count(Document.id))
                .join(Document, Document.participant_id == Participant.id)
                .where(Document.status == DocumentStatus.STORED)
                .group_by(Participant.research_id)
            ).all()
        )
        provenance = session.scalar(select(func.count()).select_from(Provenance)) or 0
        with_facts = session.scalar(select(func.count(ResourceSource.document_id.distinct()))) or 0
    assert lineage == 0
    assert attempts[target][0] is AttemptOutcome.WITHDRAWN
    assert result.outcomes[AttemptOutcome.WITHDRAWN] == 1

    # Everyone else went on as usual: an outcome each, their documents kept.
    others = {rid: v for rid, v in attempts.items() if rid != target}
    assert len(others) == COHORT - 1
    assert all(outcome not in (None, AttemptOutcome.WITHDRAWN) for outcome, _ in others.values())
    assert any(outcome is AttemptOutcome.RETRIEVED for outcome, _ in others.values())
    assert {rid: n for rid, (_, n) in others.items() if n} == stored
    # One Provenance per stored document that anything was derived from.
    assert 0 < provenance == with_facts < sum(stored.values())

    # The audit trail: the withdrawal row, the target's earlier queries, and no PHI.
    trail = audit_rows(db)
    assert ("withdraw", target) in {(r["operation"], r["research_id"]) for r in trail}
    assert any(r["operation"] == "match" and r["research_id"] == target for r in trail)
    for phi in mock.phi.values():
        assert_no_phi(trail, phi)


# --- withdrawn before their turn: not looked up at all ------------------------------------


class WithdrawEveryoneAtFirstMatch(httpx.AsyncBaseTransport):
    """The mock network; the first ``$match`` request withdraws the whole batch.

    The participant whose lookup sent it is already under way; everyone else's turn
    comes after their withdrawal."""

    def __init__(self, inner: httpx.AsyncBaseTransport, db: StoreUnderTest, batch: int):
        self.inner, self.db, self.batch = inner, db, batch
        self.matches = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Patient/$match"):
            self.matches += 1
            if self.matches == 1:
                with self.db.sessions.begin() as session:
                    members = session.scalars(
                        select(Participant.research_id)
                        .join(Attempt, Attempt.participant_id == Participant.id)
                        .where(Attempt.batch_id == self.batch)
                    ).all()
                    for rid in members:
                        withdraw_consent(
                            session, rid, consent_type="ehr", withdrawn_at=NOW, now=NOW
                        )
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def looked_up(db: StoreUnderTest) -> set[str]:
    return {r["research_id"] for r in audit_rows(db) if r["operation"] == "match"}


@pytest.mark.parametrize("max_age_s", [0.0, 60.0])
async def test_a_participant_withdrawn_before_their_turn_is_not_looked_up(
    db: StoreUnderTest, mock: MockNetwork, batch: int, max_age_s: float
) -> None:
    """One participant at a time, so every other turn comes after the withdrawal; the
    batch reads consent afresh for a lookup once its reading is older than the setting
    (1 s by default; 60 s here is longer than the whole batch takes)."""
    settings = mock.settings().model_copy(
        update={"acquire": AcquireSettings(participant_concurrency=1, consent_max_age_s=max_age_s)}
    )
    transport = WithdrawEveryoneAtFirstMatch(
        httpx.ASGITransport(app=create_app(mock.config)), db, batch
    )
    result = await run_batch(
        batch, settings, db.sessions, transport=transport, sleep=no_wait, clock=lambda: NOW
    )
    with db.sessions() as session:
        assert session.scalar(select(func.count()).select_from(PatientLink)) == 0
        assert session.scalar(select(func.count()).select_from(Document)) == 0
    if max_age_s == 0:
        # Only the participant already under way; nobody else's demographics were sent.
        assert len(looked_up(db)) == 1
        assert transport.matches <= len(mock.config.orgs)
        # (That one is "withdrawn" too if anything of theirs was to be written.)
        assert result.outcomes[AttemptOutcome.WITHDRAWN] >= COHORT - 1
    else:
        # The reading from the batch's start stood for every lookup: all looked up
        # (what the setting allows), and nothing stored (each write re-checks).
        assert len(looked_up(db)) == COHORT


async def test_consent_is_read_once_for_every_lookup_within_its_age_and_window() -> None:
    """The watch reads the next waiting participants together (at most ``window``),
    shares a reading between the lookups it covers that begin within ``max_age_s`` of
    it, and reads again for anyone else."""
    reads: list[frozenset[int]] = []
    withdrawn: set[int] = set()
    now = [100.0]

    class Ctx:
        rules = RULES

    async def fake_in_store(_ctx: Any, work: Callable[[Any], Any], *, write: bool) -> Any:
        assert write is False
        return work(None)

    def fake_among(_session: Any, ids: frozenset[int], _rules: Any) -> frozenset[int]:
        reads.append(ids)
        return frozenset(ids - withdrawn)

    watch = ConsentWatch(range(1, 8), 1.0, window=3, monotonic=lambda: now[0])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("ehrfetch.acquire.in_store", fake_in_store)
        patch.setattr("ehrfetch.acquire.consent_in_force_among", fake_among)
        ctx: Any = Ctx()
        assert await watch.in_force(ctx, 1)
        withdrawn.add(3)
        now[0] += 0.5
        assert await watch.in_force(ctx, 2)
        assert await watch.in_force(ctx, 3)  # the reading is half a second old: it stands
        assert await watch.in_force(ctx, 4)  # not in that reading: read again
        now[0] += 1.1
        withdrawn.add(5)
        assert not await watch.in_force(ctx, 5)  # 1.1 s old: read again
        assert await watch.in_force(ctx, 7)  # out of turn, but that reading covered it
    assert reads == [
        frozenset({1, 2, 3}),  # the window: the next three
        frozenset({4, 5, 6}),  # 1, 2 and 3 are no longer waiting
        frozenset({5, 6, 7}),
    ]
