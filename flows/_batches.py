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
import dataclasses
import signal
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
from prefect.futures import PrefectConcurrentFuture, PrefectFuture
from prefect.runtime import task_run
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import runs
from ehrfetch.batch import BatchResult
from ehrfetch.errors import Interrupted
from ehrfetch.settings import Settings, load_settings
from flows import _workers
from flows._stopping import stop_on_signals
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
    batch_id: int,
    config_file: str | None,
    pacing_dir: str | None = None,
    stop_file: str | None = None,
) -> BatchResult:
    # Settings and the store are opened in the task (in its thread and event loop), so a
    # task needs nothing but JSON parameters: the same task could run on another machine.
    _workers.serving(Path(stop_file) if stop_file else None)  # for SIGTERM in a worker
    settings = settings_from(config_file)
    with runs.open_store(settings) as sessions:
        return await runs.acquire_batch(
            batch_id,
            settings,
            sessions,
            again=task_run.get_run_count() > 1,
            pacing_dir=Path(pacing_dir) if pacing_dir else None,
            stop_file=Path(stop_file) if stop_file else None,
        )


async def run_batches(
    batch_ids: Sequence[int],
    settings: Settings,
    sessions: sessionmaker[Session],
    config_file: str | None,
    *,
    title: str,
) -> signal.Signals | None:
    """Run the batches, ``batch_concurrency`` at a time, with a progress artifact.

    Returns the signal that stopped the run (``flows._stopping``), None when every batch
    ran; a stopped run's batches are all closed when this returns.
    """
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
        _run_folder() as folder,
        stop_on_signals(folder) as stop,
        _workers_report_here() if in_processes else contextlib.nullcontext(),
        runner,
    ):
        pacing_dir = _shared_pacing(folder, in_processes and workers > 1)
        shared = {"config_file": config_file, "pacing_dir": pacing_dir, "stop_file": str(stop.file)}
        for batch_id in batch_ids:
            future: PrefectFuture[Any] = runner.submit(
                acquire_batch, {"batch_id": batch_id, **shared}
            )
            future.add_done_callback(hand_over(batch_id))
            stop.watch(future)
        for _ in batch_ids:
            batch_id, future = await finished.get()
            if not stop.requested and stop.file.exists():
                stop.request(signal.SIGTERM, by="a batch worker")  # ``_workers._stop_the_run``
            if _cancelled(future):
                continue  # stopping: closed below, nobody began it
            outcome = future.result(raise_on_failure=False)
            if not isinstance(outcome, BatchResult):
                # Retries spent: close the batch so it does not wait to go stale. The
                # exception's type only: its message could quote data.
                reason = f"task_failed: {type(outcome).__name__}"
                runs.abandon_batch(sessions, batch_id, reason, runs.utcnow())
            progress = tracker.finished(batch_id)
            await aupdate_progress_artifact(progress_id, progress=100 * progress.fraction)
    if stop.signal is None:
        return None
    # Every batch has returned or was cancelled: no worker writes to these any more.
    reason = f"interrupted: the run was stopped by {stop.signal.name} before this batch began"
    runs.close_unfinished(sessions, batch_ids, reason, runs.utcnow())
    return stop.signal


def _cancelled(future: PrefectFuture[Any]) -> bool:
    return isinstance(future, PrefectConcurrentFuture) and future.wrapped_future.cancelled()


@contextlib.contextmanager
def _run_folder() -> Iterator[Path]:
    """This run's scratch folder (stop file, shared pacing), removed when the run ends."""
    with tempfile.TemporaryDirectory(prefix="ehrfetch-run-") as folder:
        yield Path(folder)


def _shared_pacing(run_folder: Path, wanted: bool) -> str | None:
    """A directory in the run's folder where the batch worker processes share their pacing.

    The network limits the client as a whole. Split 1/n, a worker's share went unused
    while its batch started, drained, or was done before the other's; shared, whichever
    worker has requests to make uses the whole allowance (``network.ratelimit``).
    """
    if not wanted:
        return None
    path = run_folder / "pacing"
    path.mkdir()
    return str(path)


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


async def publish_summary(
    summary: runs.RunSummary, stopped: signal.Signals | None = None
) -> runs.RunSummary:
    """Publish the summary as artifacts; return it, or raise ``Interrupted`` with it.

    A stopped run ends the flow as failed (in the Prefect UI too), its summary saying so.
    """
    if stopped is not None:
        summary = dataclasses.replace(summary, title=f"{summary.title}, stopped by {stopped.name}")
    await acreate_table_artifact(
        table=summary.table_rows(), key=SUMMARY_TABLE, description=summary.title
    )
    await acreate_markdown_artifact(
        markdown=summary.to_markdown(), key=SUMMARY_REPORT, description=summary.title
    )
    if stopped is not None:
        raise Interrupted(stopped.name, stopped.value, summary)
    return summary


async def publish_nothing(message: str) -> None:
    await acreate_markdown_artifact(markdown=f"# ehrfetch\n\n{message}\n", key=SUMMARY_REPORT)
