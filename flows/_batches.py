"""What both flows share: one task per batch, a bounded number at once, and artifacts.

Orchestration only: each step calls ehrfetch (``ehrfetch.runs``), which holds the rules.

Bounded concurrency is a task runner opened by the flow with ``batch_concurrency``
workers, read from the settings on every run (a runner fixed in the ``@flow`` decorator
would be fixed when the deployment is served): threads (``ThreadPoolTaskRunner``) or
processes (``ProcessPoolTaskRunner``; ``orchestration.task_runner``). Either suits a
batch: it runs its own event loop with its own network client (``run_batch`` creates
it), so no HTTP connection or transport is shared between event loops. Threads share one
core's worth of Python; processes use every core, which the throughput benchmark
measures (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import (
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture
from prefect.runtime import task_run
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import runs
from ehrfetch.batch import BatchResult
from ehrfetch.settings import Settings, load_settings
from flows._workers import RecyclingProcessPoolTaskRunner

SUMMARY_TABLE = "ehrfetch-summary"
SUMMARY_REPORT = "ehrfetch-report"
PROGRESS = "ehrfetch-progress"


def settings_from(config_file: str | None) -> Settings:
    return load_settings(Path(config_file) if config_file else None)


@task(
    name="acquire-batch",
    task_run_name="batch-{batch_id}",
    # An unexpected failure (the store went away, a bug) retries the whole batch; the
    # network's own faults are retried per call inside and end up as attempt outcomes.
    retries=2,
    retry_delay_seconds=[2, 30],
    # Running a batch must never be skipped as "already done": the store decides.
    cache_policy=NO_CACHE,
)
async def acquire_batch(
    batch_id: int, config_file: str | None, pacing_dir: str | None = None
) -> BatchResult:
    # Settings and the store are opened in the task (in its thread and event loop), so a
    # task needs nothing but JSON parameters: the same task could run on another machine.
    settings = settings_from(config_file)
    with runs.open_store(settings) as sessions:
        return await runs.acquire_batch(
            batch_id,
            settings,
            sessions,
            again=task_run.get_run_count() > 1,
            pacing_dir=Path(pacing_dir) if pacing_dir else None,
        )


async def run_batches(
    batch_ids: Sequence[int],
    settings: Settings,
    sessions: sessionmaker[Session],
    config_file: str | None,
    *,
    title: str,
) -> None:
    """Run the batches, ``batch_concurrency`` at a time, with a progress artifact."""
    tracker = runs.track(sessions, batch_ids)
    tracker.publish()
    progress_id = await acreate_progress_artifact(
        progress=0.0, key=PROGRESS, description=f"{title}: batches done"
    )
    loop = asyncio.get_running_loop()
    finished: asyncio.Queue[tuple[int, PrefectFuture[Any]]] = asyncio.Queue()

    def hand_over(batch_id: int) -> Callable[[PrefectFuture[Any]], None]:
        # Done callbacks run in the task's thread: pass the future to this event loop.
        def done(future: PrefectFuture[Any]) -> None:
            loop.call_soon_threadsafe(finished.put_nowait, (batch_id, future))

        return done

    workers = settings.orchestration.batch_concurrency
    in_processes = settings.orchestration.task_runner == "processes"
    runner: TaskRunner[Any] = (
        RecyclingProcessPoolTaskRunner(workers, settings.orchestration.batches_per_worker)
        if in_processes
        else ThreadPoolTaskRunner[Any](max_workers=workers)
    )
    with (
        _workers_report_here() if in_processes else contextlib.nullcontext(),
        _shared_pacing(in_processes and workers > 1) as pacing_dir,
        runner,
    ):
        for batch_id in batch_ids:
            future: PrefectFuture[Any] = runner.submit(
                acquire_batch,
                {"batch_id": batch_id, "config_file": config_file, "pacing_dir": pacing_dir},
            )
            future.add_done_callback(hand_over(batch_id))
        for _ in batch_ids:
            batch_id, future = await finished.get()
            outcome = future.result(raise_on_failure=False)
            if not isinstance(outcome, BatchResult):
                # Retries spent: close the batch so it does not wait to go stale. The
                # exception's type only: its message could quote data.
                reason = f"task_failed: {type(outcome).__name__}"
                runs.abandon_batch(sessions, batch_id, reason, runs.utcnow())
            progress = tracker.finished(batch_id)
            await aupdate_progress_artifact(progress_id, progress=100 * progress.fraction)


@contextlib.contextmanager
def _shared_pacing(wanted: bool) -> Iterator[str | None]:
    """A directory where the batch worker processes share their pacing, for this run.

    The network limits the client as a whole. Split 1/n, a worker's share went unused
    while its batch started, drained, or was done before the other's; shared, whichever
    worker has requests to make uses the whole allowance (``network.ratelimit``).
    """
    if not wanted:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="ehrfetch-pacing-") as path:
        yield path


@contextlib.contextmanager
def _workers_report_here() -> Iterator[None]:
    """Batch worker processes report to this process's Prefect API.

    With no ``PREFECT_API_URL`` (``ehrfetch run`` on a temporary server, its default),
    each spawned worker would start a temporary server of its own: the batches' task
    runs would be recorded where nobody looks, at a few hundred MB each. Workers inherit
    this process's settings with each task, so the server's address goes there while
    the pool runs.
    """
    if PREFECT_API_URL.value():
        yield
        return
    # The temporary server this process's client started (one per process, port None).
    # In the settings, not only the environment: the runner hands workers this
    # process's settings context along with its environment.
    with temporary_settings(updates={PREFECT_API_URL: SubprocessASGIServer().api_url}):
        yield


async def publish_summary(summary: runs.RunSummary) -> None:
    await acreate_table_artifact(
        table=summary.table_rows(), key=SUMMARY_TABLE, description=summary.title
    )
    await acreate_markdown_artifact(
        markdown=summary.to_markdown(), key=SUMMARY_REPORT, description=summary.title
    )


async def publish_nothing(message: str) -> None:
    await acreate_markdown_artifact(markdown=f"# ehrfetch\n\n{message}\n", key=SUMMARY_REPORT)
