"""``ehrfetch consents withdraw``: record a withdrawal and purge what was acquired.

Registered on ``consents_app`` of :mod:`ehrfetch.cli` (which imports this module at
its end). Exit status as for every command: 0 done, 1 not confirmed (nothing changed),
2 could not do it (unknown research id, no consent of that type, bad time, store).
Output names the research id and counts, never demographics.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from ehrfetch.cli import _ctx, consents_app, err, handles_errors, out
from ehrfetch.cohort.fields import FieldProblem, timestamp
from ehrfetch.store.purge import (
    ConsentChange,
    PurgeCounts,
    WithdrawalResult,
    acquired_counts,
    withdraw_consent,
)


@consents_app.command("withdraw")
@handles_errors
def consents_withdraw(
    ctx: typer.Context,
    research_id: Annotated[str, typer.Argument(help="The participant's research id.")],
    consent_type: Annotated[
        str | None,
        typer.Option("--type", help="Consent type (default: cohort.consent_type, 'ehr')."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="When the participant withdrew: ISO 8601 date or date-time, UTC unless an "
            "offset is given (default: now).",
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Withdraw a participant's consent and purge everything acquired for them.

    Purges their patient links, documents (with their bytes), resources, lineage,
    provenance and quarantine records; closes their pending attempts as withdrawn; keeps
    the roster, the consents and the audit trail, plus one audit row for this purge.
    Running it again for a withdrawn participant purges whatever is left (nothing, after
    a first run) — also the way to finish a withdrawal that came in by `consents import`.
    """
    app_ctx = _ctx(ctx)
    now = datetime.now(UTC)
    kind = consent_type or app_ctx.settings.cohort.consent_type
    withdrawn_at = _parse_at(at, now)
    sessions = app_ctx.sessions()
    if not yes:
        with sessions() as session:
            pending = acquired_counts(session, research_id)
        # typer.confirm prints plain text: no rich markup to escape here.
        question = (
            f"Withdraw {research_id}'s '{kind}' consent and purge {_describe(pending)}? "
            "This cannot be undone"
        )
        if not typer.confirm(question):
            err.print("nothing changed")
            raise typer.Exit(1)
    with sessions.begin() as session:
        result = withdraw_consent(
            session, research_id, consent_type=kind, withdrawn_at=withdrawn_at, now=now
        )
    _print_result(result)


def _parse_at(raw: str | None, now: datetime) -> datetime:
    if raw is None:
        return now
    try:
        parsed = timestamp(raw, now=now, what="--at")
    except FieldProblem as problem:
        raise typer.BadParameter(problem.reason, param_hint="--at") from None
    if parsed is None:
        raise typer.BadParameter("is empty", param_hint="--at")
    # The reader allows a little clock skew; a withdrawal is never after the command.
    return min(parsed, now)


def _describe(counts: PurgeCounts) -> str:
    if not counts.acquired:
        return "nothing (no acquired data is stored for them)"
    parts = [
        f"{counts.links} patient links",
        f"{counts.documents} documents",
        f"{counts.resources} resources",
        f"{counts.lineage} lineage rows",
        f"{counts.provenance} provenance records",
        f"{counts.quarantine} quarantine records",
    ]
    return ", ".join(parts)


def _print_result(result: WithdrawalResult) -> None:
    rid, kind = escape(result.research_id), escape(result.consent_type)
    when = result.withdrawn_at.isoformat() if result.withdrawn_at else None
    if result.consent is ConsentChange.RECORDED:
        out.print(f"{rid}: '{kind}' consent withdrawn at {when}")
    elif result.consent is ConsentChange.ALREADY_WITHDRAWN:
        out.print(f"{rid}: '{kind}' consent was already withdrawn (at {when})")
    else:
        out.print(f"{rid}: '{kind}' consent in force is not active: nothing to withdraw")
    counts = result.purge_counts
    if not result.purged_anything:
        out.print("nothing left to purge")
        return
    if counts.acquired:
        out.print(f"purged: {_describe(counts)}")
    if counts.attempts_withdrawn:
        out.print(f"pending attempts closed as withdrawn: {counts.attempts_withdrawn}")
