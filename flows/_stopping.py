"""Stopping a run on SIGTERM or Ctrl-C: finish what is in flight, close what is not.

Without this, Prefect's SIGTERM bridge raised out of the event loop and the task
runner's exit then waited for every batch already queued (its executor shuts down with
``wait=True``): a 300,000-participant run kept its workers, the resource tracker and the
temporary Prefect server going for hours after ``kill``. Ctrl-C did no better in the
process runner (the workers died mid-batch, the parent hung in the same wait).

While the batches run, the flow's event loop takes both signals itself
(``loop.add_signal_handler``: the handler runs in the loop, woken at once by asyncio's
wakeup pipe, whichever thread the kernel interrupted). The first signal:

- creates the run's *stop file*: a batch that has not begun returns at once; a running
  batch finishes the participants in flight (each in one transaction anyway), starts no
  other, and closes with the rest failed as interrupted (``batch.run_batch``);
- cancels the batches still queued, so no worker takes them.

The flow then closes the batches nobody began, settles the run and raises
:class:`~ehrfetch.errors.Interrupted`. A second signal stops waiting: the handlers that
were there before (Prefect's SIGTERM bridge, asyncio's Ctrl-C) take it, as if this
module were not there.

A file, not an event: batch workers may be other processes (``task_runner =
"processes"``), which ignore SIGINT (``flows._workers``) so that Ctrl-C at a terminal,
sent to the whole process group, reaches them only through this file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.futures import PrefectConcurrentFuture, PrefectFuture

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """The run's stop file and the signal that asked for it, if any."""

    def __init__(self, folder: Path) -> None:
        self.file = folder / "stop"
        self.signal: signal.Signals | None = None
        self._futures: list[PrefectFuture[Any]] = []

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def watch(self, future: PrefectFuture[Any]) -> None:
        """A batch's future, to cancel if it is still queued when a stop comes."""
        self._futures.append(future)

    def request(self, signum: signal.Signals, by: str = "this process") -> None:
        """Stop: ``signum`` reached ``by`` (a batch worker makes the file itself)."""
        self.signal = signum
        self.file.touch()
        cancelled = sum(
            future.wrapped_future.cancel()
            for future in self._futures
            if isinstance(future, PrefectConcurrentFuture)
        )
        log.warning(
            "%s (to %s): stopping: finishing the participants in flight; %d queued "
            "batch(es) cancelled (a second signal stops without waiting)",
            signum.name,
            by,
            cancelled,
        )


@contextlib.contextmanager
def stop_on_signals(folder: Path) -> Iterator[StopRequest]:
    """A stop request that SIGTERM and SIGINT make, while the block runs.

    The stop file goes in ``folder``, the run's scratch folder, which the caller removes.

    Outside the main thread (a flow run by a worker in a thread) nothing is installed:
    signals go where they went before, and the stop file is never made.
    """
    loop = asyncio.get_running_loop()
    stop = StopRequest(folder)
    before: dict[signal.Signals, Any] = {}

    def restore() -> None:
        for signum, handler in before.items():
            loop.remove_signal_handler(signum)  # sets SIG_DFL (SIGINT: KeyboardInterrupt)
            # Then what was there: Prefect's SIGTERM bridge, asyncio.run's Ctrl-C.
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        before.clear()

    def on_signal(signum: signal.Signals) -> None:
        if stop.requested:
            log.warning("%s again: no longer waiting for the batches in flight", signum.name)
            restore()
            signal.raise_signal(signum)
            return
        stop.request(signum)

    for signum in SIGNALS:
        previous = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (RuntimeError, ValueError):  # not the main thread
            continue
        before[signum] = previous
    try:
        yield stop
    finally:
        restore()
