"""What ehrfetch shows on a terminal: import results, cohort counts, selections.

Only counts, research ids and row positions reach the screen; never demographics.
"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ehrfetch.cohort.importing import ImportReport
from ehrfetch.cohort.selection import CohortSelection
from ehrfetch.store.cohort import CohortCounts

# How many problems an import prints; --report writes them all.
SHOWN_PROBLEMS = 20


def print_import(out: Console, err: Console, report: ImportReport, what: str) -> None:
    for warning in report.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    shown = report.problems[:SHOWN_PROBLEMS]
    for problem in shown:
        err.print(f"{escape(str(report.path))}: {escape(str(problem))}", soft_wrap=True)
    if len(report.problems) > len(shown):
        err.print(f"… and {len(report.problems) - len(shown)} more (use --report FILE)")
    style = "green" if report.ok else "yellow"
    out.print(
        f"[{style}]{what}:[/] {report.rows:,} rows read, {report.inserted:,} new, "
        f"{report.updated:,} updated, {report.unchanged:,} unchanged, "
        f"{report.skipped:,} skipped"
    )


def write_problem_report(report: ImportReport, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["line", "column", "research_id", "reason"])
        for p in report.problems:
            writer.writerow([p.line, p.column, p.research_id or "", p.reason])


def print_counts(out: Console, counts: CohortCounts, *, as_json: bool = False) -> None:
    if as_json:
        out.print_json(orjson.dumps(counts.as_dict()).decode())
        return
    table = Table(title="Cohort", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("participants", counts.participants),
        ("  not consented", counts.not_consented),
        ("  withdrawn", counts.withdrawn),
        ("  consented", counts.consented),
        ("    with EHR on file", counts.with_ehr),
        ("    in flight (open batch)", counts.in_flight),
        ("    waiting (no match, retry later)", counts.waiting),
        ("    eligible now", counts.eligible),
    ]
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    out.print(table)


def print_selection(out: Console, selection: CohortSelection, *, as_json: bool = False) -> None:
    if as_json:
        out.print_json(orjson.dumps(selection.as_dict()).decode())
        return
    if selection.run_id is None:
        out.print("nobody is eligible now: no run created")
        return
    table = Table(
        title=f"Run {selection.run_id}: {selection.participants:,} participants selected",
        title_justify="left",
    )
    table.add_column("batch id", justify="right")
    table.add_column("seq", justify="right")
    table.add_column("participants", justify="right")
    table.add_column("first research id")
    for batch in selection.batches:
        table.add_row(str(batch.id), str(batch.seq), str(batch.size), batch.first_research_id)
    out.print(table)
