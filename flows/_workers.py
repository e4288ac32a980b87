"""Batch worker processes that are replaced after a number of batches.

A worker process that runs batch after batch for hours keeps growing: what Python's
allocator and the libraries keep after each batch (about 1 MB per 1,000 participants in
the 300,000-participant benchmark, docs/benchmarks.md). ``concurrent.futures`` can
replace a worker after ``max_tasks_per_child`` tasks, as Celery's
``worker_max_tasks_per_child`` does; Prefect's ``ProcessPoolTaskRunner`` builds its
executor without it, so this runner swaps in one that has it, made exactly as Prefect
makes its own (the same spawn context, worker initializer and message queue), with
workers that leave Ctrl-C to their parent (``_initialize_worker``).
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any, Self

from prefect import task_runners
from prefect.task_runners import ProcessPoolTaskRunner


def _initialize_worker(*args: Any) -> None:
    """Prefect's worker initializer, in a worker that ignores SIGINT and stops the run on
    SIGTERM.

    Ctrl-C at a terminal reaches the whole process group: a worker would die mid-batch
    while its parent stops cleanly. The parent tells the workers through the run's stop
    file instead (``flows._stopping``). SIGTERM may reach a worker too — systemd's
    default ``KillMode=control-group`` signals every process of a service at once, and
    ``kill`` may name a worker — and it stops the run the same way (``_stop_the_run``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_the_run)
    task_runners._initialize_process_pool_worker(*args)


_stop_file: Path | None = None
"""The stop file of the run whose batches this worker runs (``serving``)."""


def serving(stop_file: Path | None) -> None:
    """A batch beginning in this process names its run's stop file, for SIGTERM."""
    global _stop_file
    _stop_file = stop_file


def _stop_the_run(signum: int, frame: FrameType | None) -> None:
    """SIGTERM in a batch worker: make the run's stop file, as the flow does on its own.

    The worker's batch then finishes the participants in flight and closes with the rest
    failed as interrupted, and the flow, finding the file, stops the run (exit 143), where
    a worker dying mid-batch broke the pool. A second SIGTERM ends the worker at once; so
    does the first in a worker that knows no stop file (it has not run a batch) or cannot
    make it.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        if _stop_file is not None:
            _stop_file.touch()
            return
    except OSError:
        pass  # the run's folder is gone: nothing to stop but this process
    signal.raise_signal(signal.SIGTERM)


class ReplacingProcessPoolExecutor(ProcessPoolExecutor):
    """``ProcessPoolExecutor`` that always replaces a worker that left.

    CPython 3.11 to 3.14 (gh-115634, fixed upstream in November 2025): when a worker exits
    at ``max_tasks_per_child`` the pool asks ``_adjust_process_count`` for a replacement,
    which first takes an "idle worker" token, and a stale token (released by a task that
    ended while others were queued) makes it spawn nothing. With every batch of a run
    queued at once, the last worker to leave leaves the rest of the run waiting for ever.
    Here a pool below ``max_workers`` always spawns: workers start as soon as there is
    work, which batches always are.
    """

    def _adjust_process_count(self) -> None:
        if len(self._processes) < self._max_workers:  # type: ignore[attr-defined]
            self._spawn_process()  # type: ignore[attr-defined]


class RecyclingProcessPoolTaskRunner(ProcessPoolTaskRunner):
    """``ProcessPoolTaskRunner`` whose workers each run at most ``tasks_per_worker``
    tasks (0: no limit)."""

    def __init__(self, max_workers: int | None = None, tasks_per_worker: int = 0) -> None:
        super().__init__(max_workers=max_workers)
        self.tasks_per_worker = tasks_per_worker

    def __enter__(self) -> Self:
        super().__enter__()
        # Prefect's executor has started no process yet (a pool spawns on submit).
        original = self._executor
        assert original is not None
        self._executor = ReplacingProcessPoolExecutor(
            max_workers=self._max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_initialize_worker,
            initargs=(
                self._subprocess_message_queue,
                getattr(self, "_initializer", None),
                getattr(self, "_initargs", ()),
            ),
            max_tasks_per_child=self.tasks_per_worker or None,
        )
        original.shutdown(wait=True)
        return self

    def duplicate(self) -> Self:
        twin = super().duplicate()
        twin.tasks_per_worker = self.tasks_per_worker
        return twin
