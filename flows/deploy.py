"""Deployments: ``acquire-ehr`` nightly on the configured cron, ``rerun-failed`` on demand.

``ehrfetch serve`` (or ``python -m flows.deploy``) serves both from this process
against the Prefect server in ``PREFECT_API_URL``: the process polls the server for
scheduled and requested runs and executes them. To run on more machines, deploy the
same flows to a process work pool instead and start ``prefect worker start --pool …``
on each machine (see the README).
"""

from __future__ import annotations

import asyncio

from prefect.deployments.runner import RunnerDeployment
from prefect.flows import aserve
from prefect.schedules import Cron
from prefect.settings import get_current_settings

from ehrfetch.errors import ConfigError
from ehrfetch.settings import Settings, load_settings
from flows.acquire import acquire_ehr
from flows.rerun import rerun_failed

NIGHTLY = "nightly"
ON_DEMAND = "on-demand"


def require_server() -> None:
    """Serving needs a lasting Prefect server: a temporary one would vanish with us."""
    if not get_current_settings().api.url:
        raise ConfigError(
            "no Prefect server: start one (`prefect server start`) and set PREFECT_API_URL "
            "(e.g. http://127.0.0.1:4200/api)"
        )


async def deployments(settings: Settings, config_file: str | None = None) -> list[RunnerDeployment]:
    """The two deployments; ``config_file`` absolute, as served runs may start elsewhere."""
    orchestration = settings.orchestration
    config = {"config_file": config_file} if config_file else {}
    nightly = await acquire_ehr.ato_deployment(
        name=NIGHTLY,
        schedules=[Cron(orchestration.schedule_cron, timezone=orchestration.timezone)],
        parameters=config,
        # A night that overruns must not start a second run over the first.
        concurrency_limit=1,
        tags=["ehrfetch"],
        description="The nightly acquisition of every eligible participant.",
    )
    on_demand = await rerun_failed.ato_deployment(
        name=ON_DEMAND,
        parameters=config,
        concurrency_limit=1,
        tags=["ehrfetch"],
        description="Re-run failed batches: by run_id, batch_ids, or since (2d, ISO date).",
    )
    return [nightly, on_demand]


async def serve_deployments(settings: Settings, config_file: str | None = None) -> None:
    """Serve the deployments until interrupted (Ctrl-C pauses their schedules)."""
    await aserve(*await deployments(settings, config_file))


if __name__ == "__main__":
    asyncio.run(serve_deployments(load_settings()))
