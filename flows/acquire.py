"""``acquire-ehr``: select the cohort into a run of batches and acquire every batch."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from ehrfetch import runs
from flows._batches import publish_nothing, publish_summary, run_batches, settings_from


@flow(name="acquire-ehr", description="Acquire the EHR of every eligible participant.")
async def acquire_ehr(
    limit: int | None = None,
    batch_size: int | None = None,
    organizations: list[str] | None = None,
    dry_run: bool = False,
    config_file: str | None = None,
) -> runs.RunSummary | None:
    """Release batches a dead run left open, plan a run, acquire it, publish its summary.

    limit: at most this many participants. batch_size: participants per batch (default
    from settings). organizations: query only these organization ids. dry_run: discover
    and decide only, fetch no documents. config_file: settings file of the worker
    (default config/ehrfetch.toml in its working folder).
    """
    settings = settings_from(config_file)
    with runs.open_store(settings) as sessions:
        now = runs.utcnow()
        runs.release_stale(sessions, stale_after=runs.stale_after(settings), now=now)
        plan = runs.plan_run(
            sessions,
            settings,
            limit=limit,
            batch_size=batch_size,
            organizations=organizations,
            dry_run=dry_run,
            now=now,
        )
        if plan.run_id is None:
            await publish_nothing("Nobody is eligible now: no run was recorded.")
            return None
        runs.start_run(sessions, plan.run_id, now, flow_run_id=flow_run.get_id())
        stopped = await run_batches(
            plan.batch_ids, settings, sessions, config_file, title=f"Run {plan.run_id}"
        )
        runs.finish_run(sessions, plan.run_id, runs.utcnow())
        summary = runs.run_summary(sessions, plan.run_id)
    return await publish_summary(summary, stopped)
