"""Consent withdrawal: record it, purge what was acquired, keep an audit entry.

Two sides of one protocol live here, so they are read (and changed) together:

- :func:`withdraw_consent` — the operator's side: one transaction that locks the
  participant, marks the consent withdrawn and deletes everything acquired for them.
- :func:`consent_gate` — the acquisition's side: a transaction that stores something
  acquired for a participant calls it first (``save_links`` does), takes the same
  lock and then checks consent, so a write either commits before the withdrawal (and
  is purged by it) or sees the withdrawal (and writes nothing).

Why the gate takes the lock *before* it checks, in two statements: under PostgreSQL's
READ COMMITTED a statement's snapshot is taken before it waits for a row lock, so one
``SELECT … WHERE <consent in force> FOR UPDATE`` that waited for a withdrawal still
sees the consent as it was and says "active". On SQLite the driver begins a
transaction only at the first write, so a check that comes before any write is not
in the write transaction at all; a no-op write takes the single writer's lock first.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Delete,
    Select,
    bindparam,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from ehrfetch.errors import StoreError
from ehrfetch.store.audit import AuditRow, record_audit
from ehrfetch.store.chunks import chunks
from ehrfetch.store.cohort import CohortRules, consent_in_force
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Base,
    Consent,
    ConsentStatus,
    Document,
    Participant,
    PatientLink,
    Provenance,
    Quarantine,
    Resource,
    ResourceAlias,
    ResourceSource,
    table_of,
)

AUDIT_OPERATION_WITHDRAW = "withdraw"
"""Audit operation of a withdrawal recorded now (and the purge that came with it)."""
AUDIT_OPERATION_PURGE = "purge"
"""Audit operation of a purge for a consent that was already not in force."""


def lock_participant(session: Session, condition: ColumnElement[bool]) -> int | None:
    """Lock one participant's row for the rest of the transaction; their id, or None.

    PostgreSQL: ``SELECT … FOR UPDATE``. SQLite: a write that changes nothing, because
    its driver would otherwise run the statements before the first real write outside
    any transaction, where another writer can commit between them.
    """
    if session.get_bind().dialect.name == "sqlite":
        return session.scalar(
            update(Participant)
            .where(condition)
            .values(id=Participant.id)
            .returning(Participant.id)
            .execution_options(synchronize_session=False)
        )
    return session.scalar(select(Participant.id).where(condition).with_for_update())


def consent_gate(session: Session, participant_id: int, rules: CohortRules) -> bool:
    """Lock the participant, then tell whether their consent is in force.

    Call it first in a transaction that stores something acquired for the participant,
    and store nothing when it says False. The check is its own statement after the lock
    (see the module docstring) so it sees a withdrawal that committed while it waited.
    """
    # Prepared once per process (Core, bound parameters): the gate runs for every
    # write of every participant, and building and compiling ORM statements each time
    # was a fifth of the pipeline's CPU (docs/benchmarks.md, the throughput profile).
    lock = _LOCK_BY_ID[session.get_bind().dialect.name == "sqlite"]
    if session.execute(lock, {"pid": participant_id}).first() is None:
        return False
    return consent_in_force_now(session, participant_id, rules)


def consent_in_force_now(session: Session, participant_id: int, rules: CohortRules) -> bool:
    """Whether the participant's consent is in force, without a lock: enough to decide
    whether to ask the network at all; every write re-checks through :func:`consent_gate`."""
    check = _consent_check(rules.consent_type)
    # On the session's connection, in its transaction: the Session would run the ORM's
    # result machinery for one id, for every participant (2 % of a batch worker's CPU).
    found = session.connection().execute(check, {"pid": participant_id}).first()
    return found is not None


def consent_in_force_among(
    session: Session, participant_ids: Collection[int], rules: CohortRules
) -> frozenset[int]:
    """Which of these participants' consent is in force: :func:`consent_in_force_now`
    for many participants in one statement (per thousand), without a lock."""
    check = _consent_check_many(rules.consent_type)
    found: set[int] = set()
    connection = session.connection()
    for chunk in chunks(sorted(participant_ids)):
        found.update(connection.execute(check, {"pids": chunk}).scalars())
    return frozenset(found)


_PARTICIPANT = table_of(Participant)
_LOCK_BY_ID = {
    True: update(_PARTICIPANT)
    .where(_PARTICIPANT.c.id == bindparam("pid"))
    .values(id=_PARTICIPANT.c.id)
    .returning(_PARTICIPANT.c.id),
    False: select(_PARTICIPANT.c.id).where(_PARTICIPANT.c.id == bindparam("pid")).with_for_update(),
}


def _active(consent_type: str) -> ColumnElement[bool]:
    # Whether consent is in force does not depend on the rules' clock or retry wait.
    rules = CohortRules(consent_type=consent_type, now=datetime.min, no_match_retry=timedelta(0))
    return consent_in_force(rules, ConsentStatus.ACTIVE)


@cache
def _consent_check(consent_type: str) -> Select[int]:
    return select(Participant.id).where(Participant.id == bindparam("pid"), _active(consent_type))


@cache
def _consent_check_many(consent_type: str) -> Select[int]:
    return select(Participant.id).where(
        Participant.id.in_(bindparam("pids", expanding=True)), _active(consent_type)
    )


class ConsentChange(StrEnum):
    """What a withdrawal did to the consent (the purge happens in every case)."""

    RECORDED = "recorded"
    """The consent in force was active; it is now withdrawn."""
    ALREADY_WITHDRAWN = "already_withdrawn"
    """Withdrawn before (by this command or by a consents import): nothing to record."""
    NOT_ACTIVE = "not_active"
    """The consent in force was declined: nothing to withdraw, but nothing may stay."""


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """Rows deleted by a purge (and attempts closed), by kind. No identifiers."""

    links: int = 0
    documents: int = 0
    """Stored and quarantined alike, with their bytes."""
    resources: int = 0
    lineage: int = 0
    """``resource_source`` rows."""
    provenance: int = 0
    quarantine: int = 0
    attempts_withdrawn: int = 0
    """Pending attempts of open batches closed with the outcome ``withdrawn`` (not deleted)."""

    @property
    def acquired(self) -> int:
        """Acquired rows deleted: everything but the attempts, which are only closed."""
        return (
            self.links
            + self.documents
            + self.resources
            + self.lineage
            + self.provenance
            + self.quarantine
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def audit_code(self) -> str:
        """A short code for the audit row's 64-character ``outcome``."""
        code = (
            f"l={self.links} d={self.documents} r={self.resources} s={self.lineage} "
            f"p={self.provenance} q={self.quarantine} a={self.attempts_withdrawn}"
        )
        return code if len(code) <= 64 else f"purged={self.acquired} a={self.attempts_withdrawn}"


@dataclass(frozen=True, slots=True)
class WithdrawalResult:
    research_id: str
    consent_type: str
    consent: ConsentChange
    withdrawn_at: datetime | None
    """When the consent in force was withdrawn (None when it was declined)."""
    purge_counts: PurgeCounts

    @property
    def purged_anything(self) -> bool:
        return bool(self.purge_counts.acquired or self.purge_counts.attempts_withdrawn)


def withdraw_consent(
    session: Session,
    research_id: str,
    *,
    consent_type: str,
    withdrawn_at: datetime,
    now: datetime,
) -> WithdrawalResult:
    """Record a participant's withdrawal and purge everything acquired for them.

    Call it in one transaction (``with sessions.begin()``): the lock, the consent, the
    purge and the audit row commit together or not at all.

    - **Consent.** The consent of ``consent_type`` in force (latest ``recorded_at``) is
      marked withdrawn at ``withdrawn_at`` when it is active. When it is already
      withdrawn or was declined, nothing is recorded and the purge still runs: a
      withdrawal that arrived by ``consents import`` has purged nothing yet, and this is
      how it is finished. A participant with no consent of that type at all is an
      error, purging nothing: most likely the type is mistyped, and purging under the
      wrong type would leave the real consent active for the next run to re-acquire.
    - **Purge.** Patient links, documents (stored and quarantined, with their bytes),
      resources, lineage, provenance and quarantine rows of the participant are
      deleted. Attempts are kept — they are operational history (outcome, counts, an
      error code, never PHI) that run summaries count — but pending ones of open
      batches are closed with the outcome ``withdrawn`` so no batch starts on them.
    - **Kept.** The participant, their names, addresses and consents: the roster is the
      program's record of enrollment, not something ehrfetch acquired. The audit
      trail, and one new audit row for this withdrawal: research id, operation,
      the kind of consent change as purpose and the counts as outcome — no demographics.
    - **Idempotent.** Withdrawing again records nothing, purges nothing, reports zero
      counts and ``ALREADY_WITHDRAWN`` — and is audited like any other purge request.

    Raises :class:`StoreError` for an unknown research id or an impossible time.
    """
    pid = lock_participant(session, Participant.research_id == research_id)
    if pid is None:
        raise StoreError(f"no participant with research id {research_id}")
    consent = session.scalars(
        select(Consent)
        .where(Consent.participant_id == pid, Consent.type == consent_type)
        .order_by(Consent.recorded_at.desc())
        .limit(1)
    ).first()
    if consent is None:
        raise StoreError(
            f"{research_id} has no '{consent_type}' consent: nothing was withdrawn or purged"
        )
    change = _record(consent, research_id, withdrawn_at, now)
    counts = _purge(session, pid, now)
    record_audit(
        session,
        [
            AuditRow(
                at=now,
                research_id=research_id,
                organization_id=None,
                operation=(
                    AUDIT_OPERATION_WITHDRAW
                    if change is ConsentChange.RECORDED
                    else AUDIT_OPERATION_PURGE
                ),
                purpose=f"consent:{consent_type}:{change.value}"[:64],
                outcome=counts.audit_code(),
            )
        ],
    )
    session.flush()
    return WithdrawalResult(
        research_id=research_id,
        consent_type=consent_type,
        consent=change,
        withdrawn_at=consent.withdrawn_at,
        purge_counts=counts,
    )


def acquired_counts(session: Session, research_id: str) -> PurgeCounts:
    """What :func:`withdraw_consent` would purge now (for a confirmation prompt)."""
    pid = session.scalar(select(Participant.id).where(Participant.research_id == research_id))
    if pid is None:
        raise StoreError(f"no participant with research id {research_id}")
    docs, resources = _owned(pid)

    def count(model: type[Base], condition: ColumnElement[bool]) -> int:
        return session.scalar(select(func.count()).select_from(model).where(condition)) or 0

    return PurgeCounts(
        links=count(PatientLink, PatientLink.participant_id == pid),
        documents=count(Document, Document.participant_id == pid),
        resources=count(Resource, Resource.participant_id == pid),
        lineage=count(
            ResourceSource,
            or_(ResourceSource.resource_id.in_(resources), ResourceSource.document_id.in_(docs)),
        ),
        provenance=count(
            Provenance, or_(Provenance.participant_id == pid, Provenance.document_id.in_(docs))
        ),
        quarantine=count(
            Quarantine, or_(Quarantine.participant_id == pid, Quarantine.document_id.in_(docs))
        ),
        attempts_withdrawn=count(
            Attempt, (Attempt.participant_id == pid) & Attempt.outcome.is_(None)
        ),
    )


def _record(
    consent: Consent, research_id: str, withdrawn_at: datetime, now: datetime
) -> ConsentChange:
    if consent.status is ConsentStatus.WITHDRAWN:
        return ConsentChange.ALREADY_WITHDRAWN
    if consent.status is not ConsentStatus.ACTIVE:
        return ConsentChange.NOT_ACTIVE
    if withdrawn_at > now:
        raise StoreError(f"{research_id}: the withdrawal time is in the future")
    if withdrawn_at < consent.recorded_at:
        raise StoreError(
            f"{research_id}: the withdrawal time is before the consent in force was "
            f"recorded ({consent.recorded_at.isoformat()})"
        )
    # The row in force is marked rather than a new row added: it is what a consents
    # file says for a withdrawal (same recorded_at, status withdrawn, withdrawn_at), so
    # importing the program's updated file afterwards changes nothing.
    consent.status = ConsentStatus.WITHDRAWN
    consent.withdrawn_at = withdrawn_at
    consent.imported_at = now
    return ConsentChange.RECORDED


def _owned(pid: int) -> tuple[Select[int], Select[int]]:
    """The participant's document ids and resource ids, as subqueries for ``IN``."""
    docs = select(Document.id).where(Document.participant_id == pid)
    resources = select(Resource.id).where(Resource.participant_id == pid)
    return docs, resources


def _purge(session: Session, pid: int, now: datetime) -> PurgeCounts:
    # Explicit deletes, children first, instead of relying on ON DELETE CASCADE: the
    # participant row stays (so no cascade fires), and each statement's row count is
    # what the audit row and the operator are told.
    docs, resources = _owned(pid)
    lineage = _delete(
        session,
        delete(ResourceSource).where(
            or_(ResourceSource.resource_id.in_(resources), ResourceSource.document_id.in_(docs))
        ),
    )
    provenance = _delete(
        session,
        delete(Provenance).where(
            or_(Provenance.participant_id == pid, Provenance.document_id.in_(docs))
        ),
    )
    quarantine = _delete(
        session,
        delete(Quarantine).where(
            or_(Quarantine.participant_id == pid, Quarantine.document_id.in_(docs))
        ),
    )
    # Aliases are an index of the resources, not data of their own: deleted with them
    # (explicitly, so the cascade has nothing to look up) and not counted.
    _delete(session, delete(ResourceAlias).where(ResourceAlias.participant_id == pid))
    resource_count = _delete(session, delete(Resource).where(Resource.participant_id == pid))
    documents = _delete(session, delete(Document).where(Document.participant_id == pid))
    links = _delete(session, delete(PatientLink).where(PatientLink.participant_id == pid))
    # An attempt without an outcome belongs to an open batch (see store/batches.py);
    # closing it keeps a batch that has not reached the participant from starting on
    # them. A batch already acquiring them stops at its next store write (the gate).
    attempts = session.execute(
        update(Attempt)
        .where(Attempt.participant_id == pid, Attempt.outcome.is_(None))
        .values(outcome=AttemptOutcome.WITHDRAWN, finished_at=now)
        .execution_options(synchronize_session=False)
    )
    return PurgeCounts(
        links=links,
        documents=documents,
        resources=resource_count,
        lineage=lineage,
        provenance=provenance,
        quarantine=quarantine,
        attempts_withdrawn=_rowcount(attempts),
    )


def _delete(session: Session, statement: Delete) -> int:
    result = session.execute(statement.execution_options(synchronize_session=False))
    return _rowcount(result)


def _rowcount(result: Any) -> int:
    assert isinstance(result, CursorResult)
    return int(result.rowcount)
