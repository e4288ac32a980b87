"""Cohort selection: who is eligible now, split into persisted batches.

Eligible: an EHR consent in force, no EHR on file (none from another channel, no
stored document or resource), not waiting in an open batch, and not found nowhere
within the retry wait. The rules themselves are SQL predicates in
``store/cohort.py``; this module applies the settings and shapes the result.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.errors import StoreError
from ehrfetch.settings import CohortSettings
from ehrfetch.store.cohort import CohortCounts, CohortRules, cohort_counts, create_run, eligible_ids
from ehrfetch.store.tables import Attempt, Batch, Participant


def rules_from(settings: CohortSettings, now: datetime) -> CohortRules:
    return CohortRules(
        consent_type=settings.consent_type,
        now=now,
        no_match_retry=timedelta(days=settings.no_match_retry_days),
    )


def count_cohort(
    sessions: sessionmaker[Session], settings: CohortSettings, now: datetime
) -> CohortCounts:
    with sessions() as session:
        return cohort_counts(session, rules_from(settings, now))


@dataclass(frozen=True)
class BatchSummary:
    id: int
    seq: int
    size: int
    first_research_id: str


@dataclass(frozen=True)
class CohortSelection:
    run_id: int | None
    participants: int
    batches: tuple[BatchSummary, ...]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def select_cohort(
    sessions: sessionmaker[Session],
    settings: CohortSettings,
    now: datetime,
    *,
    limit: int | None = None,
    batch_size: int | None = None,
    kind: str = "select",
) -> CohortSelection:
    """Select the eligible participants (at most ``limit``) into a new pending run.

    Nobody eligible: no run is created. The selection and the batches are one
    transaction; a participant is pending in at most one batch (a unique index), so a
    selection racing another fails cleanly instead of taking someone twice.
    """
    size = batch_size or settings.batch_size
    rules = rules_from(settings, now)
    try:
        with sessions.begin() as session:
            ids = eligible_ids(session, rules, limit)
            if not ids:
                return CohortSelection(run_id=None, participants=0, batches=())
            run = create_run(
                session,
                ids,
                batch_size=size,
                kind=kind,
                parameters={"limit": limit, "batch_size": size},
                now=now,
            )
            run_id = run.id
    except IntegrityError:
        raise StoreError(
            "another selection took some of the same participants at the same time; "
            "run the selection again"
        ) from None
    with sessions() as session:
        return CohortSelection(
            run_id=run_id, participants=len(ids), batches=_batches(session, run_id)
        )


def _batches(session: Session, run_id: int) -> tuple[BatchSummary, ...]:
    rows = session.execute(
        select(Batch.id, Batch.seq, Batch.size, func.min(Participant.research_id))
        .join(Attempt, Attempt.batch_id == Batch.id)
        .join(Participant, Participant.id == Attempt.participant_id)
        .where(Batch.run_id == run_id)
        .group_by(Batch.id, Batch.seq, Batch.size)
        .order_by(Batch.seq)
    )
    return tuple(
        BatchSummary(id=batch_id, seq=seq, size=size, first_research_id=first)
        for batch_id, seq, size, first in rows
    )
