"""``ehrfetch demo``: the whole acquisition, on the mock network, on this machine.

It starts the mock network on 127.0.0.1 in its own process (with a client key pair
made for the demo), has it write a roster with consents, imports them into a fresh
SQLite store, selects the cohort into batches, acquires every batch, and prints what
happened and where to look next. The network is stopped however the demo ends
(success, failure or Ctrl-C).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ehrfetch import store
from ehrfetch.batch import BatchResult, run_batch
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.selection import count_cohort, select_cohort
from ehrfetch.mocknet import DEFAULT_CONFIG, running_network, write_roster
from ehrfetch.settings import Settings
from ehrfetch.store.engine import remove_sqlite_store
from ehrfetch.store.links import review_queue
from ehrfetch.terminal import print_counts, print_import, print_selection


def run_demo(
    settings: Settings,
    workdir: Path,
    out: Console,
    *,
    participants: int = 200,
    batch_size: int = 50,
    network_config: Path = DEFAULT_CONFIG,
) -> None:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "ehrfetch.db"
    remove_sqlite_store(db)
    if not logging.getLogger().isEnabledFor(logging.INFO):
        # Faults are part of the demo; their per-call warnings are not.
        logging.getLogger("ehrfetch").setLevel(logging.ERROR)

    out.rule("ehrfetch demo")
    roster = workdir / "roster"
    write_roster(network_config, roster, participants)
    log_path = workdir / "mock-network.log"
    with running_network(network_config, log_path) as network:
        out.print(f"the mock network runs on {network.base_url} (log: {log_path})")
        demo_settings = network.settings(settings)
        store_settings = settings.store.model_copy(
            update={"url": f"sqlite:///{db}", "password": None}
        )
        demo_settings = demo_settings.model_copy(update={"store": store_settings})
        _acquire(demo_settings, roster, out, batch_size)
    out.print(f"\n[green]done[/] in {time.monotonic() - started:.0f} s. Next:")
    env = f"EHRFETCH__STORE__URL=sqlite:///{db}"
    out.print(f"  {env} .venv/bin/ehrfetch cohort          # who is where now")
    out.print(f"  {env} .venv/bin/ehrfetch review list     # candidates for an operator")
    out.print(f"  sqlite3 {db} .tables                 # the store itself")


def _acquire(settings: Settings, roster: Path, out: Console, batch_size: int) -> None:
    engine = store.create_store_engine(settings.store)
    try:
        store.ensure_schema(engine)
        sessions = store.session_factory(engine)
        read_ctx = ReadContext.from_settings(settings.roster)
        print_import(
            out, out, import_roster(roster / "roster.csv", sessions, read_ctx), "participants"
        )
        print_import(
            out, out, import_consents(roster / "consents.csv", sessions, read_ctx), "consents"
        )
        now = datetime.now(UTC)
        selection = select_cohort(sessions, settings.cohort, now, batch_size=batch_size)
        print_selection(out, selection)
        results: list[BatchResult] = []
        for batch in selection.batches:
            result = asyncio.run(run_batch(batch.id, settings, sessions))
            out.print(
                f"batch {batch.id}: {result.status.value} — {result.documents} documents, "
                f"{result.resources} resources"
            )
            results.append(result)
        _summary(out, results)
        print_counts(out, count_cohort(sessions, settings.cohort, datetime.now(UTC)))
        with sessions() as session:
            waiting = len(review_queue(session))
        out.print(f"{waiting} candidate link(s) wait in the review queue")
    finally:
        engine.dispose()


def _summary(out: Console, results: list[BatchResult]) -> None:
    outcomes: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for r in results:
        outcomes.update(r.outcomes)
        errors.update(r.errors)
    table = Table(title="Acquisition", show_header=False, title_justify="left")
    for outcome, count in outcomes.most_common():
        table.add_row(outcome, f"{count:,}")
    table.add_row("documents stored", f"{sum(r.documents for r in results):,}")
    table.add_row("resources (after de-duplication)", f"{sum(r.resources for r in results):,}")
    for code, count in errors.most_common():
        table.add_row(f"errors: {code}", f"{count:,}")
    out.print(table)
