"""The audit trail of outbound queries: who, where, why, when, outcome — no demographics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from ehrfetch.store.tables import Audit, table_of
from ehrfetch.store.upsert import insert_rows


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: datetime
    research_id: str | None
    organization_id: str | None
    operation: str
    purpose: str | None
    outcome: str
    http_status: int | None = None
    duration_ms: float | None = None
    run_id: int | None = None
    batch_id: int | None = None


def record_audit(session: Session, rows: Sequence[AuditRow]) -> None:
    if rows:
        insert_rows(
            session,
            table_of(Audit),
            [
                {
                    "at": r.at,
                    "research_id": r.research_id,
                    "organization_id": r.organization_id,
                    "operation": r.operation,
                    "purpose": r.purpose,
                    "outcome": r.outcome,
                    "http_status": r.http_status,
                    "duration_ms": r.duration_ms,
                    "run_id": r.run_id,
                    "batch_id": r.batch_id,
                }
                for r in rows
            ],
        )
