"""A batch of the mock network's roster, end to end, in process (ASGITransport).

The mock network is the real thing for ehrfetch: the same app that `python -m
mock_network serve` runs, reached through httpx's ASGI transport instead of a socket.
Its truth file says who each participant really is at each organization, so every
accepted link is checked against it: a wrong accept is a privacy breach.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select

from ehrfetch.batch import INTERRUPTED, run_batch
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.selection import select_cohort
from ehrfetch.settings import NetworkSettings, Settings
from ehrfetch.store.batches import reopen_batch
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Audit,
    Batch,
    BatchStatus,
    DecidedBy,
    Document,
    DocumentStatus,
    LinkDecision,
    Participant,
    PatientLink,
    Provenance,
    Quarantine,
    Resource,
    ResourceSource,
)
from mock_network import create_app
from mock_network.config import FaultRates, NetworkConfig, OrgConfig
from mock_network.roster import write_roster
from mock_network.testing import TEST_BASE, KeyPair, small_config
from support import CTX, StoreUnderTest

CLIENT_ID = "ehrfetch-test"
# A PDF or a plain-text note names its patient only in prose: ehrfetch cannot tell that
# one is about someone else when its DocumentReference says otherwise (documented).
UNSTRUCTURED = {"application/pdf", "text/plain"}
ROSTER_SIZE = 60


@dataclass
class MockNetwork:
    key: KeyPair
    config: NetworkConfig
    roster: Path
    truth: dict[str, dict[str, Any]]

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

    def transport(self, config: NetworkConfig | None = None) -> httpx.ASGITransport:
        return httpx.ASGITransport(app=create_app(config or self.config))


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> MockNetwork:
    key = KeyPair.generate("ES256")
    config = small_config(key, client_id=CLIENT_ID)
    roster = tmp_path_factory.mktemp("roster")
    write_roster(config, roster, size=ROSTER_SIZE)
    with (roster / "truth.ndjson").open() as fh:
        truth = {row["research_id"]: row for row in map(json.loads, fh)}
    return MockNetwork(key, config, roster, truth)


async def no_wait(_seconds: float) -> None:
    await asyncio.sleep(0)


def load(db: StoreUnderTest, mock: MockNetwork, limit: int | None = None) -> list[int]:
    assert import_roster(mock.roster / "roster.csv", db.sessions, CTX).skipped == 0
    assert import_consents(mock.roster / "consents.csv", db.sessions, CTX).skipped == 0
    selection = select_cohort(
        db.sessions, mock.settings().cohort, CTX.now, limit=limit, batch_size=ROSTER_SIZE
    )
    return [b.id for b in selection.batches]


def snapshot(db: StoreUnderTest) -> dict[str, Any]:
    """The store's acquisition state, by natural keys (ids may differ between runs)."""
    with db.sessions() as session:
        rid = dict(session.execute(select(Participant.id, Participant.research_id)).all())
        return {
            "links": sorted(
                (rid[p.participant_id], p.organization_id, p.network_patient_id, p.decision)
                for p in session.scalars(select(PatientLink))
            ),
            "documents": sorted(
                (rid[d.participant_id], d.organization_id, d.document_reference_id, d.status)
                for d in session.scalars(select(Document))
            ),
            "resources": sorted(
                (rid[r.participant_id], r.resource_type, r.fhir_id)
                for r in session.scalars(select(Resource))
            ),
            "lineage": session.scalar(select(func.count()).select_from(ResourceSource)),
            "provenance": sorted(p.fhir_id for p in session.scalars(select(Provenance))),
        }


def check_no_false_accepts(db: StoreUnderTest, mock: MockNetwork) -> int:
    with db.sessions() as session:
        rid = dict(session.execute(select(Participant.id, Participant.research_id)).all())
        accepted = session.scalars(
            select(PatientLink).where(PatientLink.decision == LinkDecision.ACCEPT)
        ).all()
    for link in accepted:
        truth = mock.truth[rid[link.participant_id]]
        assert truth["known_at"][link.organization_id] == link.network_patient_id, (
            f"false accept: {rid[link.participant_id]} at {link.organization_id} "
            f"({truth['hard_case']})"
        )
    return len(accepted)


@pytest.fixture
def loaded(db: StoreUnderTest, mock: MockNetwork) -> tuple[StoreUnderTest, list[int]]:
    return db, load(db, mock)


# Fault tests need fewer people: enough that every organization is asked and answers.
FAULT_COHORT = 20


@pytest.fixture
def few(db: StoreUnderTest, mock: MockNetwork) -> tuple[StoreUnderTest, list[int]]:
    return db, load(db, mock, limit=FAULT_COHORT)


async def test_batch_end_to_end_and_rerun_changes_nothing(
    loaded: tuple[StoreUnderTest, list[int]], mock: MockNetwork
) -> None:
    db, [batch_id] = loaded
    result = await run_batch(
        batch_id, mock.settings(), db.sessions, transport=mock.transport(), sleep=no_wait
    )
    with db.sessions() as session:
        attempts = session.scalars(select(Attempt)).all()
        assert attempts and all(a.outcome is not None for a in attempts)
        stored = (
            session.scalar(
                select(func.count())
                .select_from(Document)
                .where(Document.status == DocumentStatus.STORED)
            )
            or 0
        )
        provenance = session.scalar(select(func.count()).select_from(Provenance)) or 0
        with_facts = session.scalar(select(func.count(ResourceSource.document_id.distinct()))) or 0
        targets = [len(p.body["target"]) for p in session.scalars(select(Provenance))]
        audit = session.scalars(select(Audit)).all()
    assert sum(result.outcomes.values()) == len(attempts)
    assert result.outcomes[AttemptOutcome.RETRIEVED] > 0
    assert result.outcomes[AttemptOutcome.NO_MATCH] > 0
    assert result.resources > 0
    # One Provenance per stored document that anything was derived from (FHIR wants a
    # target or more); PDF and text documents are stored without one.
    assert provenance == with_facts < stored
    assert min(targets) >= 1
    assert check_no_false_accepts(db, mock) > 0
    # The audit trail has every call, and only research ids and codes.
    assert {a.operation for a in audit} >= {"directory", "token", "match", "search_documents"}
    assert all(a.purpose in (None, "T-IAS") for a in audit)

    before = snapshot(db)
    with db.sessions.begin() as session:
        assert reopen_batch(session, batch_id, only_failed=False) == len(attempts)
    again = await run_batch(
        batch_id, mock.settings(), db.sessions, transport=mock.transport(), sleep=no_wait
    )
    assert snapshot(db) == before
    # Documents stored by the first attempt still count: a participant whose outcome was
    # lost with a killed run is "retrieved" on the retry, not "no documents" (the retry
    # fetches nothing new).
    assert again.outcomes == result.outcomes
    assert again.resources == 0


def faulty(mock: MockNetwork, **rates: float) -> NetworkConfig:
    """The network with one organization answering with the given fault rates."""
    orgs = list(mock.config.orgs)
    orgs[0] = OrgConfig(**{**orgs[0].model_dump(), "faults": FaultRates(**rates)})
    return mock.config.model_copy(update={"orgs": tuple(orgs)})


@pytest.mark.parametrize(
    ("rates", "quarantine_code"),
    [
        pytest.param({"wrong_hash": 1.0}, "document_mismatch", id="wrong_hash"),
        pytest.param({"wrong_size": 1.0}, "document_mismatch", id="wrong_size"),
        pytest.param({"wrong_patient": 1.0}, "wrong_patient", id="wrong_patient"),
        pytest.param({"foreign_host": 1.0}, "foreign_host", id="foreign_host"),
        pytest.param({"oversized": 1.0}, "too_large", id="oversized"),
    ],
)
async def test_document_faults_are_quarantined(
    few: tuple[StoreUnderTest, list[int]],
    mock: MockNetwork,
    rates: dict[str, float],
    quarantine_code: str,
) -> None:
    db, [batch_id] = few
    settings = mock.settings()
    if quarantine_code == "too_large":
        settings = settings.model_copy(
            update={"network": settings.network.model_copy(update={"max_body_bytes": 1_000_000})}
        )
    config = faulty(mock, **rates)
    await run_batch(
        batch_id, settings, db.sessions, transport=mock.transport(config), sleep=no_wait
    )
    bad_org = config.orgs[0].id
    with db.sessions() as session:
        quarantined = session.scalars(select(Quarantine)).all()
        docs_at_bad = session.scalars(
            select(Document).where(Document.organization_id == bad_org)
        ).all()
        attempts = session.scalars(select(Attempt)).all()
    assert quarantined, "the faulty organization's documents were not quarantined"
    assert {q.detail["code"] for q in quarantined if q.detail} == {quarantine_code}
    if quarantine_code == "wrong_patient":
        checkable = [d for d in docs_at_bad if d.content_type not in UNSTRUCTURED]
        assert checkable
        assert all(d.status is DocumentStatus.QUARANTINED for d in checkable)
    else:
        assert all(d.status is DocumentStatus.QUARANTINED for d in docs_at_bad)
    # Never the bytes of a document about someone else, or of one never fetched.
    if quarantine_code in ("wrong_patient", "foreign_host", "too_large"):
        assert all(d.content is None for d in docs_at_bad if d.status is DocumentStatus.QUARANTINED)
    # The rest of the batch went on: every participant has an outcome.
    assert all(a.outcome is not None for a in attempts)
    check_no_false_accepts(db, mock)


@pytest.mark.parametrize(
    ("rates", "try_timeout"),
    [
        pytest.param({"rate_limited": 0.2}, None, id="rate_limited"),
        pytest.param({"server_error": 0.2}, None, id="server_error"),
        pytest.param({"bad_gateway": 0.2}, None, id="bad_gateway"),
        pytest.param({"service_unavailable": 0.2}, None, id="service_unavailable"),
        pytest.param({"dropped_connection": 0.2}, None, id="dropped_connection"),
        pytest.param({"truncated_body": 0.2}, None, id="truncated_body"),
        pytest.param({"hang": 0.02}, 0.3, id="hang"),
    ],
)
async def test_transient_faults_are_survived_by_retries(
    few: tuple[StoreUnderTest, list[int]],
    mock: MockNetwork,
    rates: dict[str, float],
    try_timeout: float | None,
) -> None:
    db, [batch_id] = few
    settings = mock.settings()
    # 10 tries at a 20% fault rate: a call fails for good about once in ten million.
    changes: dict[str, Any] = {"max_tries": 10}
    if try_timeout is not None:
        changes["request_timeout_s"] = try_timeout
    settings = settings.model_copy(update={"network": settings.network.model_copy(update=changes)})
    await run_batch(
        batch_id, settings, db.sessions, transport=mock.transport(faulty(mock, **rates)),
        sleep=no_wait,
    )  # fmt: skip
    with db.sessions() as session:
        errors = session.scalars(select(Attempt.error_code)).all()
    assert set(errors) == {None}
    through_faults = snapshot(db)
    # The same batch again through a network without faults finds nothing more.
    with db.sessions.begin() as session:
        reopen_batch(session, batch_id, only_failed=False)
    await run_batch(
        batch_id, mock.settings(), db.sessions, transport=mock.transport(), sleep=no_wait
    )
    assert snapshot(db) == through_faults
    check_no_false_accepts(db, mock)


@pytest.mark.parametrize(
    ("rates", "code"),
    [
        pytest.param({"malformed_json": 1.0}, "invalid_response", id="malformed_json"),
        pytest.param({"invalid_fhir": 1.0}, "invalid_response", id="invalid_fhir"),
    ],
)
async def test_bad_answers_fail_that_organization_only(
    few: tuple[StoreUnderTest, list[int]],
    mock: MockNetwork,
    rates: dict[str, float],
    code: str,
) -> None:
    db, [batch_id] = few
    config = faulty(mock, **rates)
    result = await run_batch(
        batch_id, mock.settings(), db.sessions, transport=mock.transport(config), sleep=no_wait
    )
    bad_org = config.orgs[0].id
    with db.sessions() as session:
        attempts = session.scalars(select(Attempt)).all()
        from_bad = session.scalar(
            select(func.count()).select_from(Document).where(Document.organization_id == bad_org)
        )
    # Every participant was asked there, so every attempt names the error...
    assert {a.error_code for a in attempts} == {code}
    assert from_bad == 0
    # ...and the other organizations still delivered.
    assert result.outcomes[AttemptOutcome.RETRIEVED] > 0
    check_no_false_accepts(db, mock)


async def test_a_looping_next_link_stops_paging_with_an_error(
    few: tuple[StoreUnderTest, list[int]], mock: MockNetwork
) -> None:
    db, [batch_id] = few
    settings = mock.settings()
    settings = settings.model_copy(
        update={"network": settings.network.model_copy(update={"page_size": 1})}
    )
    config = faulty(mock, looping_next=1.0)
    await run_batch(
        batch_id, settings, db.sessions, transport=mock.transport(config), sleep=no_wait
    )
    with db.sessions() as session:
        codes = set(session.scalars(select(Attempt.error_code)))
    assert "paging_loop" in codes


async def test_a_stopping_batch_finishes_those_in_flight_and_fails_the_rest_as_interrupted(
    few: tuple[StoreUnderTest, list[int]], mock: MockNetwork
) -> None:
    db, [batch_id] = few
    settings = mock.settings()
    acquire = settings.acquire.model_copy(update={"participant_concurrency": 4})
    settings = settings.model_copy(update={"acquire": acquire})
    asked = 0

    def stopping() -> bool:  # asked once as the batch begins, then once per participant
        nonlocal asked
        asked += 1
        return asked > 1 + 4  # the run is stopped once four have begun

    result = await run_batch(
        batch_id,
        settings,
        db.sessions,
        transport=mock.transport(),
        sleep=no_wait,
        stopping=stopping,
    )
    with db.sessions() as session:
        attempts = session.scalars(select(Attempt)).all()
        batch = session.get(Batch, batch_id)
        assert batch is not None
        batch_status, batch_error = batch.status, batch.error
    done = [a for a in attempts if a.error_detail != INTERRUPTED]
    interrupted = [a for a in attempts if a.error_detail == INTERRUPTED]
    # The four in flight finished as an uninterrupted batch would have them finish...
    assert len(done) == 4 and sum(result.outcomes.values()) == 4
    assert all(a.outcome is not None and a.error_code != "batch_failed" for a in done)
    # ... nobody else began: they failed with the reason, so a re-run takes them at once.
    assert len(interrupted) == FAULT_COHORT - 4
    assert {(a.outcome, a.error_code) for a in interrupted} == {
        (AttemptOutcome.FAILED, "batch_failed")
    }
    assert batch_status == BatchStatus.PARTIAL and batch_error == INTERRUPTED


async def test_a_batch_asked_to_stop_before_it_begins_touches_nothing(
    few: tuple[StoreUnderTest, list[int]], mock: MockNetwork
) -> None:
    db, [batch_id] = few
    result = await run_batch(
        batch_id,
        mock.settings(),
        db.sessions,
        transport=mock.transport(),
        stopping=lambda: True,
    )
    assert result.status == BatchStatus.PENDING
    with db.sessions() as session:
        batch = session.get(Batch, batch_id)
        assert batch is not None and batch.status == BatchStatus.PENDING  # the run closes it
        assert batch.started_at is None
        assert session.scalar(select(func.count()).select_from(Audit)) == 0  # nobody asked


class NobodyFound(httpx.AsyncBaseTransport):
    """The mock network, except that every ``$match`` now finds no one."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.matches = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Patient/$match"):
            self.matches += 1
            empty = {"resourceType": "Bundle", "type": "searchset", "total": 0, "entry": []}
            return httpx.Response(
                200, json=empty, headers={"Content-Type": "application/fhir+json"}
            )
        return await self.inner.handle_async_request(request)


async def test_an_operators_accept_is_retrieved_when_match_finds_no_one_now(
    few: tuple[StoreUnderTest, list[int]], mock: MockNetwork
) -> None:
    # A participant with no candidate anywhere writes nothing and takes no lock; their
    # accepted links (an operator's accept from the review queue) must still be fetched.
    db, [batch_id] = few
    first = await run_batch(
        batch_id, mock.settings(), db.sessions, transport=mock.transport(), sleep=no_wait
    )
    with db.sessions.begin() as session:
        link = session.scalars(
            select(PatientLink)
            .join(Document, Document.link_id == PatientLink.id)
            .where(PatientLink.decision == LinkDecision.ACCEPT)
            .order_by(PatientLink.id)
        ).first()
        assert link is not None
        link.decided_by = DecidedBy.OPERATOR
        participant_id = link.participant_id
        documents = sorted(
            session.scalars(
                select(Document.document_reference_id).where(
                    Document.participant_id == participant_id
                )
            )
        )
        session.execute(delete(Document).where(Document.participant_id == participant_id))
        assert reopen_batch(session, batch_id, only_failed=False) > 1
    nobody = NobodyFound(mock.transport())
    again = await run_batch(batch_id, mock.settings(), db.sessions, transport=nobody, sleep=no_wait)
    assert nobody.matches > 0
    with db.sessions() as session:
        fetched = sorted(
            session.scalars(
                select(Document.document_reference_id).where(
                    Document.participant_id == participant_id
                )
            )
        )
        outcome = session.scalar(
            select(Attempt.outcome).where(Attempt.participant_id == participant_id)
        )
    assert fetched == documents
    assert outcome is AttemptOutcome.RETRIEVED
    # Nobody was found, so no one is linked anew: the retrieved are those linked before.
    assert again.outcomes[AttemptOutcome.RETRIEVED] == first.outcomes[AttemptOutcome.RETRIEVED]


async def test_store_work_runs_on_the_batchs_own_threads_as_many_as_configured(
    few: tuple[StoreUnderTest, list[int]], mock: MockNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import ehrfetch.acquire

    db, [batch_id] = few
    ran_on: list[str] = []
    transaction = ehrfetch.acquire._transaction

    def spy(*args: Any, **kwargs: Any) -> Any:
        ran_on.append(threading.current_thread().name)
        return transaction(*args, **kwargs)

    monkeypatch.setattr(ehrfetch.acquire, "_transaction", spy)
    settings = mock.settings()
    settings = settings.model_copy(
        update={"store": settings.store.model_copy(update={"threads": 3})}
    )
    result = await run_batch(
        batch_id, settings, db.sessions, transport=mock.transport(), sleep=no_wait
    )
    assert sum(result.outcomes.values()) == FAULT_COHORT
    # Every participant's consent check at least, never on the event loop's thread...
    assert len(ran_on) >= FAULT_COHORT
    assert all(name.startswith("ehrfetch-store") for name in ran_on)
    # ...on three threads at most, and none left behind once the batch is done.
    assert 1 <= len(set(ran_on)) <= 3
    assert not [t for t in threading.enumerate() if t.name.startswith("ehrfetch-store")]
