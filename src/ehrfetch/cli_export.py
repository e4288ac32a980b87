"""``ehrfetch export`` and ``ehrfetch convert``.

Registered on :data:`ehrfetch.cli.app` (which imports this module at its end). Exit
status as for every command: 0 done; 1 done, but something was left out (an invalid
line not exported, an entry of a converted document skipped); 2 could not do it (bad
``--since``, unknown research id, a folder already holding an export, an unreadable
document, the store).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, cast

import orjson
import typer
from rich.markup import escape
from rich.table import Table

from ehrfetch.cli import _ctx, app, handles_errors, out
from ehrfetch.errors import DocumentError, InputFileError
from ehrfetch.export import MANIFEST, export_ndjson
from ehrfetch.normalize.fhir_bundle import NormalizedDocument, normalize_bundle
from ehrfetch.runs import parse_since
from ehrfetch.store.export import ExportScope

CCDA_MODULE = "ehrfetch.normalize.ccda"
CCDA_MISSING = "C-CDA conversion not available yet (ehrfetch.normalize.ccda is not installed)"
DEFAULT_CONVERT_PARTICIPANT = "local"


class ExportFormat(StrEnum):
    NDJSON = "ndjson"


@app.command("export")
@handles_errors
def export(
    ctx: typer.Context,
    out_dir: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the NDJSON files and manifest.json.", file_okay=False
        ),
    ],
    fmt: Annotated[
        ExportFormat, typer.Option("--format", help="Output format (FHIR Bulk Data NDJSON).")
    ] = ExportFormat.NDJSON,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only what was created or updated since: 2d, 12h, 30m, or an ISO 8601 date "
            "or time (UTC unless an offset is given).",
        ),
    ] = None,
    participant: Annotated[
        str | None, typer.Option("--participant", help="Only this research id.")
    ] = None,
    with_demographics: Annotated[
        bool,
        typer.Option(
            "--with-demographics",
            help="Put names, birth date, gender, address and telecom in Patient.ndjson "
            "(default: the research id only).",
        ),
    ] = False,
) -> None:
    """Export the store's FHIR resources in the FHIR Bulk Data layout.

    One {ResourceType}.ndjson per type, Patient (pseudonymous unless --with-demographics)
    and Provenance included, and manifest.json shaped like a Bulk Data $export completion
    response. Every line is validated with fhir.resources (R4B) before it is written.
    """
    app_ctx = _ctx(ctx)
    now = datetime.now(UTC)
    scope = ExportScope(
        since=parse_since(since, now) if since is not None else None, research_id=participant
    )
    request = _request(fmt, out_dir, since, participant, with_demographics)
    engine = app_ctx.engine()
    # One transaction for every query: on PostgreSQL a REPEATABLE READ snapshot, so the
    # files agree with each other and with transactionTime even while a run writes.
    options = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name == "postgresql" else {}
    with app_ctx.sessions()() as session:
        session.connection(execution_options=options)
        result = export_ndjson(
            session,
            out_dir,
            scope=scope,
            demographics=with_demographics,
            research_id_system=app_ctx.settings.roster.research_id_system,
            request=request,
            now=now,
        )
    table = Table(title=f"Exported to {escape(str(out_dir))}", title_justify="left")
    table.add_column("type")
    table.add_column("file")
    table.add_column("lines", justify="right")
    for f in result.output:
        table.add_row(f.type, f.url, f"{f.count:,}")
    out.print(table if result.output else f"nothing to export; {MANIFEST} written")
    if result.invalid:
        out.print(
            f"[bold yellow]{result.invalid:,} resource(s) did not validate and were left out[/]"
            f" — see {escape(result.errors[0].url)}"
        )
        raise typer.Exit(1)


def _request(
    fmt: ExportFormat,
    out_dir: Path,
    since: str | None,
    participant: str | None,
    with_demographics: bool,
) -> str:
    parts = ["ehrfetch export", f"--format {fmt.value}", f"--out {out_dir}"]
    if since is not None:
        parts.append(f"--since {since}")
    if participant is not None:
        parts.append(f"--participant {participant}")
    if with_demographics:
        parts.append("--with-demographics")
    return " ".join(parts)


@app.command("convert")
@handles_errors
def convert(
    file: Annotated[
        Path, typer.Argument(help="A FHIR Bundle (JSON) or a C-CDA document (XML).", dir_okay=False)
    ],
    participant_id: Annotated[
        str,
        typer.Option(
            "--participant-id",
            help="Research id the resources are about (their ids and Patient references).",
        ),
    ] = DEFAULT_CONVERT_PARTICIPANT,
) -> None:
    """Convert one local document: FHIR resources as NDJSON on stdout, skips on stderr.

    What ehrfetch would store from a document a site sent, without a store or a network.
    No patient check: the document's patient is taken as the participant.
    """
    try:
        body = file.read_bytes()
    except OSError as exc:
        raise InputFileError(file, f"cannot read: {exc.strerror}") from None
    document = _convert(file, body, participant_id)
    for resource in document.resources:
        sys.stdout.write(orjson.dumps(resource.body).decode() + "\n")
    sys.stdout.flush()
    for skipped in document.skipped:
        kind = f" ({skipped.resource_type})" if skipped.resource_type else ""
        sys.stderr.write(f"skipped entry {skipped.index}{kind}: {skipped.reason}\n")
    sys.stderr.write(
        f"{file}: {len(document.resources)} resource(s), {len(document.skipped)} skipped\n"
    )
    if document.skipped:
        raise typer.Exit(1)


def _convert(file: Path, body: bytes, research_id: str) -> NormalizedDocument:
    start = body.removeprefix(b"\xef\xbb\xbf").lstrip()[:1]
    try:
        if start == b"<":
            normalize_ccda = _ccda_converter()
            if normalize_ccda is None:
                raise InputFileError(file, CCDA_MISSING)
            return normalize_ccda(body, research_id=research_id, patient_id=None)
        if start != b"{":
            raise InputFileError(file, "neither a FHIR Bundle (JSON) nor a C-CDA document (XML)")
        return normalize_bundle(
            body.removeprefix(b"\xef\xbb\xbf"), research_id=research_id, patient_id=None
        )
    except DocumentError as exc:
        raise InputFileError(file, str(exc)) from None


def _ccda_converter() -> Callable[..., NormalizedDocument] | None:
    """``normalize_ccda`` when ``ehrfetch.normalize.ccda`` exists (imported on first use)."""
    try:
        module = importlib.import_module(CCDA_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != CCDA_MODULE:
            raise  # the module exists but something it imports does not: a real bug
        return None
    return cast(Callable[..., NormalizedDocument], module.normalize_ccda)
