"""The ``ehrfetch`` command.

Exit status: 0 done; 1 done, but rows were skipped or something needs a look; 2 could
not do what was asked (settings, unreadable file, store). Errors print their cause and
place on standard error, never demographics.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import store
from ehrfetch.cohort.importing import ImportReport, RosterFormat, import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.selection import count_cohort, select_cohort
from ehrfetch.errors import EhrfetchError
from ehrfetch.settings import Settings, load_settings
from ehrfetch.store.engine import remove_sqlite_store
from ehrfetch.terminal import (
    print_batch_result,
    print_counts,
    print_import,
    print_review_items,
    print_selection,
    write_problem_report,
)

app = typer.Typer(
    name="ehrfetch",
    help="Find consented participants' health records across a FHIR network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="The store's schema.", no_args_is_help=True)
participants_app = typer.Typer(help="The program's roster.", no_args_is_help=True)
consents_app = typer.Typer(help="Participants' consents.", no_args_is_help=True)
cohort_app = typer.Typer(help="Who needs records, and who may be tried now.")
app.add_typer(db_app, name="db")
app.add_typer(participants_app, name="participants")
app.add_typer(consents_app, name="consents")
app.add_typer(cohort_app, name="cohort")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class AppContext:
    """What every command needs, built once and only when asked for."""

    config_file: Path | None
    _settings: Settings | None = None
    _engine: Engine | None = None
    _cache: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_file)
        return self._settings

    def engine(self, *, ensure_schema: bool = True) -> Engine:
        if self._engine is None:
            self._engine = store.create_store_engine(self.settings.store)
        if ensure_schema and not self._cache.get("schema_checked"):
            store.ensure_schema(self._engine)
            self._cache["schema_checked"] = True
        return self._engine

    def sessions(self) -> sessionmaker[Session]:
        return store.session_factory(self.engine())

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn ehrfetch's errors into one clear line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except EhrfetchError as exc:
            err.print(f"[bold red]error:[/] {escape(str(exc))}")
            raise typer.Exit(2) from None

    return wrapper


def _ctx(ctx: typer.Context) -> AppContext:
    obj = ctx.find_root().obj
    assert isinstance(obj, AppContext)
    return obj


@app.callback()
def main_options(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Settings file (default: config/ehrfetch.toml when present).",
            dir_okay=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    context = AppContext(config_file=config)
    ctx.obj = context
    ctx.call_on_close(context.close)


# --- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
@handles_errors
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Bring the store's schema up to date (or to REVISION)."""
    app_ctx = _ctx(ctx)
    engine = app_ctx.engine(ensure_schema=False)
    store.upgrade(engine, revision)
    state = store.schema_state(engine)
    out.print(f"{app_ctx.settings.store.display_url()}: schema at revision {state.current}")


@db_app.command("downgrade")
@handles_errors
def db_downgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision ('base' drops everything).")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Take the store's schema back to REVISION. Data in dropped tables is lost."""
    app_ctx = _ctx(ctx)
    where = app_ctx.settings.store.display_url()
    if not yes and not typer.confirm(f"Downgrade {where} to {revision}? Data may be lost"):
        raise typer.Exit(1)
    engine = app_ctx.engine(ensure_schema=False)
    store.downgrade(engine, revision)
    out.print(f"{where}: schema at revision {store.schema_state(engine).current or 'base'}")


@db_app.command("current")
@handles_errors
def db_current(ctx: typer.Context) -> None:
    """Show the store's schema revision and the one this ehrfetch needs."""
    app_ctx = _ctx(ctx)
    state = store.schema_state(app_ctx.engine(ensure_schema=False))
    status = "up to date" if state.up_to_date else "needs `ehrfetch db upgrade`"
    out.print(
        f"{app_ctx.settings.store.display_url()}: revision {state.current or 'none'}, "
        f"head {state.head} ({status})"
    )


# --- imports --------------------------------------------------------------------------

ReportOption = Annotated[
    Path | None,
    typer.Option("--report", help="Write every problem to this CSV file.", dir_okay=False),
]


@participants_app.command("import")
@handles_errors
def participants_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Roster: CSV, or FHIR Patient NDJSON.")],
    fmt: Annotated[
        RosterFormat | None,
        typer.Option("--format", help="csv or ndjson (default: from the file's extension)."),
    ] = None,
    report_file: ReportOption = None,
) -> None:
    """Import or update participants (upsert by research id). See docs/roster-format.md."""
    app_ctx = _ctx(ctx)
    read_ctx = ReadContext.from_settings(app_ctx.settings.roster)
    report = import_roster(file, app_ctx.sessions(), read_ctx, fmt)
    _finish_import(report, "participants", report_file)


@consents_app.command("import")
@handles_errors
def consents_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Consents CSV.")],
    report_file: ReportOption = None,
) -> None:
    """Import or update consents. See docs/roster-format.md."""
    app_ctx = _ctx(ctx)
    read_ctx = ReadContext.from_settings(app_ctx.settings.roster)
    report = import_consents(file, app_ctx.sessions(), read_ctx)
    _finish_import(report, "consents", report_file)


def _finish_import(report: ImportReport, what: str, report_file: Path | None) -> None:
    print_import(out, err, report, what)
    if report_file is not None:
        write_problem_report(report, report_file)
        out.print(f"problems written to {report_file}")
    if not report.ok:
        raise typer.Exit(1)


# --- cohort ---------------------------------------------------------------------------

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@cohort_app.callback(invoke_without_command=True)
@handles_errors
def cohort_show(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Count participants: consented, withdrawn, with EHR, in flight, waiting, eligible."""
    if ctx.invoked_subcommand is not None:
        return
    app_ctx = _ctx(ctx)
    counts = count_cohort(app_ctx.sessions(), app_ctx.settings.cohort, _now())
    print_counts(out, counts, as_json=as_json)


@cohort_app.command("select")
@handles_errors
def cohort_select(
    ctx: typer.Context,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many.")] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Participants per batch (default: settings).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Select eligible participants into a new run of persisted, pending batches."""
    app_ctx = _ctx(ctx)
    selection = select_cohort(
        app_ctx.sessions(), app_ctx.settings.cohort, _now(), limit=limit, batch_size=batch_size
    )
    print_selection(out, selection, as_json=as_json)


# --- review ---------------------------------------------------------------------------

review_app = typer.Typer(help="The review queue: candidates ehrfetch would not decide alone.")
app.add_typer(review_app, name="review")


@review_app.command("list")
@handles_errors
def review_list(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: JsonOption = False,
) -> None:
    """Links waiting for an operator, oldest first (research ids and reasons only)."""
    from ehrfetch.store.links import review_queue

    with _ctx(ctx).sessions()() as session:
        items = review_queue(session, limit)
    print_review_items(out, items, as_json=as_json)


@review_app.command("show")
@handles_errors
def review_show(
    ctx: typer.Context,
    link_id: Annotated[int, typer.Argument(help="Link id (from `review list`).")],
    as_json: JsonOption = False,
) -> None:
    """One link: the organization, the network's grade, ehrfetch's score and reasons."""
    from ehrfetch.store.links import review_item

    with _ctx(ctx).sessions()() as session:
        item = review_item(session, link_id)
    print_review_items(out, [item], as_json=as_json, detail=True)


def _decide(ctx: typer.Context, link_id: int, decision: str) -> None:
    from ehrfetch.store.links import decide_link
    from ehrfetch.store.tables import LinkDecision

    with _ctx(ctx).sessions().begin() as session:
        item = decide_link(session, link_id, LinkDecision(decision), _now())
    out.print(
        f"link {item.link_id} ({item.research_id} at {item.organization_id}): {decision}ed"
        + (" — documents are retrieved on the next run" if decision == "accept" else "")
    )


@review_app.command("accept")
@handles_errors
def review_accept(ctx: typer.Context, link_id: int) -> None:
    """Accept a candidate: it is the participant. The next run retrieves its documents."""
    _decide(ctx, link_id, "accept")


@review_app.command("reject")
@handles_errors
def review_reject(ctx: typer.Context, link_id: int) -> None:
    """Reject a candidate: it is not the participant, whatever later runs score."""
    _decide(ctx, link_id, "reject")


# --- match-check ----------------------------------------------------------------------


@app.command("match-check")
@handles_errors
def match_check(
    file: Annotated[
        Path,
        typer.Argument(help="NDJSON deck: {participant, candidates} per line; - for stdin."),
    ],
) -> None:
    """Decide a deck of participants and candidates offline, one NDJSON line each.

    Output: {"id", "decision", "candidate", "reasons"} per input line on stdout; an
    unreadable line gets {"line", "error"} on stderr and the rest goes on (exit 1).
    """
    from ehrfetch.errors import InputFileError
    from ehrfetch.matching.check import run_match_check

    if str(file) == "-":
        bad = run_match_check(sys.stdin.buffer, sys.stdout, err=sys.stderr)
    else:
        try:
            handle = file.open("rb")
        except OSError as exc:
            raise InputFileError(file, f"cannot open: {exc.strerror}") from None
        with handle:
            bad = run_match_check(handle, sys.stdout, err=sys.stderr)
    sys.stdout.flush()
    if bad:
        raise typer.Exit(1)


# --- batch ----------------------------------------------------------------------------

batch_app = typer.Typer(help="Batches of a run.", no_args_is_help=True)
app.add_typer(batch_app, name="batch")


@batch_app.command("run")
@handles_errors
def batch_run(
    ctx: typer.Context,
    batch_id: Annotated[int, typer.Argument(help="Batch id (from `cohort select`).")],
    again: Annotated[
        bool, typer.Option("--again", help="Re-open a finished batch's failed attempts first.")
    ] = False,
) -> None:
    """Acquire the participants of one batch against the network in the settings."""
    import asyncio

    from ehrfetch.batch import run_batch
    from ehrfetch.store.batches import reopen_batch

    app_ctx = _ctx(ctx)
    sessions = app_ctx.sessions()
    if again:
        with sessions.begin() as session:
            reopen_batch(session, batch_id)
    result = asyncio.run(run_batch(batch_id, app_ctx.settings, sessions))
    print_batch_result(out, result)
    if result.status.value != "succeeded":
        raise typer.Exit(1)


def print_figures(title: str, figures: dict[str, Any], *, as_json: bool) -> None:
    """A benchmark's figures: JSON for machines, a two-column table for people."""
    if as_json:
        out.print_json(orjson.dumps(figures).decode())
        return
    table = Table(title=title, show_header=False, title_justify="left")
    for key, value in figures.items():
        text = (
            f"{value:,.5g}"
            if isinstance(value, float)
            else (f"{value:,}" if isinstance(value, int) else str(value))
        )
        table.add_row(key, text)
    out.print(table)


# --- bench --------------------------------------------------------------------------

bench_app = typer.Typer(help="Benchmarks: print measured figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("import")
@handles_errors
def bench_import(
    ctx: typer.Context,
    rows: Annotated[int, typer.Option(min=1, help="Synthetic roster rows.")] = 100_000,
    workdir: Annotated[
        Path, typer.Option(help="Folder for the roster and a fresh SQLite store.", file_okay=False)
    ] = Path(".bench"),
    use_configured_store: Annotated[
        bool,
        typer.Option(
            "--use-configured-store", help="Import into store.url instead of a fresh SQLite file."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Time the import of a synthetic roster (first import, then an unchanged re-import)."""
    from ehrfetch.bench.roster_import import as_dict, run_import_bench

    app_ctx = _ctx(ctx)
    workdir.mkdir(parents=True, exist_ok=True)
    if use_configured_store:
        store_settings = app_ctx.settings.store
    else:
        db = workdir / "bench.db"
        remove_sqlite_store(db)
        store_settings = app_ctx.settings.store.model_copy(update={"url": f"sqlite:///{db}"})
    engine = store.create_store_engine(store_settings)
    try:
        store.ensure_schema(engine)
        read_ctx = ReadContext.from_settings(app_ctx.settings.roster)
        result = run_import_bench(
            store.session_factory(engine), store_settings.display_url(), rows, workdir, read_ctx
        )
    finally:
        engine.dispose()
    print_figures("Roster import", as_dict(result), as_json=as_json)


@bench_app.command("match")
@handles_errors
def bench_match(
    ctx: typer.Context,
    participants: Annotated[int, typer.Option(min=10, help="Roster size.")] = 2000,
    workdir: Annotated[
        Path, typer.Option(help="Folder for the roster and the store.", file_okay=False)
    ] = Path(".bench/match"),
    network_config: Annotated[
        Path, typer.Option(help="The mock network's settings.", dir_okay=False)
    ] = Path("config/mock_network.toml"),
    as_json: JsonOption = False,
) -> None:
    """Score ehrfetch's match decisions against the mock network's truth."""
    import sys

    from ehrfetch.bench.match import as_dict, run_match_bench

    logging.getLogger("ehrfetch").setLevel(logging.ERROR)
    result = run_match_bench(
        _ctx(ctx).settings, workdir, participants, network_config, " ".join(sys.argv[1:])
    )
    figures = as_dict(result)
    if not as_json:
        figures = {**figures.pop("score"), **figures}  # one flat table for a terminal
    print_figures("Match quality", figures, as_json=as_json)


@bench_app.command("ccda")
@handles_errors
def bench_ccda(
    folder: Annotated[
        Path, typer.Argument(help="A folder of C-CDA documents (searched recursively).")
    ] = Path("../shared/ccda-examples"),
    per_file: Annotated[bool, typer.Option("--per-file", help="Also one row per file.")] = False,
) -> None:
    """C-CDA coverage: coded entries per section kind, and how many became FHIR R4."""
    from ehrfetch.bench.ccda_coverage import ccda_coverage, format_report
    from ehrfetch.errors import InputFileError

    if not folder.is_dir():
        raise InputFileError(folder, "not a folder")
    out.print(format_report(ccda_coverage(folder), per_file=per_file), markup=False)


@bench_app.command("export")
@handles_errors
def bench_export(
    resources: Annotated[
        int, typer.Option(min=1, help="Synthetic resources to export.")
    ] = 1_000_000,
    workdir: Annotated[
        Path,
        typer.Option(help="Folder for the store and the export (emptied first).", file_okay=False),
    ] = Path(".bench/export"),
    as_json: JsonOption = False,
) -> None:
    """Fill a fresh SQLite store with N resources, export them as NDJSON, report memory."""
    from ehrfetch.bench.export import as_dict, run_export_bench

    print_figures("NDJSON export", as_dict(run_export_bench(workdir, resources)), as_json=as_json)


@bench_app.command("normalize")
@handles_errors
def bench_normalize(
    seconds: Annotated[
        float | None,
        typer.Option(min=0, help="Time budget per input group (default 10; at least 3 rounds)."),
    ] = None,
    rounds: Annotated[
        int | None, typer.Option(min=1, help="Timed rounds per input group, instead of --seconds.")
    ] = None,
    bundles: Annotated[int, typer.Option(min=1, help="Synthetic FHIR Bundles.")] = 200,
    fhir_dir: Annotated[
        Path | None,
        typer.Option(help="Read FHIR Bundles (*.json) from here instead.", file_okay=False),
    ] = None,
    ccda_dir: Annotated[
        Path, typer.Option(help="A folder of C-CDA documents (searched recursively).")
    ] = Path("../shared/ccda-examples"),
    as_json: JsonOption = False,
) -> None:
    """Normalization throughput (FHIR Bundles, C-CDA) against parsing the same bytes."""
    from ehrfetch.bench.normalize import Budget, as_dict, flat, run_normalize_bench
    from ehrfetch.errors import InputFileError

    if seconds is not None and rounds is not None:
        raise typer.BadParameter("give --seconds or --rounds, not both")
    for folder in (ccda_dir, fhir_dir):
        if folder is not None and not folder.is_dir():
            raise InputFileError(folder, "not a folder")
    result = run_normalize_bench(
        ccda_dir, budget=Budget(rounds=rounds, seconds=seconds), bundles=bundles, fhir_dir=fhir_dir
    )
    figures = as_dict(result)
    print_figures("Normalization", figures if as_json else flat(figures), as_json=as_json)


# --- demo -----------------------------------------------------------------------------


@app.command("demo")
@handles_errors
def demo(
    ctx: typer.Context,
    workdir: Annotated[
        Path,
        typer.Option(
            help="Folder for the demo's store and roster (emptied first).", file_okay=False
        ),
    ] = Path("demo"),
    participants: Annotated[int, typer.Option(min=1, help="Roster size.")] = 200,
    batch_size: Annotated[int, typer.Option(min=1, help="Participants per batch.")] = 50,
    network_config: Annotated[
        Path, typer.Option(help="The mock network's settings.", dir_okay=False)
    ] = Path("config/mock_network.toml"),
) -> None:
    """Run the whole acquisition against the mock network on 127.0.0.1."""
    from ehrfetch.demo import run_demo

    run_demo(
        _ctx(ctx).settings,
        workdir,
        out,
        participants=participants,
        batch_size=batch_size,
        network_config=network_config,
    )


def _now() -> datetime:
    return datetime.now(UTC)


def main() -> None:
    app()


__all__ = ["app", "main"]

import ehrfetch.cli_bench  # noqa: E402 - registers bench throughput
import ehrfetch.cli_consents  # noqa: E402 - registers commands
import ehrfetch.cli_export  # noqa: E402,F401 - registers export, convert
from ehrfetch import cli_runs  # noqa: E402,F401 - registers run, rerun, status, serve
