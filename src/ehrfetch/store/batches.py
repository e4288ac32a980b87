"""Batch and attempt lifecycle: claim, record outcomes, finish.

Invariant: an attempt's outcome is empty exactly while its batch is open (pending or
running). Finishing a batch gives every attempt still without an outcome the outcome
``failed`` with the batch's error, so the participant becomes selectable again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from ehrfetch.errors import StoreError
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Batch,
    BatchStatus,
    Participant,
    table_of,
)
from ehrfetch.store.upsert import update_rows


@dataclass(frozen=True, slots=True)
class Member:
    attempt_id: int
    participant_id: int
    research_id: str


def claim_batch(session: Session, batch_id: int, now: datetime) -> list[Member]:
    """Mark the batch running and return the participants it still has to do."""
    batch = session.get(Batch, batch_id, with_for_update=True)
    if batch is None:
        raise StoreError(f"batch {batch_id} does not exist")
    batch.status = BatchStatus.RUNNING
    batch.tries += 1
    batch.started_at = batch.started_at or now
    batch.heartbeat_at = now
    batch.finished_at = None
    rows = session.execute(
        select(Attempt.id, Participant.id, Participant.research_id)
        .join(Participant, Participant.id == Attempt.participant_id)
        .where(Attempt.batch_id == batch_id, Attempt.outcome.is_(None))
        .order_by(Participant.id)
    )
    return [Member(a, p, r) for a, p, r in rows]


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: AttemptOutcome
    error_code: str | None = None
    error_detail: str | None = None
    links_accepted: int = 0
    documents: int = 0
    resources: int = 0


_ATTEMPTS = table_of(Attempt)
# A withdrawal that closed the attempt while it ran has the last word. Built once:
# update_rows keeps its statement per condition.
_NOT_WITHDRAWN = or_(_ATTEMPTS.c.outcome.is_(None), _ATTEMPTS.c.outcome != AttemptOutcome.WITHDRAWN)


def finish_attempt(
    session: Session, attempt_id: int, result: AttemptResult, started: datetime, now: datetime
) -> None:
    finish_attempts(session, [(attempt_id, result, started, now)])


def finish_attempts(
    session: Session, attempts: Sequence[tuple[int, AttemptResult, datetime, datetime]]
) -> None:
    """Record outcomes: (attempt id, result, started, finished) each."""
    if not attempts:
        return
    # One statement for the group on PostgreSQL, whatever its size (``update_rows``).
    update_rows(
        session,
        _ATTEMPTS,
        [
            {
                "id": attempt_id,
                "outcome": result.outcome,
                "error_code": result.error_code,
                "error_detail": result.error_detail,
                "links_accepted": result.links_accepted,
                "documents": result.documents,
                "resources": result.resources,
                "started_at": started,
                "finished_at": finished,
            }
            for attempt_id, result, started, finished in attempts
        ],
        key="id",
        where=_NOT_WITHDRAWN,
    )


def heartbeat(session: Session, batch_id: int, now: datetime) -> None:
    session.execute(update(Batch).where(Batch.id == batch_id).values(heartbeat_at=now))


def finish_batch(
    session: Session, batch_id: int, now: datetime, error: str | None = None
) -> BatchStatus:
    """Close the batch; its status follows from its attempts' outcomes."""
    session.execute(
        update(Attempt)
        .where(Attempt.batch_id == batch_id, Attempt.outcome.is_(None))
        .values(
            outcome=AttemptOutcome.FAILED,
            error_code="batch_failed",
            error_detail=error or "the batch stopped before this participant",
            finished_at=now,
        )
    )
    outcomes = Counter(session.scalars(select(Attempt.outcome).where(Attempt.batch_id == batch_id)))
    failed = outcomes[AttemptOutcome.FAILED]
    total = sum(outcomes.values())
    if total and failed == total:
        status = BatchStatus.FAILED
    elif failed:
        status = BatchStatus.PARTIAL
    else:
        status = BatchStatus.SUCCEEDED
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(status=status, finished_at=now, heartbeat_at=now, error=error)
    )
    return status


def reopen_batch(session: Session, batch_id: int, *, only_failed: bool = True) -> int:
    """Make a finished batch pending again; its failed attempts (or all) lose their outcome.

    Returns how many participants the batch will do again. Everything a participant
    already has in the store stays: a re-run converges on it instead of repeating it.
    """
    condition = Attempt.batch_id == batch_id
    if only_failed:
        condition = condition & (Attempt.outcome == AttemptOutcome.FAILED)
    reopened = len(
        session.scalars(
            update(Attempt)
            .where(condition)
            .values(outcome=None, error_code=None, error_detail=None, finished_at=None)
            .returning(Attempt.id)
        ).all()
    )
    session.execute(
        update(Batch)
        .where(Batch.id == batch_id)
        .values(status=BatchStatus.PENDING, finished_at=None, error=None)
    )
    return reopened
