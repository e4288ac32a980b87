"""The flows against the in-process mock network and the session's Prefect test server.

Flows are imported inside the tests: Prefect reads its settings (its home folder) when
first imported, and the session fixture in conftest.py sets them first.

Each flow reads its settings from a file, as a deployment does; the network is reached
through ``ehrfetch.runs.transport_factory``, replaced here by an ASGI transport to the
mock network (one per batch, created in the batch's own event loop).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from ehrfetch import runs
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.settings import Settings
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Batch,
    BatchStatus,
    Document,
    PatientLink,
    Run,
    RunStatus,
)
from mock_network import create_app
from mock_network.config import NetworkConfig
from mock_network.roster import write_roster
from mock_network.testing import TEST_BASE, KeyPair, small_config
from support import CTX, StoreUnderTest

CLIENT_ID = "ehrfetch-test"
ROSTER = 40
BATCH = 10


@dataclass
class Network:
    key: KeyPair
    config: NetworkConfig
    roster: Path

    def transport(self) -> httpx.AsyncBaseTransport:
        return httpx.ASGITransport(app=create_app(self.config))


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Network:
    key = KeyPair.generate("ES256")
    config = small_config(key, client_id=CLIENT_ID)
    roster = tmp_path_factory.mktemp("roster")
    write_roster(config, roster, size=ROSTER)
    return Network(key, config, roster)


def write_config(path: Path, db: StoreUnderTest, network: Network) -> Path:
    pem = network.key.private.decode()
    path.write_text(
        f"""
[store]
url = {json.dumps(db.url)}

[network]
directory_url = "{TEST_BASE}/directory"
token_url = "{TEST_BASE}/token"
client_id = "{CLIENT_ID}"
private_key = '''{pem}'''
max_tries = 4
backoff_base_s = 0.01
backoff_max_s = 0.05

[orchestration]
batch_concurrency = 2
"""
    )
    return path


@pytest.fixture
def setup(
    db: StoreUnderTest, network: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[StoreUnderTest, str]:
    assert import_roster(network.roster / "roster.csv", db.sessions, CTX).skipped == 0
    assert import_consents(network.roster / "consents.csv", db.sessions, CTX).skipped == 0
    monkeypatch.setattr(runs, "transport_factory", network.transport)
    return db, str(write_config(tmp_path / "ehrfetch.toml", db, network))


async def artifacts_of(flow_run_id: UUID) -> dict[str, Any]:
    """The artifacts of one flow run, by key, read back from the Prefect server."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        # The raw endpoint: the client's helper sends nulls for the filters left out,
        # which the server refuses.
        response = await client.request(
            "POST",
            "/artifacts/filter",
            json={
                "flow_runs": {"id": {"any_": [str(flow_run_id)]}},
                "sort": "CREATED_DESC",
                "limit": 50,
                "offset": 0,
            },
        )
    return {a["key"]: a["data"] for a in response.json() if a["key"]}


def attempts_by_batch(db: StoreUnderTest) -> dict[int, list[tuple[Any, ...]]]:
    with db.sessions() as session:
        rows = session.scalars(select(Attempt).order_by(Attempt.id)).all()
    result: dict[int, list[tuple[Any, ...]]] = {}
    for a in rows:
        result.setdefault(a.batch_id, []).append(
            (a.id, a.outcome, a.error_code, a.started_at, a.finished_at)
        )
    return result


def batch_tries(db: StoreUnderTest) -> dict[int, int]:
    with db.sessions() as session:
        return {int(b): int(t) for b, t in session.execute(select(Batch.id, Batch.tries)).all()}


def store_state(db: StoreUnderTest) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with db.sessions() as session:
        links = session.execute(
            select(PatientLink.participant_id, PatientLink.organization_id, PatientLink.decision)
            .order_by(PatientLink.id)
        ).all()  # fmt: skip
        documents = session.execute(
            select(Document.participant_id, Document.document_reference_id).order_by(Document.id)
        ).all()
    return [tuple(r) for r in links], [tuple(r) for r in documents]


async def test_acquire_ehr_gives_everyone_an_outcome_and_publishes_artifacts(
    setup: tuple[StoreUnderTest, str],
) -> None:
    from flows._batches import PROGRESS, SUMMARY_REPORT, SUMMARY_TABLE
    from flows.acquire import acquire_ehr

    db, config = setup
    state = await acquire_ehr(batch_size=BATCH, config_file=config, return_state=True)
    summary = await state.aresult()
    assert isinstance(summary, runs.RunSummary)
    with db.sessions() as session:
        attempts = session.scalars(select(Attempt)).all()
        run = session.scalars(select(Run)).one()
    # Everyone eligible (the roster also has people without consent) has an outcome.
    assert len(attempts) > ROSTER // 2 and all(a.outcome is not None for a in attempts)
    assert summary.total_participants == len(attempts)
    assert "pending" not in summary.participants
    assert summary.participants.get("retrieved", 0) > 0
    assert sum(summary.batches.values()) == -(-len(attempts) // BATCH)
    assert run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL)
    assert run.flow_run_id == str(state.state_details.flow_run_id)
    assert run.parameters["dry_run"] is False

    flow_run_id = state.state_details.flow_run_id
    assert flow_run_id is not None
    artifacts = await artifacts_of(flow_run_id)
    assert artifacts[PROGRESS] == 100.0
    table = json.loads(artifacts[SUMMARY_TABLE])
    participants = {r["item"]: r["count"] for r in table if r["section"] == "participants"}
    assert sum(participants.values()) == len(attempts)
    assert any(r["section"] == "documents" for r in table)
    assert "Participants by outcome" in artifacts[SUMMARY_REPORT]

    # Nobody is eligible any more: no run, and a note instead of a summary.
    assert await acquire_ehr(config_file=config) is None


async def test_rerun_failed_touches_only_the_failed_batch(
    setup: tuple[StoreUnderTest, str],
) -> None:
    from flows.acquire import acquire_ehr
    from flows.rerun import rerun_failed

    db, config = setup
    first = await acquire_ehr(limit=2 * BATCH, batch_size=BATCH, config_file=config)
    assert first is not None and first.run_id is not None
    broken, kept = first.batch_ids
    # The first batch failed for everyone (as if the network had been down).
    with db.sessions.begin() as session:
        session.execute(
            update(Attempt)
            .where(Attempt.batch_id == broken)
            .values(outcome=AttemptOutcome.FAILED, error_code="transport")
        )
        session.execute(update(Batch).where(Batch.id == broken).values(status=BatchStatus.FAILED))
        session.execute(update(Run).values(status=RunStatus.FAILED))
    before = attempts_by_batch(db)
    state_before = store_state(db)
    tries_before = batch_tries(db)

    summary = await rerun_failed(run_id=first.run_id, config_file=config)
    assert summary is not None
    assert summary.batch_ids == (broken,)
    after = attempts_by_batch(db)
    assert after[kept] == before[kept]  # not even re-read: same outcomes and times
    # Every attempt of the broken batch was done again (its failure is gone).
    redone = zip(after[broken], before[broken], strict=True)
    assert all(a[2] != "transport" and a[4] != b[4] for a, b in redone)
    assert "pending" not in summary.participants
    # Re-running converged: the same links and documents, nothing twice.
    assert store_state(db) == state_before
    tries = batch_tries(db)
    assert (tries[broken], tries[kept]) == (tries_before[broken] + 1, tries_before[kept])
    with db.sessions() as session:
        run = session.get(Run, first.run_id)
    assert run is not None and run.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL)

    # Idempotent: nothing is left to do.
    assert await rerun_failed(run_id=first.run_id, config_file=config) is None


async def test_a_run_can_ask_only_some_organizations(
    setup: tuple[StoreUnderTest, str], network: Network
) -> None:
    # No Prefect here: the organizations subset is ehrfetch's (run parameters → batch).
    db, _config = setup
    only = network.config.orgs[1].id
    settings = Settings()
    plan = runs.plan_run(db.sessions, settings, limit=BATCH, organizations=[only], now=CTX.now)
    [batch_id] = plan.batch_ids
    await runs.acquire_batch(batch_id, mock_settings(network), db.sessions)
    with db.sessions() as session:
        asked = set(session.scalars(select(PatientLink.organization_id)))
        fetched = set(session.scalars(select(Document.organization_id)))
    assert asked == {only}
    assert fetched <= {only}


async def test_unknown_organizations_fail_the_batch_without_no_match(
    setup: tuple[StoreUnderTest, str], network: Network
) -> None:
    db, _config = setup
    plan = runs.plan_run(db.sessions, Settings(), limit=3, organizations=["nowhere"], now=CTX.now)
    result = await runs.acquire_batch(plan.batch_ids[0], mock_settings(network), db.sessions)
    assert result.status is BatchStatus.FAILED
    with db.sessions() as session:
        outcomes = set(session.scalars(select(Attempt.outcome)))
    assert outcomes == {AttemptOutcome.FAILED}


def mock_settings(network: Network) -> Settings:
    from ehrfetch.settings import NetworkSettings

    return Settings(
        network=NetworkSettings(
            directory_url=f"{TEST_BASE}/directory",
            token_url=f"{TEST_BASE}/token",
            client_id=CLIENT_ID,
            private_key=network.key.private.decode(),
        )
    )


def test_cli_run_status_and_rerun(setup: tuple[StoreUnderTest, str]) -> None:
    from ehrfetch.cli import app

    db, config = setup
    cli = CliRunner()
    result = cli.invoke(
        app, ["--config", config, "run", "--limit", "10", "--batch-size", "5", "--dry-run"]
    )
    assert result.exit_code in (0, 1), result.output
    assert "batches 2/2, participants 10/10" in result.stdout  # plain lines off a terminal
    assert "Participants" in result.stdout
    with db.sessions() as session:
        assert session.scalar(select(Document.id).limit(1)) is None  # a dry run fetched nothing

    status = cli.invoke(app, ["--config", config, "status", "--json"])
    assert status.exit_code == 0, status.output
    report = json.loads(status.stdout)
    assert sum(report["participants"].values()) == 10
    assert report["runs"][0]["parameters"]["dry_run"] is True
    assert report["open_batches"] == []

    nothing = cli.invoke(app, ["--config", config, "rerun", "--failed", "--batch", "999"])
    assert nothing.exit_code == 2
    assert "no such batch: 999" in nothing.stderr
    assert cli.invoke(app, ["--config", config, "rerun"]).exit_code == 2


def test_worker_processes_get_a_pacing_directory_for_the_run_only() -> None:
    from flows._batches import _run_folder, _shared_pacing

    with _run_folder() as folder:
        path = _shared_pacing(folder, True)
        assert path is not None and Path(path).is_dir()
        (Path(path) / "schedule.slot").write_bytes(b"\0" * 8)
        assert _shared_pacing(folder, False) is None  # threads share the process's buckets
    assert not folder.exists()  # removed with the run, schedule files and all


@pytest.mark.parametrize(("per_worker", "distinct"), [(2, 3), (0, 1)])
def test_batch_workers_are_replaced_after_their_share_of_batches(
    per_worker: int, distinct: int
) -> None:
    from prefect import task  # after the session's Prefect settings (conftest)

    from flows._workers import RecyclingProcessPoolTaskRunner

    @task
    def worker_pid() -> int:
        return os.getpid()

    runner = RecyclingProcessPoolTaskRunner(1, per_worker)
    assert runner.duplicate().tasks_per_worker == per_worker
    with runner:
        # All queued at once, as a run queues its batches.
        futures = [runner.submit(worker_pid, {}) for _ in range(6)]
        pids = [future.result(timeout=180) for future in futures]
    # One worker at a time: a fresh process every two tasks, or the same one for all.
    assert len(set(pids)) == distinct and os.getpid() not in pids


def test_a_pool_replaces_each_worker_that_leaves_with_work_queued() -> None:
    # CPython 3.11's own pool hangs here after the first worker leaves (gh-115634).
    import multiprocessing
    from concurrent.futures import wait

    from flows._workers import ReplacingProcessPoolExecutor

    with ReplacingProcessPoolExecutor(
        1, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=2
    ) as pool:
        futures = [pool.submit(os.getpid) for _ in range(10)]
        done, not_done = wait(futures, timeout=120)
    assert not not_done, f"{len(not_done)} tasks never ran"
    assert len({f.result() for f in done}) == 5
