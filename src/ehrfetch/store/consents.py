"""Consents: upsert by (participant, type, recorded_at)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ehrfetch.cohort.records import ConsentRecord
from ehrfetch.store.participants import UpsertCounts
from ehrfetch.store.tables import Consent, ConsentStatus, table_of
from ehrfetch.store.upsert import insert_rows


def upsert_consents(
    session: Session, records: Sequence[tuple[int, ConsentRecord]], now: datetime
) -> UpsertCounts:
    """Insert or update consents; ``records`` pairs each with its participant id."""
    counts = UpsertCounts()
    pids = {pid for pid, _ in records}
    existing: dict[tuple[int, str, datetime], tuple[int, str, datetime | None]] = {
        (row.participant_id, row.type, row.recorded_at): (row.id, row.status, row.withdrawn_at)
        for row in session.scalars(select(Consent).where(Consent.participant_id.in_(pids)))
    }
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for position, (pid, record) in enumerate(records):
        found = existing.get((pid, record.type, record.recorded_at))
        if found is None:
            inserts.append(
                {
                    "participant_id": pid,
                    "type": record.type,
                    "status": record.status,
                    "recorded_at": record.recorded_at,
                    "withdrawn_at": record.withdrawn_at,
                    "imported_at": now,
                }
            )
        elif found[1] == ConsentStatus.WITHDRAWN and record.status != ConsentStatus.WITHDRAWN:
            # A withdrawal is final for the consent it withdrew: an older export that
            # still says "active" must not bring it back. A new consent is a new row.
            counts.refused.append(position)
        elif (found[1], found[2]) != (record.status, record.withdrawn_at):
            updates.append(
                {
                    "id": found[0],
                    "status": record.status,
                    "withdrawn_at": record.withdrawn_at,
                    "imported_at": now,
                }
            )
        else:
            counts.unchanged += 1
    if inserts:
        insert_rows(session, table_of(Consent), inserts)
    if updates:
        session.execute(update(Consent), updates)
    counts.inserted = len(inserts)
    counts.updated = len(updates)
    return counts
