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
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from ehrfetch import store
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.selection import count_cohort
from ehrfetch.mocknet import DEFAULT_CONFIG, running_network, write_roster
from ehrfetch.settings import Settings
from ehrfetch.store.engine import remove_sqlite_store
from ehrfetch.store.links import review_queue
from ehrfetch.terminal import print_counts, print_import


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
        _acquire(demo_settings, roster, out, batch_size, workdir)
    out.print(f"\n[green]done[/] in {time.monotonic() - started:.0f} s. Next:")
    env = f"EHRFETCH__STORE__URL=sqlite:///{db}"
    out.print(f"  {env} .venv/bin/ehrfetch cohort          # who is where now")
    out.print(f"  {env} .venv/bin/ehrfetch review list     # candidates for an operator")
    out.print(f"  {env} .venv/bin/ehrfetch status          # runs, outcomes, failures")


def _acquire(
    settings: Settings, roster: Path, out: Console, batch_size: int, workdir: Path
) -> None:
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
        print_counts(out, count_cohort(sessions, settings.cohort, datetime.now(UTC)))
        _run_flow(settings, out, batch_size, workdir)
        print_counts(out, count_cohort(sessions, settings.cohort, datetime.now(UTC)))
        with sessions() as session:
            waiting = len(review_queue(session))
        out.print(f"{waiting} candidate link(s) wait in the review queue")
    finally:
        engine.dispose()


def _run_flow(settings: Settings, out: Console, batch_size: int, workdir: Path) -> None:
    """The nightly path: the acquire-ehr flow, on a temporary local Prefect server."""
    # The flow's tasks read their settings at their own entry point, as a worker on
    # another machine would: the demo's store and network reach them through the
    # environment. Prefect keeps its state in the demo folder and sends nothing out.
    os.environ.update(
        {
            "EHRFETCH__STORE__URL": settings.store.url,
            "EHRFETCH__NETWORK__DIRECTORY_URL": settings.network.directory_url,
            "EHRFETCH__NETWORK__TOKEN_URL": settings.network.token_url,
            "EHRFETCH__NETWORK__CLIENT_ID": settings.network.client_id,
            "EHRFETCH__NETWORK__PRIVATE_KEY_FILE": str(settings.network.private_key_file),
        }
    )
    os.environ.setdefault("PREFECT_HOME", str((workdir / ".prefect").resolve()))
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from ehrfetch.cli_runs import (
        patient_temporary_server,
        print_summary,
        showing_progress,
        stoppable,
    )

    patient_temporary_server()
    from flows.acquire import acquire_ehr

    out.print("running the acquire-ehr flow (a temporary Prefect server starts first)")
    with stoppable(as_json=False), showing_progress(out):
        summary = asyncio.run(acquire_ehr(batch_size=batch_size))
    if summary is not None:
        print_summary(out, summary)
