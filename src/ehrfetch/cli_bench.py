"""``ehrfetch bench throughput``: registered on the ``bench`` group by ``ehrfetch.cli``."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import orjson
import typer

from ehrfetch.cli import JsonOption, _ctx, bench_app, handles_errors, out, print_figures

_SECRET_PARTS = ("PASSWORD", "PRIVATE_KEY", "SECRET", "TOKEN")


def reproducible_command(argv: list[str], environ: Mapping[str, str]) -> str:
    """The command line with the ``EHRFETCH__`` settings it ran under — never secrets."""
    settings = [
        f"{key}={shlex.quote(value)}"
        for key, value in sorted(environ.items())
        if key.startswith("EHRFETCH__") and not any(part in key for part in _SECRET_PARTS)
    ]
    return " ".join([*settings, "ehrfetch", *(shlex.quote(a) for a in argv)])


@bench_app.command("throughput")
@handles_errors
def bench_throughput(
    ctx: typer.Context,
    participants: Annotated[int, typer.Option(min=10, help="Roster size N.")] = 30_000,
    organizations: Annotated[int, typer.Option(min=1, max=10, help="Member organizations K.")] = 5,
    profile: Annotated[
        Literal["lan", "wan"],
        typer.Option(help="lan: no delay, no limit; wan: 200-800 ms and a rate per org."),
    ] = "lan",
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Write every figure as JSON here.", dir_okay=False)
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(help="Append the figures as a Markdown section to this file.", dir_okay=False),
    ] = Path("docs/benchmarks.md"),
    no_record: Annotated[
        bool, typer.Option("--no-record", help="Do not append to any Markdown file.")
    ] = False,
    limit_seconds: Annotated[
        float, typer.Option(min=1, help="How long the plain client measures the HTTP limit.")
    ] = 20.0,
    workdir: Annotated[
        Path, typer.Option(help="Folder for the network, roster, store and logs.", file_okay=False)
    ] = Path(".bench/throughput"),
    store_url: Annotated[
        str | None,
        typer.Option(help="Store to use instead of a fresh SQLite file (it must be empty)."),
    ] = None,
    profile_to: Annotated[
        Path | None,
        typer.Option(
            "--profile-to",
            help="Sample the pipeline with py-spy into this file (collapsed stacks).",
            dir_okay=False,
        ),
    ] = None,
    profile_all_threads: Annotated[
        bool,
        typer.Option(
            "--profile-all-threads",
            help="Sample every busy thread (waits included), not only the one holding the GIL.",
        ),
    ] = False,
    stop_after: Annotated[
        float | None,
        typer.Option(
            "--stop-after",
            min=1,
            help="Stop the run (SIGTERM) this many seconds after its batches began and "
            "report what it did: a large cohort measured for a bounded time.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The whole acquisition (`ehrfetch run`, Prefect included) against the mock network,
    with the HTTP and validation limits measured in the same run."""
    from ehrfetch.bench.throughput import as_dict, markdown, run_throughput_bench

    command = reproducible_command(sys.argv[1:], os.environ)
    result = run_throughput_bench(
        _ctx(ctx).settings,
        workdir,
        participants=participants,
        organizations=organizations,
        profile_name=profile,
        command=command,
        limit_seconds=limit_seconds,
        store_url=store_url,
        profile_to=profile_to,
        profile_all_threads=profile_all_threads,
        stop_after_s=stop_after,
    )
    figures = as_dict(result)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    if record is not None and not no_record:
        with record.open("a") as fh:
            fh.write("\n" + markdown(result))
    flat = {
        f"{group}.{key}" if isinstance(values, dict) else group: value
        for group, values in figures.items()
        for key, value in (values.items() if isinstance(values, dict) else [(group, values)])
        if not isinstance(value, dict)
    }
    print_figures("Throughput", figures if as_json else flat, as_json=as_json)
    if profile_to is not None and profile_to.exists():
        from ehrfetch.bench.throughput import ehrfetch_hotspots, top_of_profile

        out.print("top of the profile (share of samples on top of the stack):")
        for frame, share in top_of_profile(profile_to):
            out.print(f"  {100 * share:5.1f} %  {frame}", markup=False, highlight=False)
        out.print("ehrfetch's functions (share of samples in them and what they call):")
        for frame, share in ehrfetch_hotspots(profile_to):
            out.print(f"  {100 * share:5.1f} %  {frame}", markup=False, highlight=False)
    if "stopped_after_s" in result.pipeline:
        out.print(
            f"[yellow]the run was stopped after {result.pipeline['stopped_after_s']} s of "
            f"batches, as --stop-after asked: the figures are of what it did[/]"
        )
    elif result.pipeline.get("exit_code") not in (0, None):
        out.print("[yellow]the pipeline finished with failed participants (exit 1)[/]")
