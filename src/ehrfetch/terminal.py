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

from ehrfetch.batch import BatchResult
from ehrfetch.cohort.importing import ImportReport
from ehrfetch.cohort.selection import CohortSelection
from ehrfetch.store.cohort import CohortCounts
from ehrfetch.store.links import ReviewItem

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


def print_review_items(
    out: Console, items: list[ReviewItem], *, as_json: bool = False, detail: bool = False
) -> None:
    if as_json:
        rows = [
            {
                "link": i.link_id,
                "research_id": i.research_id,
                "organization": i.organization_id,
                "network_patient_id": i.network_patient_id,
                "grade": i.grade,
                "score": i.score,
                "decision": i.decision.value,
                "decided_by": i.decided_by.value,
                "reasons": list(i.reasons),
                "decided_at": i.decided_at.isoformat(),
            }
            for i in items
        ]
        out.print_json(orjson.dumps(rows).decode())
        return
    if not items:
        out.print("the review queue is empty")
        return
    table = Table(title=f"{len(items)} link(s)", title_justify="left")
    for column in ("link", "research id", "organization", "grade", "score", "decision", "reasons"):
        table.add_column(column, justify="right" if column in ("link", "score") else "left")
    for i in items:
        reasons = "\n".join(i.reasons) if detail else ", ".join(r for r in i.reasons if ":" in r)
        table.add_row(
            str(i.link_id),
            i.research_id,
            i.organization_id,
            i.grade or "-",
            f"{i.score:.1f}",
            f"{i.decision.value} ({i.decided_by.value})",
            escape(reasons),
        )
    out.print(table)


def print_batch_result(out: Console, result: BatchResult) -> None:
    table = Table(
        title=f"Batch {result.batch_id}: {result.status.value}",
        title_justify="left",
        show_header=False,
    )
    for outcome, count in sorted(result.outcomes.items()):
        table.add_row(outcome, f"{count:,}")
    table.add_row("documents stored", f"{result.documents:,}")
    table.add_row("resources", f"{result.resources:,}")
    for code, count in sorted(result.errors.items()):
        table.add_row(f"error: {code}", f"{count:,}")
    out.print(table)
