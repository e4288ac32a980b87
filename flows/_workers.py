"""Batch worker processes that are replaced after a number of batches.

A worker process that runs batch after batch for hours keeps growing: what Python's
allocator and the libraries keep after each batch (about 1 MB per 1,000 participants in
the 300,000-participant benchmark, docs/benchmarks.md). ``concurrent.futures`` can
replace a worker after ``max_tasks_per_child`` tasks, as Celery's
``worker_max_tasks_per_child`` does; Prefect's ``ProcessPoolTaskRunner`` builds its
executor without it, so this runner swaps in one that has it, made exactly as Prefect
makes its own (the same spawn context, worker initializer and message queue).
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Self

from prefect import task_runners
from prefect.task_runners import ProcessPoolTaskRunner


class RecyclingProcessPoolTaskRunner(ProcessPoolTaskRunner):
    """``ProcessPoolTaskRunner`` whose workers each run at most ``tasks_per_worker``
    tasks (0: no limit, Prefect's own runner)."""

    def __init__(self, max_workers: int | None = None, tasks_per_worker: int = 0) -> None:
        super().__init__(max_workers=max_workers)
        self.tasks_per_worker = tasks_per_worker

    def __enter__(self) -> Self:
        super().__enter__()
        if not self.tasks_per_worker:
            return self
        # Prefect's executor has started no process yet (a pool spawns on submit).
        original = self._executor
        assert original is not None
        self._executor = ProcessPoolExecutor(
            max_workers=self._max_workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=task_runners._initialize_process_pool_worker,
            initargs=(
                self._subprocess_message_queue,
                getattr(self, "_initializer", None),
                getattr(self, "_initargs", ()),
            ),
            max_tasks_per_child=self.tasks_per_worker,
        )
        original.shutdown(wait=True)
        return self

    def duplicate(self) -> Self:
        twin = super().duplicate()
        twin.tasks_per_worker = self.tasks_per_worker
        return twin
