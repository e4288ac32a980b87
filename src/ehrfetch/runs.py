"""Runs: plan one, run its batches, re-run what failed, sum up what happened.

Plain Python, no orchestrator: ``flows/`` calls these functions (one Prefect task per
batch) and so does ``ehrfetch status``. Everything a run decides is in the store, so
a run killed at any point is picked up again from there:

- a batch is claimed (``running``) and refreshes its heartbeat as participants finish;
- a running batch silent for ``stale_after`` is taken for dead: it is closed as failed
  (its unfinished attempts fail) and becomes re-runnable;
- pending batches of a run in which nothing moved for ``stale_after`` are orphans of a
  killed run and are re-run as well.

The run's parameters (organizations, dry run) are stored with it, so a re-run of one
of its batches does what the run did.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import store
from ehrfetch.batch import BatchResult, run_batch
from ehrfetch.cohort.selection import rules_from
from ehrfetch.errors import ConfigError, StoreError
from ehrfetch.heap import settle_heap
from ehrfetch.settings import Settings
from ehrfetch.store import runs as q
from ehrfetch.store.batches import finish_batch, reopen_batch
from ehrfetch.store.cohort import create_run, eligible_ids
from ehrfetch.store.tables import RunStatus

log = logging.getLogger(__name__)

ACQUIRE = "acquire"

TransportFactory = Callable[[], httpx.AsyncBaseTransport | None]


def network_transport() -> httpx.AsyncBaseTransport | None:
    """None: the network client builds the transport the settings name."""
    return None


transport_factory: TransportFactory = network_transport
"""Where each batch gets its HTTP transport. Tests replace it with an in-process ASGI
transport to the mock network; it is called once per batch, inside the batch's own
event loop, because a transport (like a client) must not outlive its loop."""


def utcnow() -> datetime:
    return datetime.now(UTC)


@contextmanager
def open_store(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions on the configured store (schema checked), disposed of at the end."""
    engine = store.create_store_engine(settings.store)
    try:
        store.ensure_schema(engine)
        yield store.session_factory(engine)
    finally:
        engine.dispose()


# --- planning -------------------------------------------------------------------------


@dataclass(frozen=True)
class RunPlan:
    run_id: int | None
    """None: nobody is eligible now, no run was recorded."""
    batch_ids: tuple[int, ...]
    participants: int = 0


def plan_run(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    limit: int | None = None,
    batch_size: int | None = None,
    organizations: Sequence[str] | None = None,
    dry_run: bool = False,
    now: datetime,
) -> RunPlan:
    """Select the eligible cohort into a new pending ``acquire`` run of persisted batches.

    The run and its parameters are one transaction with the selection, so a batch
    re-run later reads the organizations and the dry-run flag it was planned with.
    """
    size = batch_size or settings.cohort.batch_size
    parameters: dict[str, object] = {
        "limit": limit,
        "batch_size": size,
        "organizations": sorted(set(organizations)) if organizations else None,
        "dry_run": dry_run,
    }
    try:
        with sessions.begin() as session:
            ids = eligible_ids(session, rules_from(settings.cohort, now), limit)
            if not ids:
                return RunPlan(None, ())
            run = create_run(
                session, ids, batch_size=size, kind=ACQUIRE, parameters=parameters, now=now
            )
            run_id = run.id
    except IntegrityError:
        raise StoreError(
            "another run selected some of the same participants at the same time; run again"
        ) from None
    with sessions() as session:
        return RunPlan(run_id, tuple(q.batch_ids_of_run(session, run_id)), len(ids))


def start_run(
    sessions: sessionmaker[Session], run_id: int, now: datetime, flow_run_id: str | None = None
) -> None:
    """pending → running, with the orchestrator's id for the run when there is one."""
    with sessions.begin() as session:
        q.start_run(session, run_id, now, flow_run_id)


def finish_run(sessions: sessionmaker[Session], run_id: int, now: datetime) -> RunStatus:
    """running → succeeded, partial or failed, from its batches (running while one is open)."""
    with sessions.begin() as session:
        return q.settle_run(session, run_id, now)


# --- batches --------------------------------------------------------------------------


def batch_settings(
    settings: Settings, parameters: dict[str, Any], *, shared_pacing: bool = False
) -> Settings:
    """``settings`` as the run's parameters want them: a dry run retrieves nothing, and a
    batch in a process of its own paces at its share of the network's rates, unless it
    shares the pacing itself with the run's other processes (``shared_pacing``)."""
    if not shared_pacing:
        settings = process_share(settings)
    if not parameters.get("dry_run"):
        return settings
    acquire = settings.acquire.model_copy(update={"retrieve_documents": False})
    return settings.model_copy(update={"acquire": acquire})


def process_share(settings: Settings) -> Settings:
    """With batches in processes of their own, each process's share of the rates.

    Batches in threads share one set of buckets (``network.ratelimit``). Processes share
    them through a pacing directory when the flow gives them one; without it (a batch
    run in a process by other means), each paces at 1/n, as the network limits the
    client as a whole.
    """
    n = settings.orchestration.batch_concurrency
    if settings.orchestration.task_runner != "processes" or n == 1:
        return settings
    network = settings.network
    shared = network.model_copy(
        update={
            "requests_per_second": network.requests_per_second / n,
            "burst": max(1, network.burst // n),
            "org_requests_per_second": {
                org: rate / n for org, rate in network.org_requests_per_second.items()
            },
        }
    )
    return settings.model_copy(update={"network": shared})


async def acquire_batch(
    batch_id: int,
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    again: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    pacing_dir: Path | None = None,
    stop_file: Path | None = None,
) -> BatchResult:
    """Run one batch of a run as that run was planned (organizations, dry run).

    ``again``: this is a retry after an unexpected failure; the failed attempts are
    reopened first so the batch converges instead of keeping their failure.
    ``pacing_dir``: where the run's processes share their pacing (``network.ratelimit``).
    ``stop_file``: once it exists the run is stopping (``batch.run_batch``'s
    ``stopping``). A file, so batches in threads and in worker processes see it alike,
    for the price of one ``stat`` per participant.
    """
    with sessions.begin() as session:
        parameters = q.run_parameters_of_batch(session, batch_id)
        if again:
            reopen_batch(session, batch_id)
    organizations = parameters.get("organizations")
    settle_heap()
    return await run_batch(
        batch_id,
        batch_settings(settings, parameters, shared_pacing=pacing_dir is not None),
        sessions,
        transport=transport if transport is not None else transport_factory(),
        organizations=tuple(organizations) if organizations else None,
        pacing_dir=pacing_dir,
        stopping=stop_file.exists if stop_file is not None else lambda: False,
    )


def abandon_batch(
    sessions: sessionmaker[Session], batch_id: int, reason: str, now: datetime
) -> None:
    """Close a batch its task gave up on (retries spent): its open attempts fail.

    Without this the batch would stay ``running`` until it went stale.
    """
    with sessions.begin() as session:
        if q.is_open(session, batch_id):
            finish_batch(session, batch_id, now, reason)


def close_unfinished(
    sessions: sessionmaker[Session], batch_ids: Sequence[int], reason: str, now: datetime
) -> list[int]:
    """Close the batches still open once none of them runs any more; returns their ids.

    For a run that stopped on a signal: batches it never began (and any a worker left
    open) fail now with the reason, instead of waiting ``stale_after`` to be taken for
    dead, so ``rerun --failed`` and the next selection take their participants at once.
    """
    closed = []
    with sessions.begin() as session:
        for batch_id in batch_ids:
            if q.is_open(session, batch_id):
                finish_batch(session, batch_id, now, reason)
                closed.append(batch_id)
        for run_id in q.runs_of_batches(session, closed):
            q.settle_run(session, run_id, now)
    return closed


# --- re-running -----------------------------------------------------------------------


def release_stale(
    sessions: sessionmaker[Session], *, stale_after: timedelta, now: datetime
) -> list[int]:
    """Close as failed every batch a dead process left open; returns their ids.

    Their unfinished attempts fail with the reason, so their participants are no longer
    "in flight": the next selection takes them again, or a re-run does them.
    """
    cutoff = now - stale_after
    with sessions.begin() as session:
        stale = q.stale_running_batches(session, cutoff)
        orphans = q.orphaned_pending_batches(session, cutoff)
        for batch_id in stale:
            log.warning("batch %d: no heartbeat since %s: taken for dead", batch_id, cutoff)
            finish_batch(session, batch_id, now, f"stale: no heartbeat for {stale_after}")
        for batch_id in orphans:
            finish_batch(session, batch_id, now, "orphaned: its run stopped before it started")
        released = sorted([*stale, *orphans])
        for run_id in q.runs_of_batches(session, released):
            q.settle_run(session, run_id, now)
    return released


def batches_to_rerun(
    sessions: sessionmaker[Session],
    *,
    run_id: int | None = None,
    batch_ids: Sequence[int] = (),
    since: datetime | None = None,
    stale_after: timedelta,
    now: datetime,
) -> list[int]:
    """Failed or partial batches (narrowed by run, ids and finishing time), stale ones too.

    Stale batches are closed as failed first (see :func:`release_stale`), so they are
    counted like any failed batch and their unfinished attempts are re-run.
    """
    if batch_ids:
        with sessions() as session:
            missing = q.missing_batches(session, batch_ids)
        if missing:
            raise StoreError(f"no such batch: {', '.join(map(str, missing))}")
    if run_id is not None:
        with sessions() as session:
            q.get_run(session, run_id)
    release_stale(sessions, stale_after=stale_after, now=now)
    with sessions() as session:
        return q.finished_batches(session, run_id=run_id, batch_ids=batch_ids, since=since)


def prepare_rerun(sessions: sessionmaker[Session], batch_ids: Sequence[int], now: datetime) -> int:
    """Reopen the batches' failed attempts; returns how many participants will be redone.

    Their runs are running again until the batches finish.
    """
    reopened = 0
    with sessions.begin() as session:
        for batch_id in batch_ids:
            reopened += reopen_batch(session, batch_id)
        for run_id in q.runs_of_batches(session, batch_ids):
            q.start_run(session, run_id, now, None)
    return reopened


def settle_runs_of(
    sessions: sessionmaker[Session], batch_ids: Sequence[int], now: datetime
) -> None:
    """Recompute the status of every run the batches belong to."""
    with sessions.begin() as session:
        for run_id in q.runs_of_batches(session, batch_ids):
            q.settle_run(session, run_id, now)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str, now: datetime) -> datetime:
    """``2d``, ``12h``, ``30m`` (that long ago) or an ISO 8601 date or time (UTC if naive)."""
    match = _DURATION.match(text)
    if match:
        amount, unit = match.groups()
        return now - timedelta(**{_UNITS[unit]: float(amount)})
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(
            f"--since {text!r}: not a duration (2d, 12h, 30m) nor an ISO 8601 date or time"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- progress -------------------------------------------------------------------------


@dataclass(frozen=True)
class Progress:
    """Batches and participants done out of those a run (or a re-run) is doing."""

    batches: int
    batches_done: int
    participants: int
    participants_done: int

    @property
    def fraction(self) -> float:
        return self.batches_done / self.batches if self.batches else 1.0


ProgressHook = Callable[[Progress], None]
progress_hooks: list[ProgressHook] = []
"""Called in the process that runs the flow as batches finish (the CLI's progress bar)."""


@dataclass
class ProgressTracker:
    """Counts finished batches and tells every progress hook."""

    sizes: dict[int, int]
    done: set[int] = field(default_factory=set)

    def current(self) -> Progress:
        return Progress(
            batches=len(self.sizes),
            batches_done=len(self.done),
            participants=sum(self.sizes.values()),
            participants_done=sum(self.sizes[b] for b in self.done),
        )

    def finished(self, batch_id: int) -> Progress:
        self.done.add(batch_id)
        return self.publish()

    def publish(self) -> Progress:
        progress = self.current()
        for hook in tuple(progress_hooks):  # a hook may unregister itself
            try:
                hook(progress)
            except Exception:  # a display must never stop a run
                log.exception("progress hook failed")
        return progress


def track(sessions: sessionmaker[Session], batch_ids: Sequence[int]) -> ProgressTracker:
    with sessions() as session:
        sizes = q.sizes_of(session, batch_ids)
    return ProgressTracker(sizes)


# --- summary --------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """What a run (or a re-run of some batches) achieved; counts and codes only, no PHI."""

    title: str
    run_id: int | None
    status: str | None
    batch_ids: tuple[int, ...]
    participants: dict[str, int]
    """Participants by outcome (``pending``: not done yet)."""
    batches: dict[str, int]
    """Batches by status."""
    failures: dict[str, int]
    """Attempts naming an error, by error code."""
    documents: list[dict[str, Any]]
    """Documents fetched: content type, organization, status, count."""
    resources: list[dict[str, Any]]
    """Resources by type and organization (a fact two sites sent counts at both)."""
    resources_by_type: dict[str, int]
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def total_participants(self) -> int:
        return sum(self.participants.values())

    @property
    def has_failures(self) -> bool:
        return bool(self.participants.get("failed")) or bool(
            self.batches.get("failed") or self.batches.get("partial")
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "run_id": self.run_id,
            "status": self.status,
            "batch_ids": list(self.batch_ids),
            "parameters": self.parameters,
            "participants": self.participants,
            "batches": self.batches,
            "failures": self.failures,
            "documents": self.documents,
            "resources": self.resources,
            "resources_by_type": self.resources_by_type,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_s": self.duration_s,
        }

    def table_rows(self) -> list[dict[str, Any]]:
        """One flat table (section, item, count): the Prefect table artifact."""
        rows: list[dict[str, Any]] = []
        rows += [_row("participants", k, v) for k, v in sorted(self.participants.items())]
        rows += [_row("batches", k, v) for k, v in sorted(self.batches.items())]
        rows += [_row("failures", k, v) for k, v in sorted(self.failures.items())]
        for d in self.documents:
            item = f"{d['content_type']} @ {d['organization']} ({d['status']})"
            rows.append(_row("documents", item, d["count"]))
        for r in self.resources:
            rows.append(_row("resources", f"{r['type']} @ {r['organization']}", r["count"]))
        if self.duration_s is not None:
            rows.append(_row("duration", "seconds", round(self.duration_s, 1)))
        return rows

    def to_markdown(self) -> str:
        lines = [f"# {self.title}", ""]
        if self.status is not None:
            lines.append(f"Status: **{self.status}**")
        if self.duration_s is not None:
            lines.append(f"Duration: {self.duration_s:.1f} s")
        if self.parameters:
            shown = ", ".join(f"{k}={v}" for k, v in self.parameters.items() if v is not None)
            lines.append(f"Parameters: {shown}")
        lines.append("")
        lines += _md_table(
            "Participants by outcome", ("outcome", "participants"), self.participants.items()
        )
        lines += _md_table("Batches by status", ("status", "batches"), self.batches.items())
        lines += _md_table(
            "Failures by error code", ("error code", "attempts"), self.failures.items()
        )
        lines += _md_table(
            "Documents by content type and organization",
            ("content type", "organization", "status", "documents"),
            [
                (d["content_type"], d["organization"], d["status"], d["count"])
                for d in self.documents
            ],
        )
        lines += _md_table(
            "Resources by type and organization",
            ("type", "organization", "resources"),
            [(r["type"], r["organization"], r["count"]) for r in self.resources],
        )
        return "\n".join(lines).rstrip() + "\n"


def _row(section: str, item: str, count: int | float) -> dict[str, Any]:
    return {"section": section, "item": item, "count": count}


def _md_table(title: str, header: Sequence[str], rows: Any) -> list[str]:
    materialized = [tuple(map(str, r)) for r in rows]
    lines = [f"## {title}", ""]
    if not materialized:
        return [*lines, "none", ""]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in materialized]
    return [*lines, ""]


def run_summary(sessions: sessionmaker[Session], run_id: int) -> RunSummary:
    with sessions() as session:
        run = q.get_run(session, run_id)
        scope = q.scope_of_run(session, run_id)
        return _summarize(
            session,
            scope,
            title=f"Run {run_id} ({run.kind})",
            run_id=run_id,
            status=run.status.value,
            parameters=dict(run.parameters or {}),
            started=run.started_at,
            finished=run.finished_at,
        )


def batches_summary(
    sessions: sessionmaker[Session], batch_ids: Sequence[int], *, title: str
) -> RunSummary:
    with sessions() as session:
        scope = q.scope_of_batches(session, batch_ids)
        first, last, still_open = q.time_span(session, scope)
        return _summarize(
            session,
            scope,
            title=title,
            run_id=None,
            status=None,
            parameters={},
            started=first,
            finished=None if still_open else last,
        )


def _summarize(
    session: Session,
    scope: q.Scope,
    *,
    title: str,
    run_id: int | None,
    status: str | None,
    parameters: dict[str, Any],
    started: datetime | None,
    finished: datetime | None,
) -> RunSummary:
    duration = (finished - started).total_seconds() if started and finished else None
    return RunSummary(
        title=title,
        run_id=run_id,
        status=status,
        batch_ids=scope.batch_ids,
        participants=_sorted(q.outcomes(session, scope)),
        batches=_sorted(q.batch_statuses(session, scope)),
        failures=_sorted(q.failures(session, scope)),
        documents=[
            {"content_type": t, "organization": o, "status": s, "count": n}
            for t, o, s, n in q.documents_by_type_and_org(session, scope)
        ],
        resources=[
            {"type": t, "organization": o, "count": n}
            for t, o, n in q.resources_by_type_and_org(session, scope)
        ],
        resources_by_type=_sorted(q.resources_by_type(session, scope)),
        started_at=started,
        finished_at=finished,
        duration_s=duration,
        parameters=parameters,
    )


def _sorted(counts: Counter[str]) -> dict[str, int]:
    return dict(counts.most_common())


# --- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport:
    """``ehrfetch status``: where every participant stands and what is still open."""

    participants: dict[str, int]
    """Participants by the outcome of their latest attempt."""
    failures: dict[str, int]
    """Participants whose latest attempt failed, by error code."""
    runs: list[q.RunRow]
    open_batches: list[q.OpenBatch]
    stale_batches: list[int]
    run: RunSummary | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "participants": self.participants,
            "failures": self.failures,
            "runs": [
                {
                    "id": r.id,
                    "kind": r.kind,
                    "status": r.status,
                    "started_at": r.started_at.isoformat(),
                    "finished_at": r.finished_at.isoformat() if r.finished_at else None,
                    "batches": r.batches,
                    "participants": r.participants,
                    "parameters": r.parameters,
                }
                for r in self.runs
            ],
            "open_batches": [
                {
                    "id": b.id,
                    "run_id": b.run_id,
                    "status": b.status,
                    "size": b.size,
                    "done": b.done,
                    "tries": b.tries,
                    "heartbeat_at": b.heartbeat_at.isoformat() if b.heartbeat_at else None,
                    "stale": b.id in self.stale_batches,
                }
                for b in self.open_batches
            ],
            "run": self.run.as_dict() if self.run else None,
        }


def status_report(
    sessions: sessionmaker[Session],
    *,
    run_id: int | None = None,
    last: int = 5,
    stale_after: timedelta,
    now: datetime,
) -> StatusReport:
    """Read-only: stale batches are pointed out here, released by a run or a re-run."""
    cutoff = now - stale_after
    with sessions() as session:
        if run_id is not None:
            q.get_run(session, run_id)
        by_outcome, failed = q.latest_outcomes(session)
        runs = q.last_runs(session, last, run_id)
        still_open = q.open_batches(session, run_id)
        stale = set(q.stale_running_batches(session, cutoff)) | set(
            q.orphaned_pending_batches(session, cutoff)
        )
    return StatusReport(
        participants=_sorted(by_outcome),
        failures=_sorted(failed),
        runs=runs,
        open_batches=still_open,
        stale_batches=sorted(b.id for b in still_open if b.id in stale),
        run=run_summary(sessions, run_id) if run_id is not None else None,
    )


def stale_after(settings: Settings) -> timedelta:
    return timedelta(minutes=settings.orchestration.stale_after_minutes)
