"""Runs as a whole: their status, the batches to run again, what they achieved.

The queries behind ``ehrfetch.runs`` (plan, re-run, summary) and ``ehrfetch status``.
A batch belongs to one run for good: re-running it changes the batch and its run's
status, it never moves it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.orm import Session

from ehrfetch.errors import StoreError
from ehrfetch.store.tables import (
    OPEN_BATCH_STATUSES,
    Attempt,
    Batch,
    BatchStatus,
    Document,
    Resource,
    ResourceSource,
    Run,
    RunStatus,
)

FINISHED_RUN_STATUSES = (RunStatus.SUCCEEDED, RunStatus.PARTIAL, RunStatus.FAILED)
RERUNNABLE = (BatchStatus.FAILED, BatchStatus.PARTIAL)


def get_run(session: Session, run_id: int) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise StoreError(f"run {run_id} does not exist")
    return run


def run_parameters_of_batch(session: Session, batch_id: int) -> dict[str, Any]:
    """The parameters of the run a batch belongs to (organizations, dry run, …)."""
    parameters = session.scalar(
        select(Run.parameters).join(Batch, Batch.run_id == Run.id).where(Batch.id == batch_id)
    )
    if parameters is None:
        raise StoreError(f"batch {batch_id} does not exist")
    return dict(parameters)


def batch_ids_of_run(session: Session, run_id: int) -> list[int]:
    return list(session.scalars(select(Batch.id).where(Batch.run_id == run_id).order_by(Batch.seq)))


def start_run(session: Session, run_id: int, now: datetime, flow_run_id: str | None) -> None:
    run = get_run(session, run_id)
    run.status = RunStatus.RUNNING
    run.started_at = run.started_at or now
    run.finished_at = None
    if flow_run_id is not None:
        run.flow_run_id = flow_run_id


def settle_run(session: Session, run_id: int, now: datetime) -> RunStatus:
    """Give the run the status its batches add up to.

    Any batch still open keeps the run running; otherwise all succeeded is succeeded,
    all failed is failed, anything else partial. A run without batches succeeded.
    """
    run = get_run(session, run_id)
    statuses = Counter(session.scalars(select(Batch.status).where(Batch.run_id == run_id)))
    total = sum(statuses.values())
    if any(statuses[s] for s in OPEN_BATCH_STATUSES):
        status = RunStatus.RUNNING
    elif statuses[BatchStatus.SUCCEEDED] == total:
        status = RunStatus.SUCCEEDED
    elif statuses[BatchStatus.FAILED] == total:
        status = RunStatus.FAILED
    else:
        status = RunStatus.PARTIAL
    run.status = status
    run.finished_at = None if status is RunStatus.RUNNING else now
    return status


def runs_of_batches(session: Session, batch_ids: Sequence[int]) -> list[int]:
    if not batch_ids:
        return []
    return list(
        session.scalars(
            select(Batch.run_id).where(Batch.id.in_(batch_ids)).distinct().order_by(Batch.run_id)
        )
    )


def _last_sign_of_life() -> ColumnElement[datetime | None]:
    return func.coalesce(Batch.heartbeat_at, Batch.started_at, Batch.created_at)


def stale_running_batches(session: Session, cutoff: datetime) -> list[int]:
    """Running batches that gave no sign of life since ``cutoff``: their process died."""
    return list(
        session.scalars(
            select(Batch.id)
            .where(Batch.status == BatchStatus.RUNNING, _last_sign_of_life() < cutoff)
            .order_by(Batch.id)
        )
    )


def orphaned_pending_batches(session: Session, cutoff: datetime) -> list[int]:
    """Pending batches of runs in which nothing has moved since ``cutoff``.

    A run killed mid-way leaves its later batches pending for ever, and pending batches
    keep their participants "in flight" (never selected again). A live run has a batch
    with a fresh heartbeat, so its waiting batches are left alone.
    """
    live = (
        select(Batch.run_id)
        .where(_last_sign_of_life() >= cutoff)
        .union(select(Run.id).where(Run.started_at >= cutoff))
    )
    return list(
        session.scalars(
            select(Batch.id)
            .where(Batch.status == BatchStatus.PENDING, Batch.run_id.not_in(live))
            .order_by(Batch.id)
        )
    )


def finished_batches(
    session: Session,
    *,
    run_id: int | None = None,
    batch_ids: Sequence[int] = (),
    since: datetime | None = None,
    statuses: Sequence[BatchStatus] = RERUNNABLE,
) -> list[int]:
    """Batches with one of ``statuses``, narrowed by run, by id and by finishing time."""
    conditions: list[ColumnElement[bool]] = [Batch.status.in_(statuses)]
    if run_id is not None:
        conditions.append(Batch.run_id == run_id)
    if batch_ids:
        conditions.append(Batch.id.in_(batch_ids))
    if since is not None:
        conditions.append(Batch.finished_at >= since)
    return list(session.scalars(select(Batch.id).where(*conditions).order_by(Batch.id)))


def missing_batches(session: Session, batch_ids: Sequence[int]) -> list[int]:
    known = set(session.scalars(select(Batch.id).where(Batch.id.in_(batch_ids))))
    return sorted(set(batch_ids) - known)


# --- summaries ------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """The batches a summary is about, and since when (documents fetched before are not)."""

    batch_ids: tuple[int, ...]
    since: datetime | None


def scope_of_run(session: Session, run_id: int) -> Scope:
    run = get_run(session, run_id)
    return Scope(tuple(batch_ids_of_run(session, run_id)), run.started_at)


def scope_of_batches(session: Session, batch_ids: Sequence[int]) -> Scope:
    since = session.scalar(select(func.min(Batch.created_at)).where(Batch.id.in_(batch_ids)))
    return Scope(tuple(batch_ids), since)


def _participants(scope: Scope) -> Any:
    return select(Attempt.participant_id).where(Attempt.batch_id.in_(scope.batch_ids))


def outcomes(session: Session, scope: Scope) -> Counter[str]:
    """Attempts by outcome; those without one yet count as ``pending``."""
    rows = session.execute(
        select(Attempt.outcome, func.count())
        .where(Attempt.batch_id.in_(scope.batch_ids))
        .group_by(Attempt.outcome)
    )
    return Counter({(o.value if o is not None else "pending"): int(n) for o, n in rows})


def failures(session: Session, scope: Scope) -> Counter[str]:
    """Attempts by error code (a participant found elsewhere can still name an error)."""
    rows = session.execute(
        select(Attempt.error_code, func.count())
        .where(Attempt.batch_id.in_(scope.batch_ids), Attempt.error_code.is_not(None))
        .group_by(Attempt.error_code)
    )
    return Counter({str(code): int(n) for code, n in rows})


def batch_statuses(session: Session, scope: Scope) -> Counter[str]:
    rows = session.execute(
        select(Batch.status, func.count())
        .where(Batch.id.in_(scope.batch_ids))
        .group_by(Batch.status)
    )
    return Counter({s.value: int(n) for s, n in rows})


def _fetched_in(scope: Scope) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = Document.participant_id.in_(_participants(scope))
    if scope.since is not None:
        condition = and_(condition, Document.fetched_at >= scope.since)
    return condition


def documents_by_type_and_org(session: Session, scope: Scope) -> list[tuple[str, str, str, int]]:
    """(content type, organization, stored|quarantined, count) of documents fetched."""
    rows = session.execute(
        select(Document.content_type, Document.organization_id, Document.status, func.count())
        .where(_fetched_in(scope))
        .group_by(Document.content_type, Document.organization_id, Document.status)
        .order_by(Document.organization_id, Document.content_type, Document.status)
    )
    return [(t, o, s.value, int(n)) for t, o, s, n in rows]


def resources_by_type_and_org(session: Session, scope: Scope) -> list[tuple[str, str, int]]:
    """(resource type, organization, count): a fact sent by two sites counts at both."""
    rows = session.execute(
        select(
            Resource.resource_type,
            Document.organization_id,
            func.count(func.distinct(Resource.id)),
        )
        .join(ResourceSource, ResourceSource.resource_id == Resource.id)
        .join(Document, Document.id == ResourceSource.document_id)
        .where(_fetched_in(scope))
        .group_by(Resource.resource_type, Document.organization_id)
        .order_by(Document.organization_id, Resource.resource_type)
    )
    return [(t, o, int(n)) for t, o, n in rows]


def resources_by_type(session: Session, scope: Scope) -> Counter[str]:
    """Distinct resources by type, however many sites sent each."""
    rows = session.execute(
        select(Resource.resource_type, func.count(func.distinct(Resource.id)))
        .join(ResourceSource, ResourceSource.resource_id == Resource.id)
        .join(Document, Document.id == ResourceSource.document_id)
        .where(_fetched_in(scope))
        .group_by(Resource.resource_type)
    )
    return Counter({t: int(n) for t, n in rows})


def time_span(session: Session, scope: Scope) -> tuple[datetime | None, datetime | None, bool]:
    """First start and last finish of the scope's batches, and whether any is still open."""
    first, last, still_open = session.execute(
        select(
            func.min(func.coalesce(Batch.started_at, Batch.created_at)),
            func.max(Batch.finished_at),
            func.count().filter(Batch.status.in_(OPEN_BATCH_STATUSES)),
        ).where(Batch.id.in_(scope.batch_ids))
    ).one()
    return first, last, bool(still_open)


# --- status ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRow:
    id: int
    kind: str
    status: str
    started_at: datetime
    finished_at: datetime | None
    batches: int
    participants: int
    parameters: dict[str, Any]


def last_runs(session: Session, limit: int, run_id: int | None = None) -> list[RunRow]:
    counts = (
        select(
            Batch.run_id.label("run_id"),
            func.count(func.distinct(Batch.id)).label("batches"),
            func.coalesce(func.sum(Batch.size), 0).label("participants"),
        )
        .group_by(Batch.run_id)
        .subquery()
    )
    query = (
        select(Run, counts.c.batches, counts.c.participants)
        .outerjoin(counts, counts.c.run_id == Run.id)
        .order_by(Run.id.desc())
        .limit(limit)
    )
    if run_id is not None:
        query = query.where(Run.id == run_id)
    return [
        RunRow(
            id=run.id,
            kind=run.kind,
            status=run.status.value,
            started_at=run.started_at,
            finished_at=run.finished_at,
            batches=int(batches or 0),
            participants=int(participants or 0),
            parameters=dict(run.parameters or {}),
        )
        for run, batches, participants in session.execute(query)
    ]


@dataclass(frozen=True)
class OpenBatch:
    id: int
    run_id: int
    status: str
    size: int
    done: int
    tries: int
    heartbeat_at: datetime | None


def open_batches(session: Session, run_id: int | None = None) -> list[OpenBatch]:
    done = (
        select(Attempt.batch_id, func.count().label("done"))
        .where(Attempt.outcome.is_not(None))
        .group_by(Attempt.batch_id)
        .subquery()
    )
    query = (
        select(Batch, func.coalesce(done.c.done, 0))
        .outerjoin(done, done.c.batch_id == Batch.id)
        .where(Batch.status.in_(OPEN_BATCH_STATUSES))
        .order_by(Batch.id)
    )
    if run_id is not None:
        query = query.where(Batch.run_id == run_id)
    return [
        OpenBatch(b.id, b.run_id, b.status.value, b.size, int(n), b.tries, b.heartbeat_at)
        for b, n in session.execute(query)
    ]


def latest_outcomes(session: Session) -> tuple[Counter[str], Counter[str]]:
    """Participants by the outcome of their latest attempt, and failures by error code."""
    latest = select(func.max(Attempt.id)).group_by(Attempt.participant_id)
    rows = session.execute(
        select(Attempt.outcome, Attempt.error_code, func.count())
        .where(Attempt.id.in_(latest))
        .group_by(Attempt.outcome, Attempt.error_code)
    )
    by_outcome: Counter[str] = Counter()
    failed_by_code: Counter[str] = Counter()
    for outcome, code, n in rows:
        name = outcome.value if outcome is not None else "pending"
        by_outcome[name] += int(n)
        if name == "failed":
            failed_by_code[code or "unknown"] += int(n)
    return by_outcome, failed_by_code


def is_open(session: Session, batch_id: int) -> bool:
    status = session.scalar(select(Batch.status).where(Batch.id == batch_id))
    return status in OPEN_BATCH_STATUSES


def sizes_of(session: Session, batch_ids: Sequence[int]) -> dict[int, int]:
    rows = session.execute(select(Batch.id, Batch.size).where(Batch.id.in_(batch_ids)))
    return {batch_id: int(size) for batch_id, size in rows}
