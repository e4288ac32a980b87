"""One batch: its participants with bounded concurrency, one outcome each, a status.

``run_batch`` is what a Prefect task calls (one task per batch, never per
participant). It creates its own network client — one connection pool, one token, one
directory per batch — so batches running in parallel share no event-loop state.

Running a batch again converges: participants with an outcome are not redone, links
and documents are upserts, documents already fetched are not fetched again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.acquire import AcquireContext, ConsentWatch, acquire_participant, in_store
from ehrfetch.cohort.records import ParticipantRecord
from ehrfetch.cohort.selection import rules_from
from ehrfetch.errors import EhrfetchError, NetworkError
from ehrfetch.matching.policy import MatchPolicy
from ehrfetch.network import CallRecord, NetworkClient, Organization, TokenSource
from ehrfetch.settings import Settings
from ehrfetch.store.audit import AuditRow, record_audit
from ehrfetch.store.batches import (
    AttemptResult,
    Member,
    claim_batch,
    finish_attempts,
    finish_batch,
    heartbeat,
)
from ehrfetch.store.links import OrganizationRow, linked_participants, upsert_organizations
from ehrfetch.store.participants import housemates, load_records
from ehrfetch.store.tables import AttemptOutcome, Batch, BatchStatus

log = logging.getLogger(__name__)
OUTCOMES_EVERY_S = 1.0
OUTCOMES_AT_MOST = 200
"""Outcomes and audit rows are written together once a second (or past this many)."""


@dataclass
class BatchResult:
    batch_id: int
    status: BatchStatus
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    documents: int = 0
    resources: int = 0


@dataclass
class _Due:
    attempts: list[tuple[int, AttemptResult, datetime, datetime]]
    calls: list[CallRecord]
    at: datetime


class _Outcomes:
    """Finished attempts and their calls, written in one transaction a second.

    A transaction per participant was a sixth of the store's work. Waiting costs
    nothing on a crash that matters: an attempt without its outcome is redone by the
    next run, which finds its links and documents stored and fetches nothing twice.
    The audit rows go with the outcomes, so the batch's heartbeat does too.
    """

    def __init__(self, now: datetime) -> None:
        self.attempts: list[tuple[int, AttemptResult, datetime, datetime]] = []
        self.calls: list[CallRecord] = []
        self.last = now

    def add(
        self,
        attempt_id: int,
        result: AttemptResult,
        started: datetime,
        now: datetime,
        calls: list[CallRecord],
    ) -> None:
        self.attempts.append((attempt_id, result, started, now))
        # The batch's calls so far (this participant's and others' still running).
        self.calls.extend(calls)
        calls.clear()

    def due(self, now: datetime) -> _Due | None:
        elapsed = (now - self.last).total_seconds()
        if elapsed >= OUTCOMES_EVERY_S or len(self.attempts) >= OUTCOMES_AT_MOST:
            return self.take(now)
        return None

    def take(self, now: datetime) -> _Due | None:
        if not self.attempts and not self.calls:
            return None
        due = _Due(self.attempts, self.calls, now)
        self.attempts, self.calls, self.last = [], [], now
        return due


def _outcomes_writer(due: _Due, run_id: int | None, batch_id: int) -> Callable[[Session], None]:
    audit = [_audit_row(c, run_id, batch_id) for c in due.calls]

    def write(session: Session) -> None:
        finish_attempts(session, due.attempts)
        record_audit(session, audit)
        heartbeat(session, batch_id, due.at)

    return write


def _utcnow() -> datetime:
    return datetime.now(UTC)


async def run_batch(
    batch_id: int,
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    tokens: TokenSource | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    clock: Callable[[], datetime] = _utcnow,
    policy: MatchPolicy | None = None,
    organizations: Collection[str] | None = None,
    pacing_dir: Path | None = None,
    stopping: Callable[[], bool] = lambda: False,
) -> BatchResult:
    """Acquire every participant of the batch still without an outcome.

    ``organizations``: query only these organization ids of the directory (None: all).
    ``pacing_dir``: pace with the other processes of the run that pace there.
    ``stopping``: true once the run is asked to stop. A batch not begun then is left
    untouched (the run closes it); a running one finishes the participants in flight,
    starts no other, and closes with the rest failed as interrupted.
    """
    if stopping():
        return BatchResult(batch_id, BatchStatus.PENDING)
    with sessions.begin() as session:
        members = claim_batch(session, batch_id, clock())
        pids = [m.participant_id for m in members]
        records = load_records(session, pids)
        household = housemates(session, records)
        linked = linked_participants(session, pids)
    result = BatchResult(batch_id, BatchStatus.RUNNING)
    calls: list[CallRecord] = []
    run_id = _run_of(sessions, batch_id)

    outcomes = _Outcomes(clock())
    skipped: list[int] = []  # attempts not begun because the run is stopping

    def write_outcomes() -> None:
        # Those not written yet, before the batch is closed (which fails any attempt
        # still without an outcome).
        if (due := outcomes.take(clock())) is not None:
            with sessions.begin() as session:
                _outcomes_writer(due, run_id, batch_id)(session)

    def flush_audit() -> None:
        pending, calls[:] = calls[:], []
        rows = [_audit_row(c, run_id, batch_id) for c in pending]
        with sessions.begin() as session:
            record_audit(session, rows)

    try:
        async with NetworkClient(
            settings.network,
            tokens or TokenSource(settings.network),
            transport=transport,
            on_call=calls.append,
            sleep=sleep,
            pacing_dir=pacing_dir,
        ) as network:
            directory = tuple(await network.directory())
            with sessions.begin() as session:
                upsert_organizations(
                    session,
                    [OrganizationRow(o.id, o.name, o.base_url, o.host) for o in directory],
                    clock(),
                )
            chosen = _chosen(directory, organizations)
            if not chosen:
                # Asking nobody would record "no match" for everyone and make them wait.
                flush_audit()
                error = "unknown_organizations: none of the requested organizations is listed"
                with sessions.begin() as session:
                    result.status = finish_batch(session, batch_id, clock(), error)
                result.errors["unknown_organizations"] += len(members)
                return result
            # The batch's own threads for its store work (the store's pool is sized to
            # match), gone when its participants are done.
            with ThreadPoolExecutor(
                settings.store.threads, thread_name_prefix="ehrfetch-store"
            ) as store_threads:
                ctx = AcquireContext(
                    sessions=sessions,
                    network=network,
                    organizations=chosen,
                    rules=rules_from(settings.cohort, clock()),
                    policy=policy or MatchPolicy(),
                    purpose_of_use=settings.network.purpose_of_use,
                    match_count=settings.acquire.match_count,
                    clock=clock,
                    region=settings.roster.default_region,
                    retrieve=settings.acquire.retrieve_documents,
                    store_threads=store_threads,
                    linked=linked,
                    consent=ConsentWatch(pids, settings.acquire.consent_max_age_s),
                )
                gate = asyncio.Semaphore(settings.acquire.participant_concurrency)

                async def one(member: Member) -> None:
                    async with gate:
                        if stopping():
                            skipped.append(member.attempt_id)  # closing the batch fails it
                            return
                        started = clock()
                        attempt = await _attempt(ctx, member, records, household)
                        outcomes.add(member.attempt_id, attempt, started, clock(), calls)
                        _count(result, attempt)
                        if (due := outcomes.due(clock())) is not None:
                            await in_store(ctx, _outcomes_writer(due, run_id, batch_id))

                async with asyncio.TaskGroup() as group:
                    for member in members:
                        group.create_task(one(member))
    except NetworkError as error:
        # The directory or the token endpoint is down: nobody can be looked up.
        log.error("batch %d: the network is unavailable: %s", batch_id, error.code)
        write_outcomes()
        flush_audit()
        with sessions.begin() as session:
            result.status = finish_batch(session, batch_id, clock(), f"{error.code}: {error}")
        result.errors[error.code] += len(members)
        return result
    write_outcomes()
    flush_audit()
    with sessions.begin() as session:
        result.status = finish_batch(session, batch_id, clock(), INTERRUPTED if skipped else None)
    log.info("batch %d: %s %s", batch_id, result.status.value, dict(result.outcomes))
    return result


INTERRUPTED = "interrupted: the run was asked to stop before this participant"


def _chosen(
    directory: tuple[Organization, ...], wanted: Collection[str] | None
) -> tuple[Organization, ...]:
    if wanted is None:
        return directory
    listed = {o.id for o in directory}
    for unknown in sorted(set(wanted) - listed):
        log.warning("organization %s is not in the network directory: skipped", unknown)
    return tuple(o for o in directory if o.id in wanted)


async def _attempt(
    ctx: AcquireContext,
    member: Member,
    records: dict[int, ParticipantRecord],
    household: dict[int, tuple[str, ...]],
) -> AttemptResult:
    record = records.get(member.participant_id)
    if record is None:
        return AttemptResult(AttemptOutcome.FAILED, "participant_missing", "no demographics")
    try:
        return await acquire_participant(
            ctx, member, record, housemates=household.get(member.participant_id, ())
        )
    except EhrfetchError as error:
        code = str(getattr(error, "code", type(error).__name__))
        log.warning("%s: failed: %s", member.research_id, code)
        return AttemptResult(AttemptOutcome.FAILED, code, str(error))
    except Exception as error:  # one participant's bug must not end the batch
        # The type only: an unexpected message may quote data.
        log.exception("%s: unexpected %s", member.research_id, type(error).__name__)
        return AttemptResult(AttemptOutcome.FAILED, "internal_error", type(error).__name__)


def _count(result: BatchResult, attempt: AttemptResult) -> None:
    result.outcomes[attempt.outcome.value] += 1
    if attempt.error_code:
        result.errors[attempt.error_code] += 1
    result.documents += attempt.documents
    result.resources += attempt.resources


def _run_of(sessions: sessionmaker[Session], batch_id: int) -> int | None:
    with sessions() as session:
        batch = session.get(Batch, batch_id)
        return batch.run_id if batch is not None else None


def _audit_row(call: CallRecord, run_id: int | None, batch_id: int) -> AuditRow:
    return AuditRow(
        at=call.started_at or _utcnow(),
        research_id=call.research_id,
        organization_id=call.organization_id,
        operation=call.operation,
        purpose=call.purpose_of_use,
        outcome=call.outcome,
        http_status=call.status,
        duration_ms=float(call.duration_ms),
        run_id=run_id,
        batch_id=batch_id,
    )
