"""``ehrfetch run``, ``rerun``, ``status`` and ``serve``: runs from the command line.

Registered on the ``ehrfetch`` app when ``ehrfetch.cli`` imports this module. ``run``
and ``rerun`` run the Prefect flows in this process (against the Prefect server in
``PREFECT_API_URL``, or a temporary local one when none is set), so a run started here
looks in the Prefect UI like a scheduled one. ``status`` reads the store only.

Exit status as for every command: 0 done; 1 done, but some participants or batches
failed; 2 could not run. Prefect is imported only by the commands that need it.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ehrfetch import runs
from ehrfetch.cli import AppContext, JsonOption, _ctx, app, err, handles_errors, out
from ehrfetch.errors import Interrupted

TEMPORARY_SERVER_STARTUP_S = 120
"""How long a run waits for its temporary Prefect server to start. Prefect's own 20 s
were too short on a busy machine (a run beside another run, or a test suite): the run
failed before it began ("Timed out while attempting to connect to ephemeral Prefect API
server")."""


def patient_temporary_server() -> None:
    """Before Prefect is imported: give its temporary server time to start, unless the
    operator set ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``."""
    os.environ.setdefault(
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(TEMPORARY_SERVER_STARTUP_S)
    )


OrgOption = Annotated[
    list[str] | None,
    typer.Option("--org", help="Query only this organization id (repeat for more)."),
]


@app.command("run")
@handles_errors
def run_command(
    ctx: typer.Context,
    limit: Annotated[
        int | None, typer.Option(min=1, help="At most this many participants.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Participants per batch (default: settings).")
    ] = None,
    org: OrgOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Discover and decide only; fetch no documents.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Acquire every eligible participant now (the acquire-ehr flow, in this process).

    Batches a killed run left open are released first and their participants taken again.
    """
    patient_temporary_server()
    from flows.acquire import acquire_ehr

    app_ctx = _ctx(ctx)
    app_ctx.sessions()  # settings and store checked before Prefect starts: exit 2 on error
    with stoppable(as_json), showing_progress(out):
        summary = asyncio.run(
            acquire_ehr(
                limit=limit,
                batch_size=batch_size,
                organizations=org,
                dry_run=dry_run,
                config_file=config_argument(app_ctx),
            )
        )
    finish(summary, as_json, nothing="nobody is eligible now: no run was recorded")


@app.command("rerun")
@handles_errors
def rerun_command(
    ctx: typer.Context,
    failed: Annotated[
        bool, typer.Option("--failed", help="Re-run failed, partial and stale batches.")
    ] = False,
    run_id: Annotated[int | None, typer.Option("--run", help="Only this run's batches.")] = None,
    batch: Annotated[
        list[int] | None, typer.Option("--batch", help="Only this batch (repeat for more).")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only batches finished since: a duration (2d, 12h) or ISO date."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Re-run what failed (only failed attempts are redone), with the rerun-failed flow."""
    if not failed:
        # Explicit: re-running is only ever about what failed; the flag says so.
        raise typer.BadParameter("say --failed", param_hint="--failed")
    patient_temporary_server()
    from flows.rerun import rerun_failed

    app_ctx = _ctx(ctx)
    app_ctx.sessions()
    if since is not None:
        runs.parse_since(since, runs.utcnow())  # a bad value is exit 2 before any work
    with stoppable(as_json), showing_progress(out):
        summary = asyncio.run(
            rerun_failed(
                run_id=run_id,
                batch_ids=batch,
                since=since,
                config_file=config_argument(app_ctx),
            )
        )
    finish(summary, as_json, nothing="no failed, partial or stale batch to re-run")


@app.command("status")
@handles_errors
def status_command(
    ctx: typer.Context,
    run_id: Annotated[int | None, typer.Option("--run", help="Also this run's summary.")] = None,
    last: Annotated[int, typer.Option(min=1, help="How many recent runs to list.")] = 5,
    as_json: JsonOption = False,
) -> None:
    """Where participants stand, why they failed, the last runs, batches still open."""
    app_ctx = _ctx(ctx)
    report = runs.status_report(
        app_ctx.sessions(),
        run_id=run_id,
        last=last,
        stale_after=runs.stale_after(app_ctx.settings),
        now=runs.utcnow(),
    )
    if as_json:
        out.print_json(orjson.dumps(report.as_dict()).decode())
        return
    print_status(out, report)


@app.command("serve")
@handles_errors
def serve_command(ctx: typer.Context) -> None:
    """Serve acquire-ehr (on settings' orchestration.schedule_cron) and rerun-failed.

    Needs a Prefect server: `prefect server start`, and PREFECT_API_URL pointing at it.
    """
    from flows.deploy import require_server, serve_deployments

    app_ctx = _ctx(ctx)
    settings = app_ctx.settings
    app_ctx.sessions()
    require_server()
    orchestration = settings.orchestration
    out.print(
        f"serving acquire-ehr/nightly ({orchestration.schedule_cron}, "
        f"{orchestration.timezone}) and rerun-failed/on-demand; Ctrl-C stops"
    )
    asyncio.run(serve_deployments(settings, config_argument(app_ctx)))


def config_argument(app_ctx: AppContext) -> str | None:
    """The settings file for the flow, absolute: a flow reads settings itself."""
    return str(Path(app_ctx.config_file).resolve()) if app_ctx.config_file else None


def finish(summary: runs.RunSummary | None, as_json: bool, *, nothing: str) -> None:
    if summary is None:
        if as_json:
            out.print_json("null")
        else:
            out.print(nothing)
        return
    show_summary(summary, as_json)
    if summary.has_failures:
        raise typer.Exit(1)


def show_summary(summary: runs.RunSummary, as_json: bool) -> None:
    if as_json:
        out.print_json(orjson.dumps(summary.as_dict()).decode())
    else:
        print_summary(out, summary)


# --- stopping -------------------------------------------------------------------------


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt."""


@contextmanager
def stoppable(as_json: bool) -> Iterator[None]:
    """SIGTERM stops a run as Ctrl-C does; either ends it with a message, not a traceback.

    While batches run, the flow stops them cleanly and raises ``Interrupted`` with the
    run's summary (``flows._stopping``): printed, with how to re-run what is left.
    Before and after (Prefect starting, the run being planned) SIGTERM raises here like
    Ctrl-C, so ``finally`` blocks and exit hooks still run: the temporary Prefect server
    stops with the command. That server is started here, deaf to Ctrl-C (see
    ``_start_temporary_server_deaf_to_ctrl_c``). Exit status 128 + the signal's number,
    as a shell reports it.
    """
    from prefect.exceptions import TerminationSignal  # Prefect's SIGTERM inside a flow

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        _start_temporary_server_deaf_to_ctrl_c()
        yield
    except Interrupted as stopped:
        summary = stopped.summary
        if isinstance(summary, runs.RunSummary):
            show_summary(summary, as_json)  # in a table, with how to re-run what failed
        err.print(f"[bold yellow]{escape(str(stopped))}[/]")
        if isinstance(summary, runs.RunSummary) and summary.has_failures and as_json:
            err.print("re-run what failed: ehrfetch rerun --failed" + _run_hint(summary))
        raise typer.Exit(stopped.exit_code) from None
    except (KeyboardInterrupt, TerminationSignal) as stopped:
        which = signal.SIGINT if type(stopped) is KeyboardInterrupt else signal.SIGTERM
        err.print(
            f"[bold yellow]stopped:[/] {which.name} while the run was starting or "
            "finishing; ehrfetch status shows what is still open"
        )
        raise typer.Exit(128 + which.value) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_temporary_server_deaf_to_ctrl_c() -> None:
    """Start Prefect's temporary server (unless ``PREFECT_API_URL`` names one) with SIGINT
    blocked, which the server process inherits.

    Ctrl-C at a terminal goes to every process of the foreground group: the temporary
    server, a child of this one, stopped at once, and the run, still reporting to it,
    waited on it for ever. With SIGINT blocked from its start the server never sees
    Ctrl-C; it still stops with this process (``SIGTERM`` from Prefect's exit hook), and
    a SIGKILL of the group still kills it. Prefect starts the same server (one per
    process) on first use: this only starts it earlier.
    """
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        SubprocessASGIServer().start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)


# --- progress -------------------------------------------------------------------------


@contextmanager
def showing_progress(console: Console) -> Iterator[None]:
    """A progress bar on a terminal; a plain line per finished batch otherwise."""
    if console.is_terminal:
        bar = Progress(
            TextColumn("[bold]batches"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[participants]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        task = bar.add_task("batches", total=None, participants="")

        def show(progress: runs.Progress) -> None:
            bar.update(
                task,
                total=progress.batches,
                completed=progress.batches_done,
                participants=(
                    f"{progress.participants_done:,}/{progress.participants:,} participants"
                ),
            )

        hook = show
        with bar:
            runs.progress_hooks.append(hook)
            try:
                yield
            finally:
                runs.progress_hooks.remove(hook)
        return

    def line(progress: runs.Progress) -> None:
        console.print(
            f"batches {progress.batches_done}/{progress.batches}, participants "
            f"{progress.participants_done}/{progress.participants}"
        )

    runs.progress_hooks.append(line)
    try:
        yield
    finally:
        runs.progress_hooks.remove(line)


# --- printing -------------------------------------------------------------------------


def _counts_table(title: str, counts: dict[str, int], what: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(what)
    table.add_column("count", justify="right")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    return table


def print_summary(console: Console, summary: runs.RunSummary) -> None:
    heading = summary.title + (f": {summary.status}" if summary.status else "")
    if summary.duration_s is not None:
        heading += f" in {summary.duration_s:.0f} s"
    console.rule(heading)
    console.print(_counts_table("Participants", summary.participants, "outcome"))
    console.print(_counts_table("Batches", summary.batches, "status"))
    if summary.failures:
        console.print(_counts_table("Errors", summary.failures, "code"))
    stored = sum(d["count"] for d in summary.documents if d["status"] == "stored")
    quarantined = sum(d["count"] for d in summary.documents if d["status"] != "stored")
    documents = Table(title="Documents and resources", title_justify="left", show_header=False)
    documents.add_row("documents stored", f"{stored:,}")
    documents.add_row("documents quarantined", f"{quarantined:,}")
    for kind, count in summary.resources_by_type.items():
        documents.add_row(f"resources: {kind}", f"{count:,}")
    console.print(documents)
    if summary.has_failures:
        console.print("re-run what failed: ehrfetch rerun --failed" + _run_hint(summary))


def _run_hint(summary: runs.RunSummary) -> str:
    return f" --run {summary.run_id}" if summary.run_id is not None else ""


def print_status(console: Console, report: runs.StatusReport) -> None:
    console.print(_counts_table("Participants (latest attempt)", report.participants, "outcome"))
    if report.failures:
        console.print(_counts_table("Failed, by reason", report.failures, "error code"))
    table = Table(title="Last runs", title_justify="left")
    for column in ("run", "kind", "status", "started", "finished", "batches", "participants"):
        table.add_column(column, justify="right" if column in ("run", "batches") else "left")
    for r in report.runs:
        table.add_row(
            str(r.id),
            r.kind,
            r.status,
            r.started_at.strftime("%Y-%m-%d %H:%M"),
            r.finished_at.strftime("%Y-%m-%d %H:%M") if r.finished_at else "-",
            str(r.batches),
            f"{r.participants:,}",
        )
    console.print(table)
    if report.open_batches:
        still = Table(title="Batches still open", title_justify="left")
        for column in ("batch", "run", "status", "done", "tries", "heartbeat"):
            still.add_column(column)
        for b in report.open_batches:
            beat = b.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S") if b.heartbeat_at else "-"
            stale = " [yellow](stale)[/]" if b.id in report.stale_batches else ""
            still.add_row(
                str(b.id), str(b.run_id), b.status + stale, f"{b.done}/{b.size}", str(b.tries), beat
            )
        console.print(still)
        if report.stale_batches:
            console.print("stale batches are re-run by: ehrfetch rerun --failed")
    else:
        console.print("no batch is open")
    if report.run is not None:
        print_summary(console, report.run)
