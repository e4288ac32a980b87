"""Importing the roster and the consents into the store.

Two passes over the file. The first reads only the keys, so a research id (or a
consent) that appears on several lines is known before anything is written: which of
the lines is right cannot be told, so all of them are skipped and reported. The second
pass validates every row and writes good rows in chunks, each chunk in its own
transaction. Memory stays flat in the size of the file, a crash leaves whole chunks,
and a re-run converges because every write is an upsert.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.cohort import consents_csv, roster_csv, roster_fhir
from ehrfetch.cohort.csvfile import CsvRow, CsvTable
from ehrfetch.cohort.fields import FieldProblem
from ehrfetch.cohort.fields import timestamp as parse_timestamp
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.records import ConsentRecord, ParticipantRecord
from ehrfetch.errors import InputFileError, RowProblem
from ehrfetch.store.consents import upsert_consents
from ehrfetch.store.participants import UpsertCounts, participant_ids, upsert_participants

CHUNK = 2000

T = TypeVar("T")
R = TypeVar("R", ParticipantRecord, ConsentRecord)

RosterFormat = Literal["csv", "ndjson"]


@dataclass
class ImportReport:
    path: Path
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    problems: list[RowProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def count(self, counts: UpsertCounts) -> None:
        self.inserted += counts.inserted
        self.updated += counts.updated
        self.unchanged += counts.unchanged

    @property
    def ok(self) -> bool:
        return self.skipped == 0


def roster_format(path: Path) -> RosterFormat:
    suffix = path.suffix.lower()
    if suffix in {".ndjson", ".jsonl"}:
        return "ndjson"
    if suffix in {".csv", ".txt"}:
        return "csv"
    raise InputFileError(path, "cannot tell the format from the extension; pass --format")


def import_roster(
    path: Path,
    sessions: sessionmaker[Session],
    ctx: ReadContext,
    fmt: RosterFormat | None = None,
) -> ImportReport:
    fmt = fmt or roster_format(path)
    report = ImportReport(path)
    items = _roster_items(path, ctx, fmt, report)
    duplicates = _duplicates(_roster_keys(path, ctx, fmt))

    def write(session: Session, chunk: list[tuple[int, ParticipantRecord]]) -> None:
        report.count(upsert_participants(session, [record for _, record in chunk], ctx.now))

    good = _drop_duplicates(items, duplicates, lambda record: record.research_id, report)
    _write_chunks(sessions, good, write)
    return report


def import_consents(path: Path, sessions: sessionmaker[Session], ctx: ReadContext) -> ImportReport:
    report = ImportReport(path)
    with CsvTable(path, required=consents_csv.REQUIRED, known=consents_csv.COLUMNS) as table:
        keys = [(r.line, _consent_key(r, ctx)) for r in table.rows() if isinstance(r, CsvRow)]
    duplicates = _duplicates((line, key) for line, key in keys if key is not None)

    def items() -> Iterator[tuple[int, ConsentRecord | list[RowProblem]]]:
        with CsvTable(path, required=consents_csv.REQUIRED, known=consents_csv.COLUMNS) as table:
            _warn_unknown(table, report)
            for row in table.rows():
                report.rows += 1
                if isinstance(row, RowProblem):
                    yield row.line, [row]
                else:
                    yield row.line, consents_csv.parse_row(row, ctx)

    def write(session: Session, chunk: list[tuple[int, ConsentRecord]]) -> None:
        ids = participant_ids(session, (record.research_id for _, record in chunk))
        known: list[tuple[int, ConsentRecord]] = []
        lines: list[int] = []
        for line, record in chunk:
            pid = ids.get(record.research_id)
            if pid is None:
                report.skipped += 1
                report.problems.append(
                    RowProblem(line, "research_id", "unknown research id", record.research_id)
                )
            else:
                known.append((pid, record))
                lines.append(line)
        counts = upsert_consents(session, known, ctx.now)
        report.count(counts)
        for position in counts.refused:
            report.skipped += 1
            report.problems.append(
                RowProblem(
                    lines[position],
                    "status",
                    "this consent was withdrawn; an import does not undo a withdrawal "
                    "(a new consent needs its own recorded_at)",
                    known[position][1].research_id,
                )
            )

    good = _drop_duplicates(items(), duplicates, _record_key, report)
    _write_chunks(sessions, good, write)
    return report


def _record_key(record: ConsentRecord) -> Hashable:
    return (record.research_id, record.type, record.recorded_at)


def _consent_key(row: CsvRow, ctx: ReadContext) -> Hashable | None:
    rid = row.values.get("research_id", "").strip()
    try:
        recorded = parse_timestamp(row.values.get("recorded_at"), now=ctx.now, what="recorded_at")
    except FieldProblem:
        return None  # reported in the second pass
    return (rid, row.values.get("type", "").strip().lower(), recorded)


def _roster_items(
    path: Path, ctx: ReadContext, fmt: RosterFormat, report: ImportReport
) -> Iterator[tuple[int, ParticipantRecord | list[RowProblem]]]:
    if fmt == "csv":
        with CsvTable(path, required=roster_csv.REQUIRED, known=roster_csv.COLUMNS) as table:
            _warn_unknown(table, report)
            for row in table.rows():
                report.rows += 1
                if isinstance(row, RowProblem):
                    yield row.line, [row]
                else:
                    yield row.line, roster_csv.parse_row(row, ctx)
    else:
        for line, value in roster_fhir.read_lines(path):
            report.rows += 1
            if isinstance(value, RowProblem):
                yield line, [value]
            else:
                yield line, roster_fhir.parse_patient(line, value, ctx)


def _roster_keys(path: Path, ctx: ReadContext, fmt: RosterFormat) -> Iterator[tuple[int, str]]:
    if fmt == "csv":
        with CsvTable(path, required=roster_csv.REQUIRED, known=roster_csv.COLUMNS) as table:
            for row in table.rows():
                if isinstance(row, CsvRow):
                    yield row.line, row.values.get("research_id", "").strip()
    else:
        for line, value in roster_fhir.read_lines(path):
            if not isinstance(value, RowProblem):
                rid = roster_fhir.research_id_of(value, ctx.research_id_system)
                if rid:
                    yield line, rid


def _duplicates(keys: Iterable[tuple[int, Hashable]]) -> dict[Hashable, list[int]]:
    lines: dict[Hashable, list[int]] = defaultdict(list)
    for line, key in keys:
        if key:
            lines[key].append(line)
    return {key: found for key, found in lines.items() if len(found) > 1}


def _drop_duplicates(
    items: Iterable[tuple[int, R | list[RowProblem]]],
    duplicates: dict[Hashable, list[int]],
    key: Callable[[R], Hashable],
    report: ImportReport,
) -> Iterator[tuple[int, R]]:
    """Good records, with their line; bad rows and every copy of a duplicate reported."""
    for line, item in items:
        if isinstance(item, list):
            report.skipped += 1
            report.problems.extend(item)
            continue
        found = duplicates.get(key(item))
        if found is not None:
            others = ", ".join(str(n) for n in found if n != line)
            report.skipped += 1
            column, what = (
                ("recorded_at", "the same consent")
                if isinstance(item, ConsentRecord)
                else ("research_id", "the same research id")
            )
            report.problems.append(
                RowProblem(line, column, f"{what} is also on line(s) {others}", item.research_id)
            )
            continue
        yield line, item


def _write_chunks(
    sessions: sessionmaker[Session],
    items: Iterable[T],
    write: Callable[[Session, list[T]], None],
) -> None:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= CHUNK:
            with sessions.begin() as session:
                write(session, chunk)
            chunk = []
    if chunk:
        with sessions.begin() as session:
            write(session, chunk)


def _warn_unknown(table: CsvTable, report: ImportReport) -> None:
    if table.unknown_columns:
        report.warnings.append(
            f"{table.path}: ignored unknown column(s): {', '.join(table.unknown_columns)}"
        )
