"""Cohort queries: who is consented, who has EHR, who may be tried now.

Each rule is one SQL predicate over ``participant``; the counts and the selection are
built from the same predicates so ``ehrfetch cohort`` and a run never disagree.
The counts form a waterfall that adds up: consented = with EHR + in flight + waiting
+ eligible.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, case, exists, func, insert, not_, or_, select
from sqlalchemy.orm import Session, aliased

from ehrfetch.store.tables import (
    OPEN_BATCH_STATUSES,
    Attempt,
    AttemptOutcome,
    Batch,
    BatchStatus,
    Consent,
    ConsentStatus,
    Document,
    DocumentStatus,
    Participant,
    Resource,
    Run,
    RunStatus,
    table_of,
)
from ehrfetch.store.upsert import insert_rows


@dataclass(frozen=True)
class CohortRules:
    consent_type: str
    now: datetime
    no_match_retry: timedelta


def consent_in_force(rules: CohortRules, status: ConsentStatus) -> ColumnElement[bool]:
    """The participant's latest consent of the type has ``status``."""
    later = aliased(Consent)
    return exists().where(
        Consent.participant_id == Participant.id,
        Consent.type == rules.consent_type,
        Consent.status == status,
        ~exists().where(
            later.participant_id == Consent.participant_id,
            later.type == rules.consent_type,
            later.recorded_at > Consent.recorded_at,
        ),
    )


def has_ehr() -> ColumnElement[bool]:
    """On file before ehrfetch, or acquired by an attempt that finished retrieving.

    What is stored counts only with an attempt that ended ``retrieved``: a run killed or
    stopped between a participant's documents and their outcome leaves documents (all,
    or only some organizations') under a failed attempt, and the participant must be
    taken again, converging on what is stored, not left failed with half a record. A
    purge (consent withdrawn) removes what was stored, so a participant who consents
    again is acquired again.
    """
    retrieved = exists().where(
        Attempt.participant_id == Participant.id, Attempt.outcome == AttemptOutcome.RETRIEVED
    )
    stored = or_(
        exists().where(
            Document.participant_id == Participant.id, Document.status == DocumentStatus.STORED
        ),
        exists().where(Resource.participant_id == Participant.id),
    )
    return or_(Participant.ehr_on_file, and_(retrieved, stored))


def in_open_batch() -> ColumnElement[bool]:
    return exists().where(
        Attempt.participant_id == Participant.id,
        Attempt.batch_id == Batch.id,
        Batch.status.in_(OPEN_BATCH_STATUSES),
    )


def waiting_after_no_match(rules: CohortRules) -> ColumnElement[bool]:
    return exists().where(
        Attempt.participant_id == Participant.id,
        Attempt.outcome == AttemptOutcome.NO_MATCH,
        Attempt.finished_at > rules.now - rules.no_match_retry,
    )


def eligible(rules: CohortRules) -> ColumnElement[bool]:
    return and_(
        consent_in_force(rules, ConsentStatus.ACTIVE),
        not_(has_ehr()),
        not_(in_open_batch()),
        not_(waiting_after_no_match(rules)),
    )


@dataclass(frozen=True)
class CohortCounts:
    participants: int
    consented: int
    withdrawn: int
    not_consented: int
    with_ehr: int
    in_flight: int
    waiting: int
    eligible: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def cohort_counts(session: Session, rules: CohortRules) -> CohortCounts:
    consented = consent_in_force(rules, ConsentStatus.ACTIVE)
    withdrawn = consent_in_force(rules, ConsentStatus.WITHDRAWN)
    ehr = has_ehr()
    flight = in_open_batch()
    waiting = waiting_after_no_match(rules)

    def count_if(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    row = session.execute(
        select(
            func.count(),
            count_if(consented),
            count_if(withdrawn),
            count_if(and_(consented, ehr)),
            count_if(and_(consented, ~ehr, flight)),
            count_if(and_(consented, ~ehr, ~flight, waiting)),
            count_if(and_(consented, ~ehr, ~flight, ~waiting)),
        ).select_from(Participant)
    ).one()
    total, n_consented, n_withdrawn, n_ehr, n_flight, n_waiting, n_eligible = (int(v) for v in row)
    return CohortCounts(
        participants=total,
        consented=n_consented,
        withdrawn=n_withdrawn,
        not_consented=total - n_consented - n_withdrawn,
        with_ehr=n_ehr,
        in_flight=n_flight,
        waiting=n_waiting,
        eligible=n_eligible,
    )


def eligible_ids(session: Session, rules: CohortRules, limit: int | None = None) -> list[int]:
    # Oldest participants first: a steady order means a limited run today and the next
    # one tomorrow work through the cohort instead of sampling it.
    query = select(Participant.id).where(eligible(rules)).order_by(Participant.id)
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def create_run(
    session: Session,
    participant_ids: list[int],
    *,
    batch_size: int,
    kind: str,
    parameters: dict[str, object],
    now: datetime,
) -> Run:
    """Persist a run whose batches hold ``participant_ids`` in order, each attempt pending."""
    run = Run(kind=kind, status=RunStatus.PENDING, parameters=parameters, started_at=now)
    session.add(run)
    session.flush()
    chunks = [
        participant_ids[i : i + batch_size] for i in range(0, len(participant_ids), batch_size)
    ]
    batch_ids = (
        session.scalars(
            insert(Batch).returning(Batch.id, sort_by_parameter_order=True),
            [
                {
                    "run_id": run.id,
                    "seq": seq,
                    "status": BatchStatus.PENDING,
                    "size": len(chunk),
                    "tries": 0,
                    "created_at": now,
                }
                for seq, chunk in enumerate(chunks, start=1)
            ],
        ).all()
        if chunks
        else []
    )
    attempts = [
        {"batch_id": batch_id, "participant_id": pid}
        for batch_id, chunk in zip(batch_ids, chunks, strict=True)
        for pid in chunk
    ]
    if attempts:
        insert_rows(session, table_of(Attempt), attempts)
    return run
