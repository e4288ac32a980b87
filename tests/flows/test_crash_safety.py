"""Crash safety: a run killed mid-way and run again ends where an uninterrupted run does.

Everything here is a real process: the mock network (``python -m mock_network serve
--no-faults``, so every run sees the same answers), and ``ehrfetch run`` with its own
temporary Prefect server (no ``PREFECT_API_URL``). Store A gets one uninterrupted run
(in the background, while the tests work). Each test imports the same roster into a
fresh store B, starts ``ehrfetch run``, SIGKILLs its whole process group (ehrfetch and
its Prefect server) once one batch has finished and the next is half done, checks that
``ehrfetch status`` recognises the dead batch as stale, runs again (``ehrfetch run`` or
``ehrfetch rerun --failed``) and compares B with A by natural keys.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import store
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.mocknet import RunningNetwork, running_network, write_roster
from ehrfetch.settings import RosterSettings, StoreSettings
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Batch,
    Document,
    Organization,
    Participant,
    PatientLink,
    Provenance,
    Quarantine,
    Resource,
    ResourceSource,
    Run,
)

REPO = Path(__file__).resolve().parents[2]
NETWORK_CONFIG = REPO / "config" / "mock_network.toml"
EHRFETCH = [sys.executable, "-c", "from ehrfetch.cli import main; main()"]

ROSTER = 120  # about 100 eligible (some withdrew, some have an EHR on file)
BATCH = 20  # five batches, one at a time: a few seconds each, time enough to kill mid-run
RUN_TIMEOUT_S = 150
KILL_DEADLINE_S = 120
POLL_S = 0.05

FINISHED = ("succeeded", "partial", "failed")
OPEN = ("pending", "running")

Row = tuple[Any, ...]
NATURAL_KEYS: dict[str, Callable[[Row], Row]] = {
    "links": lambda row: row[:3],  # participant, organization, network patient id
    "documents": lambda row: row[:3],  # participant, organization, DocumentReference id
    "resources": lambda row: row[1:3],  # type, FHIR id
    "lineage": lambda row: row[:2],  # resource, document
    "provenance": lambda row: row[:1],  # FHIR id
    "quarantine": lambda row: row,
}


# --- processes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    running: RunningNetwork
    roster: Path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The mock network, without faults, for the whole module (≈ 5 s to start)."""
    base = tmp_path_factory.mktemp("network")
    # A copy of the config, so the client key pair it names lands here, not in the repo.
    config = base / "config" / NETWORK_CONFIG.name
    config.parent.mkdir()
    shutil.copyfile(NETWORK_CONFIG, config)
    roster = base / "roster"
    write_roster(config, roster, ROSTER)
    with running_network(config, base / "network.log", extra=("--no-faults",)) as running:
        yield Network(running, roster)


@dataclass
class Store:
    """One SQLite store with the roster imported, and how ehrfetch is run on it."""

    path: Path
    network: Network
    prefect_home: Path
    outputs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def env(self, **settings: str) -> dict[str, str]:
        """ehrfetch's environment: this store, the network, a Prefect of its own."""
        env = {
            k: v
            for k, v in os.environ.items()
            # Nothing of the developer's or of the test session's Prefect (its API URL).
            if not k.startswith(("EHRFETCH__", "PREFECT_"))
        }
        keys = self.network.running.keys
        env.update(
            EHRFETCH__STORE__URL=self.url,
            EHRFETCH__NETWORK__DIRECTORY_URL=f"{self.network.running.base_url}/directory",
            EHRFETCH__NETWORK__TOKEN_URL=f"{self.network.running.base_url}/token",
            EHRFETCH__NETWORK__CLIENT_ID="ehrfetch",
            EHRFETCH__NETWORK__PRIVATE_KEY_FILE=str(keys / "ehrfetch.key.pem"),
            EHRFETCH__COHORT__BATCH_SIZE=str(BATCH),
            EHRFETCH__ORCHESTRATION__BATCH_CONCURRENCY="1",
            # A temporary local Prefect server per command, its database in this folder.
            PREFECT_HOME=str(self.prefect_home),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_LOGGING_TO_API_ENABLED="false",
        )
        env.update({f"EHRFETCH__{k.upper()}": v for k, v in settings.items()})
        return env

    def start(self, *args: str, log: str, **settings: str) -> subprocess.Popen[bytes]:
        """``ehrfetch ARGS`` in a session of its own (its Prefect server is in it too)."""
        out = self.path.parent / f"{log}.log"
        self.outputs.append(str(out))
        with out.open("wb") as fh:
            return subprocess.Popen(
                [*EHRFETCH, *args],
                cwd=self.path.parent,  # no config/ehrfetch.toml here: the env decides
                env=self.env(**settings),
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(self, *args: str, log: str, **settings: str) -> int:
        process = self.start(*args, log=log, **settings)
        try:
            return process.wait(timeout=RUN_TIMEOUT_S)
        finally:
            stop(process)

    def output(self) -> str:
        """The last lines of every command's output, for a failure message."""
        return "\n".join(
            f"--- {name}\n" + "\n".join(Path(name).read_text(errors="replace").splitlines()[-40:])
            for name in self.outputs
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process's whole group (ehrfetch and its Prefect server) if it lives."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def new_store(network: Network, folder: Path, prefect_home: Path) -> Store:
    folder.mkdir(parents=True, exist_ok=True)
    db = Store(folder / "ehrfetch.db", network, prefect_home)
    engine = store.create_store_engine(StoreSettings(url=db.url))
    try:
        store.upgrade(engine)
        sessions = store.session_factory(engine)
        ctx = ReadContext.from_settings(RosterSettings())
        assert import_roster(network.roster / "roster.csv", sessions, ctx).skipped == 0
        assert import_consents(network.roster / "consents.csv", sessions, ctx).skipped == 0
    finally:
        engine.dispose()
    return db


@dataclass
class Reference:
    """Store A: an uninterrupted ``ehrfetch run``, started in the background."""

    db: Store
    process: subprocess.Popen[bytes]
    _snapshot: dict[str, Any] | None = None

    def snapshot(self) -> dict[str, Any]:
        if self._snapshot is None:
            code = self.process.wait(timeout=RUN_TIMEOUT_S)
            assert code == 0, f"the uninterrupted run failed ({code}):\n{self.db.output()}"
            self._snapshot = snapshot(self.db)
        return self._snapshot


@pytest.fixture(scope="module")
def reference(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reference]:
    folder = tmp_path_factory.mktemp("uninterrupted")
    # A Prefect home of its own: this run overlaps the killed ones.
    db = new_store(network, folder, folder / "prefect-home")
    process = db.start("run", log="run")
    try:
        yield Reference(db, process)
    finally:
        stop(process)


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Prefect home of the killed runs and their re-runs, one after the other.

    Shared, so only the first one pays for creating Prefect's database, and the later
    ones start where a SIGKILLed Prefect server left it, as an operator's would.
    """
    return tmp_path_factory.mktemp("prefect-home")


# --- the store, read ------------------------------------------------------------------


def batch_progress(db: Store) -> list[tuple[str, int, int]]:
    """(status, attempts done, size) of every batch, read-only, while ehrfetch writes."""
    if not db.path.exists():
        return []
    connection = sqlite3.connect(f"file:{db.path}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute(
            "SELECT b.status, (SELECT count(*) FROM attempt a"
            " WHERE a.batch_id = b.id AND a.outcome IS NOT NULL), b.size"
            " FROM batch b ORDER BY b.id"
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet, or busy: ask again
        return []
    finally:
        connection.close()
    return [(str(s), int(d), int(n)) for s, d, n in rows]


def mid_run(progress: Sequence[tuple[str, int, int]]) -> bool:
    """A batch finished and the next one is half done: the moment to kill."""
    finished = any(status in FINISHED for status, _, _ in progress)
    # At most half done, so it cannot finish between this look and the kill.
    halfway = any(status == "running" and 0 < done <= size // 2 for status, done, size in progress)
    return finished and halfway


def sessions_of(db: Store) -> tuple[sessionmaker[Session], Engine]:
    engine = store.create_store_engine(StoreSettings(url=db.url))
    return store.session_factory(engine), engine


def snapshot(db: Store) -> dict[str, Any]:
    """What the store acquired, by natural keys (row ids differ between stores).

    Lists keep every row (not sets), so a duplicate would show as a difference.
    """
    sessions, engine = sessions_of(db)
    try:
        with sessions() as session:
            rid = dict(session.execute(select(Participant.id, Participant.research_id)).all())
            docs = {
                d.id: (rid[d.participant_id], d.organization_id, d.document_reference_id)
                for d in session.scalars(select(Document))
            }
            resources = {
                r.id: (r.resource_type, r.fhir_id) for r in session.scalars(select(Resource))
            }
            latest: dict[str, str | None] = {}
            attempts: Counter[str] = Counter()
            for participant_id, outcome in session.execute(
                select(Attempt.participant_id, Attempt.outcome).order_by(Attempt.id)
            ):
                latest[rid[participant_id]] = outcome.value if outcome is not None else None
                attempts[rid[participant_id]] += 1
            return {
                "organizations": sorted(session.scalars(select(Organization.id))),
                "links": sorted(
                    (
                        rid[p.participant_id],
                        p.organization_id,
                        p.network_patient_id,
                        p.decision.value,
                        p.decided_by.value,
                        p.grade,
                        round(p.score, 6),
                        tuple(p.reasons),
                    )
                    for p in session.scalars(select(PatientLink))
                ),
                "documents": sorted(
                    (
                        *docs[d.id],
                        d.status.value,
                        d.content_type,
                        d.sha256,
                        d.size,
                        d.quarantine_reason,
                    )
                    for d in session.scalars(select(Document))
                ),
                "resources": sorted(
                    (
                        rid[r.participant_id],
                        r.resource_type,
                        r.fhir_id,
                        r.dedup_key,
                        json.dumps(r.body, sort_keys=True),
                    )
                    for r in session.scalars(select(Resource))
                ),
                "lineage": sorted(
                    (resources[s.resource_id], docs[s.document_id], s.source_resource_id or "")
                    for s in session.scalars(select(ResourceSource))
                ),
                "provenance": sorted(
                    (
                        p.fhir_id,
                        docs[p.document_id],
                        tuple(sorted(t["reference"] for t in p.body.get("target", []))),
                    )
                    for p in session.scalars(select(Provenance))
                ),
                "quarantine": sorted(
                    (
                        rid[q.participant_id] if q.participant_id is not None else "",
                        q.organization_id or "",
                        q.kind,
                        q.reason,
                    )
                    for q in session.scalars(select(Quarantine))
                ),
                "final_outcomes": latest,
                "attempts": attempts,
            }
    finally:
        engine.dispose()


def open_work(db: Store) -> tuple[list[str], list[str]]:
    """Statuses of batches and runs still open."""
    sessions, engine = sessions_of(db)
    try:
        with sessions() as session:
            batches = [str(s) for s in session.scalars(select(Batch.status)) if s in OPEN]
            runs = [str(s) for s in session.scalars(select(Run.status)) if s in OPEN]
            return batches, runs
    finally:
        engine.dispose()


def status_json(db: Store, log: str, **settings: str) -> dict[str, Any]:
    result = subprocess.run(
        [*EHRFETCH, "status", "--json"],
        cwd=db.path.parent,
        env=db.env(**settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    (db.path.parent / f"{log}.log").write_bytes(result.stdout + result.stderr)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# --- the test -------------------------------------------------------------------------


def kill_mid_run(db: Store) -> list[tuple[str, int, int]]:
    """Start ``ehrfetch run``, SIGKILL it halfway through its second batch; the batches then."""
    process = db.start("run", log="killed-run")
    try:
        deadline = time.monotonic() + KILL_DEADLINE_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"the run ended ({process.returncode}) before it could be killed mid-run: "
                    f"{batch_progress(db)}\n{db.output()}"
                )
            if mid_run(batch_progress(db)):
                break
            time.sleep(POLL_S)
        else:
            pytest.fail(f"the run never got mid-way: {batch_progress(db)}\n{db.output()}")
    finally:
        stop(process)  # SIGKILL: no handler, no finally, no atexit runs in ehrfetch
    return batch_progress(db)


@pytest.mark.parametrize(
    "again",
    [
        pytest.param(("run",), id="then-run"),
        pytest.param(("rerun", "--failed"), id="then-rerun-failed"),
    ],
)
def test_a_killed_run_converges_on_the_uninterrupted_store(
    network: Network,
    reference: Reference,
    prefect_home: Path,
    tmp_path: Path,
    again: tuple[str, ...],
) -> None:
    db = new_store(network, tmp_path / "killed", prefect_home)

    after_kill = kill_mid_run(db)
    statuses = Counter(status for status, _, _ in after_kill)
    assert statuses["running"] == 1, after_kill  # the batch it died in stays running
    assert statuses["pending"] >= 1, after_kill  # and the batches after it never started

    # The dead batch looks alive for stale_after (15 minutes by default); with 0 it is
    # seen as stale at once, and so are the pending batches of its run (orphans).
    report = status_json(db, "status-killed", orchestration__stale_after_minutes="0")
    open_batches = report["open_batches"]
    assert [b["status"] for b in open_batches].count("running") == 1
    assert all(b["stale"] for b in open_batches), open_batches

    code = db.run(*again, log="again", orchestration__stale_after_minutes="0")
    assert code == 0, f"{' '.join(again)} after the kill: exit {code}\n{db.output()}"

    # Nothing is left open: no batch running for ever, no run that never ends.
    assert open_work(db) == ([], []), db.output()
    report = status_json(db, "status-after")
    assert report["open_batches"] == []
    assert "pending" not in report["participants"]
    assert "failed" not in report["participants"], report["participants"]

    expected = reference.snapshot()
    got = snapshot(db)
    # No duplicates: each row's natural key appears once.
    for key, natural_key in NATURAL_KEYS.items():
        keys = [natural_key(row) for row in got[key]]
        assert len(keys) == len(set(keys)), f"duplicate {key}"
    # Every participant the uninterrupted run attempted has exactly one final outcome
    # (that of their latest attempt), the same one, and nobody else was attempted.
    assert got["final_outcomes"] == expected["final_outcomes"]
    assert None not in got["final_outcomes"].values()
    assert AttemptOutcome.FAILED.value not in got["final_outcomes"].values()
    if again[0] == "rerun":
        # A re-run redoes the killed attempts themselves: still one per participant.
        assert set(got["attempts"].values()) == {1}
    for key in expected.keys() - {"attempts"}:
        assert got[key] == expected[key], f"{key} differ from the uninterrupted run's"


def test_batches_in_processes_report_to_the_runs_own_prefect_server(
    network: Network, reference: Reference, prefect_home: Path, tmp_path: Path
) -> None:
    # Batch worker processes spawned for a run on a temporary Prefect server used to
    # start one of their own each (task runs recorded where nobody looks, a few hundred
    # MB each): they report to the run's server, and the run ends as the threaded one.
    db = new_store(network, tmp_path / "processes", prefect_home)
    code = db.run(
        "run",
        log="processes",
        orchestration__task_runner="processes",
        orchestration__batch_concurrency="2",
    )
    output = (db.path.parent / "processes.log").read_text(errors="replace")
    assert code == 0, db.output()
    assert output.count("Starting temporary server") == 1, output[-3000:]
    assert open_work(db) == ([], []), db.output()
    assert snapshot(db)["final_outcomes"] == reference.snapshot()["final_outcomes"]


# --- stopped on a signal --------------------------------------------------------------

STOP_DEADLINE_S = 60  # in flight: a few participants of 20, each a second or two at most


def group_members(pgid: int) -> list[str]:
    """The live (not zombie) processes of the process group, as ``pid command``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):  # gone meanwhile
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(f"{stat.parent.name} {command[:120]}")
    return members


def batch_workers(pgid: int) -> list[int]:
    """The batch worker processes of the run (``task_runner = "processes"``)."""
    return [int(member.split()[0]) for member in group_members(pgid) if "spawn_main(" in member]


def wait_mid_run(db: Store, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + KILL_DEADLINE_S
    while not mid_run(batch_progress(db)):
        if process.poll() is not None:
            pytest.fail(f"the run ended ({process.returncode}) first\n{db.output()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the run never got mid-way: {batch_progress(db)}\n{db.output()}")
        time.sleep(POLL_S)


@pytest.mark.parametrize(
    ("signum", "target", "task_runner", "again"),
    [
        # systemd (KillMode=mixed), docker stop, kill: SIGTERM to ehrfetch only.
        pytest.param(signal.SIGTERM, "ehrfetch", "processes", ("rerun", "--failed"), id="sigterm"),
        # Ctrl-C at a terminal: SIGINT to every process of the foreground group, the
        # temporary Prefect server included.
        pytest.param(signal.SIGINT, "group", "threads", ("run",), id="ctrl-c"),
        # systemd's default KillMode=control-group: SIGTERM to ehrfetch and its batch
        # workers at once (and to the Prefect server, which a served deployment runs
        # apart: the temporary one of `ehrfetch run` is spared here).
        pytest.param(
            signal.SIGTERM, "workers too", "processes", ("run",), id="sigterm-workers-too"
        ),
        # `kill` naming one batch worker (the busiest process in top).
        pytest.param(
            signal.SIGTERM, "one worker", "processes", ("rerun", "--failed"), id="sigterm-a-worker"
        ),
    ],
)
def test_a_signal_stops_the_run_cleanly_and_the_rest_is_taken_up_at_once(
    network: Network,
    reference: Reference,
    prefect_home: Path,
    tmp_path: Path,
    signum: signal.Signals,
    target: str,
    task_runner: str,
    again: tuple[str, ...],
) -> None:
    # Before: SIGTERM waited for every queued batch (hours at 300,000) with Prefect's
    # traceback at the end; Ctrl-C stopped the temporary Prefect server first and the
    # run then hung on it for ever, batch workers and resource tracker included.
    db = new_store(network, tmp_path / signum.name, prefect_home)
    settings = {"orchestration__task_runner": task_runner}
    if task_runner == "processes":
        settings["orchestration__batch_concurrency"] = "2"
    process = db.start("run", log="stopped", **settings)
    try:
        wait_mid_run(db, process)
        workers = batch_workers(process.pid)
        if target == "group":
            os.killpg(process.pid, signum)
        if target in ("ehrfetch", "workers too"):
            process.send_signal(signum)
        if target in ("workers too", "one worker"):
            assert workers, f"no batch worker mid-run: {group_members(process.pid)}"
            for pid in workers if target == "workers too" else workers[:1]:
                os.kill(pid, signum)
        code = process.wait(timeout=STOP_DEADLINE_S)
        deadline = time.monotonic() + 10  # the server's own exit, after ehrfetch's
        while (left := group_members(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(process)
    output = (db.path.parent / "stopped.log").read_text(errors="replace")
    assert code == 128 + signum, output[-3000:]
    assert left == [], f"processes outlived the run: {left}"
    assert f"stopped by {signum.name}" in output
    assert "Traceback" not in output.split("Finished in state Failed")[-1], output[-3000:]

    # Nothing waits to go stale: the batches not done are closed, the run settled.
    assert open_work(db) == ([], []), db.output()
    report = status_json(db, "status-stopped")
    assert report["open_batches"] == []
    interrupted = report["participants"].get("failed", 0)
    assert interrupted > 0, report  # the run was stopped mid-way: some were not done

    # ... and taken up at once (the default stale_after is 15 minutes).
    code = db.run(*again, log="again")
    assert code == 0, f"{' '.join(again)} after the stop: exit {code}\n{db.output()}"
    assert open_work(db) == ([], []), db.output()
    expected, got = reference.snapshot(), snapshot(db)
    assert got["final_outcomes"] == expected["final_outcomes"]
    for key in expected.keys() - {"attempts", "final_outcomes"}:
        assert got[key] == expected[key], f"{key} differ from the uninterrupted run's"
