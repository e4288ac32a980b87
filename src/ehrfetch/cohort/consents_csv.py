"""The consents file: research_id, type, status, recorded_at, withdrawn_at."""

from __future__ import annotations

from ehrfetch.cohort import fields
from ehrfetch.cohort.csvfile import CsvRow
from ehrfetch.cohort.fields import FieldProblem
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.records import ConsentRecord
from ehrfetch.errors import RowProblem
from ehrfetch.store.tables import ConsentStatus

REQUIRED = ("research_id", "type", "status", "recorded_at")
COLUMNS = frozenset({*REQUIRED, "withdrawn_at"})


def parse_row(row: CsvRow, ctx: ReadContext) -> ConsentRecord | list[RowProblem]:
    v = row.values
    try:
        rid = fields.research_id(v.get("research_id"))
    except FieldProblem as exc:
        return [RowProblem(row.line, "research_id", exc.reason)]
    problems: list[RowProblem] = []

    def problem(column: str, reason: str) -> None:
        problems.append(RowProblem(row.line, column, reason, rid))

    kind = status = recorded = withdrawn = None
    try:
        kind = fields.token(v.get("type"), what="type")
    except FieldProblem as exc:
        problem("type", exc.reason)
    try:
        status = fields.consent_status(v.get("status"))
    except FieldProblem as exc:
        problem("status", exc.reason)
    try:
        recorded = fields.timestamp(v.get("recorded_at"), now=ctx.now, what="recorded_at")
        if recorded is None:
            problem("recorded_at", "recorded_at is missing")
    except FieldProblem as exc:
        problem("recorded_at", exc.reason)
    try:
        withdrawn = fields.timestamp(v.get("withdrawn_at"), now=ctx.now, what="withdrawn_at")
    except FieldProblem as exc:
        problem("withdrawn_at", exc.reason)

    if status is ConsentStatus.WITHDRAWN and withdrawn is None and not problems:
        problem("withdrawn_at", "a withdrawn consent needs withdrawn_at")
    if status is not None and status is not ConsentStatus.WITHDRAWN and withdrawn is not None:
        problem("withdrawn_at", f"must be empty when status is {status.value}")
    if recorded is not None and withdrawn is not None and withdrawn < recorded:
        problem("withdrawn_at", "is before recorded_at")
    if problems:
        return problems
    assert kind is not None and status is not None and recorded is not None
    return ConsentRecord(
        research_id=rid, type=kind, status=status, recorded_at=recorded, withdrawn_at=withdrawn
    )
