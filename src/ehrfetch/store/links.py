"""Patient links: each candidate at each organization, the decision and its reasons.

An operator's decision (from the review queue) is final: later runs refresh the
network's grade and ehrfetch's score on the link, but never overturn the operator.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ehrfetch.errors import ConsentNotInForce, StoreError
from ehrfetch.store.chunks import chunks
from ehrfetch.store.cohort import CohortRules
from ehrfetch.store.purge import consent_gate
from ehrfetch.store.tables import (
    DecidedBy,
    LinkDecision,
    Organization,
    Participant,
    PatientLink,
    table_of,
)
from ehrfetch.store.upsert import insert_missing


@dataclass(frozen=True, slots=True)
class LinkRow:
    organization_id: str
    network_patient_id: str
    grade: str | None
    network_score: float | None
    score: float
    decision: LinkDecision
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OrganizationRow:
    id: str
    name: str
    base_url: str
    host: str


def upsert_organizations(
    session: Session, organizations: Sequence[OrganizationRow], now: datetime
) -> None:
    # Insert-or-ignore first: batches running at once on a new store all add the same
    # organizations, and a read-then-insert would collide on the primary key.
    insert_missing(
        session,
        table_of(Organization),
        [
            {"id": o.id, "name": o.name, "base_url": o.base_url, "host": o.host, "updated_at": now}
            for o in organizations
        ],
        ["id"],
    )
    known = {o.id: o for o in session.scalars(select(Organization))}
    for org in organizations:
        row = known[org.id]
        if (row.name, row.base_url, row.host) != (org.name, org.base_url, org.host):
            row.name, row.base_url, row.host, row.updated_at = (
                org.name, org.base_url, org.host, now,
            )  # fmt: skip
    session.flush()


def save_links(
    session: Session,
    participant_id: int,
    links: Sequence[LinkRow],
    now: datetime,
    *,
    rules: CohortRules | None = None,
) -> dict[tuple[str, str], PatientLink]:
    """Insert or refresh links; return every link of the participant by (org, patient id).

    With ``rules`` (acquisition always passes them) consent is re-checked first, in this
    transaction, under the participant's lock: a participant withdrawn while their batch
    ran gets no links, and :class:`ConsentNotInForce` is raised with nothing written.
    Without them (tests, benchmarks that store links directly) there is no check.
    """
    if rules is not None and not consent_gate(session, participant_id, rules):
        raise ConsentNotInForce(f"participant {participant_id}: consent is not in force")
    insert_missing(
        session,
        table_of(PatientLink),
        [
            {
                "participant_id": participant_id,
                "organization_id": link.organization_id,
                "network_patient_id": link.network_patient_id,
                "grade": link.grade,
                "network_score": link.network_score,
                "score": link.score,
                "decision": link.decision,
                "decided_by": DecidedBy.AUTO,
                "reasons": list(link.reasons),
                "created_at": now,
                "decided_at": now,
            }
            for link in links
        ],
        ["participant_id", "organization_id", "network_patient_id"],
    )
    existing = links_of(session, participant_id)
    for link in links:
        row = existing[(link.organization_id, link.network_patient_id)]
        row.grade, row.network_score, row.score = link.grade, link.network_score, link.score
        if row.decided_by is DecidedBy.AUTO and (
            row.decision != link.decision or row.reasons != list(link.reasons)
        ):
            row.decision, row.reasons, row.decided_at = link.decision, list(link.reasons), now
    session.flush()
    return existing


def links_of(session: Session, participant_id: int) -> dict[tuple[str, str], PatientLink]:
    """Every link of the participant, by (organization, network patient id)."""
    return {
        (row.organization_id, row.network_patient_id): row
        for row in session.scalars(
            select(PatientLink).where(PatientLink.participant_id == participant_id)
        )
    }


def linked_participants(session: Session, participant_ids: Iterable[int]) -> frozenset[int]:
    """Those of the participants who have any link stored (from an earlier attempt)."""
    found: set[int] = set()
    for chunk in chunks(sorted(set(participant_ids))):
        found.update(
            session.scalars(
                select(PatientLink.participant_id)
                .where(PatientLink.participant_id.in_(chunk))
                .distinct()
            )
        )
    return frozenset(found)


def accepted_links(links: Iterable[PatientLink]) -> list[PatientLink]:
    """The accepted ones of a participant's links (an operator's accept from the review
    queue included), by organization, oldest first: the order documents are fetched in.

    Taken from the links :func:`save_links` or :func:`links_of` returned, not queried
    again: the participant's every link is already in hand.
    """
    found = [link for link in links if link.decision is LinkDecision.ACCEPT]
    return sorted(found, key=lambda link: (link.organization_id, link.id))


@dataclass(frozen=True, slots=True)
class ReviewItem:
    link_id: int
    research_id: str
    organization_id: str
    network_patient_id: str
    grade: str | None
    score: float
    decision: LinkDecision
    decided_by: DecidedBy
    reasons: tuple[str, ...]
    decided_at: datetime


def _items(session: Session, condition: Any, limit: int | None = None) -> list[ReviewItem]:
    query = (
        select(PatientLink, Participant.research_id)
        .join(Participant, Participant.id == PatientLink.participant_id)
        .where(condition)
        .order_by(PatientLink.decided_at, PatientLink.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return [
        ReviewItem(
            link_id=link.id,
            research_id=rid,
            organization_id=link.organization_id,
            network_patient_id=link.network_patient_id,
            grade=link.grade,
            score=link.score,
            decision=link.decision,
            decided_by=link.decided_by,
            reasons=tuple(link.reasons),
            decided_at=link.decided_at,
        )
        for link, rid in session.execute(query)
    ]


def review_queue(session: Session, limit: int | None = None) -> list[ReviewItem]:
    """Links waiting for an operator, oldest first."""
    return _items(
        session,
        (PatientLink.decision == LinkDecision.REVIEW) & (PatientLink.decided_by == DecidedBy.AUTO),
        limit,
    )


def review_item(session: Session, link_id: int) -> ReviewItem:
    found = _items(session, PatientLink.id == link_id)
    if not found:
        raise StoreError(f"link {link_id} does not exist")
    return found[0]


def decide_link(
    session: Session, link_id: int, decision: LinkDecision, now: datetime
) -> ReviewItem:
    """An operator's decision: final for this link, kept across later runs."""
    link = session.get(PatientLink, link_id, with_for_update=True)
    if link is None:
        raise StoreError(f"link {link_id} does not exist")
    if decision is LinkDecision.ACCEPT:
        other = session.scalars(
            select(PatientLink.id).where(
                PatientLink.participant_id == link.participant_id,
                PatientLink.organization_id == link.organization_id,
                PatientLink.decision == LinkDecision.ACCEPT,
                PatientLink.id != link.id,
            )
        ).first()
        if other is not None:
            raise StoreError(
                f"link {other} already accepts another patient at {link.organization_id} for "
                f"this participant; reject it first (one participant is one patient there)"
            )
    link.decision = decision
    link.decided_by = DecidedBy.OPERATOR
    link.decided_at = now
    link.reasons = [
        *[r for r in link.reasons if not r.startswith("operator:")],
        f"operator:{decision.value}",
    ]
    session.flush()
    return review_item(session, link_id)
