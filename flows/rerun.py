"""``rerun-failed``: run failed, partial and stale batches again, idempotently."""

from __future__ import annotations

from prefect import flow

from ehrfetch import runs
from flows._batches import publish_nothing, publish_summary, run_batches, settings_from


@flow(name="rerun-failed", description="Re-run failed, partial and stale batches.")
async def rerun_failed(
    run_id: int | None = None,
    batch_ids: list[int] | None = None,
    since: str | None = None,
    config_file: str | None = None,
) -> runs.RunSummary | None:
    """Re-run what failed: of one run, these batches, or what finished since (2d, ISO).

    Only failed attempts are redone; what succeeded stays as it is. Running it twice
    finds nothing more to do the second time.
    """
    settings = settings_from(config_file)
    with runs.open_store(settings) as sessions:
        now = runs.utcnow()
        chosen = runs.batches_to_rerun(
            sessions,
            run_id=run_id,
            batch_ids=batch_ids or (),
            since=runs.parse_since(since, now) if since else None,
            stale_after=runs.stale_after(settings),
            now=now,
        )
        if not chosen:
            await publish_nothing("No failed, partial or stale batch to re-run.")
            return None
        runs.prepare_rerun(sessions, chosen, now)
        title = f"Re-run of {len(chosen)} batch(es)"
        stopped = await run_batches(chosen, settings, sessions, config_file, title=title)
        runs.settle_runs_of(sessions, chosen, runs.utcnow())
        summary = runs.batches_summary(sessions, chosen, title=title)
    return await publish_summary(summary, stopped)
