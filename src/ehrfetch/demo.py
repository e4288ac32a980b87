"""``ehrfetch demo``: the whole of what ehrfetch does today, on sample data.

A fresh SQLite store in the demo folder, the sample roster and consents shipped with
the package imported into it (two sample rows are bad on purpose, to show how bad
input is reported), the cohort counted and selected into batches.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from rich.console import Console

from ehrfetch import store
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.selection import count_cohort, select_cohort
from ehrfetch.settings import Settings
from ehrfetch.terminal import print_counts, print_import, print_selection

DEMO_BATCH_SIZE = 10


def run_demo(settings: Settings, workdir: Path, out: Console) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "ehrfetch.db"
    for stale in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        stale.unlink(missing_ok=True)
    store_settings = settings.store.model_copy(update={"url": f"sqlite:///{db}", "password": None})
    engine = store.create_store_engine(store_settings)
    try:
        store.ensure_schema(engine)
        sessions = store.session_factory(engine)
        read_ctx = ReadContext.from_settings(settings.roster)
        samples = resources.files("ehrfetch.samples")
        out.rule("ehrfetch demo")
        out.print(f"store: {store_settings.display_url()}\n")
        with resources.as_file(samples / "roster.csv") as roster:
            print_import(out, out, import_roster(roster, sessions, read_ctx), "participants")
        with resources.as_file(samples / "consents.csv") as consents:
            print_import(out, out, import_consents(consents, sessions, read_ctx), "consents")
        now = datetime.now(UTC)
        out.print()
        print_counts(out, count_cohort(sessions, settings.cohort, now))
        selection = select_cohort(sessions, settings.cohort, now, batch_size=DEMO_BATCH_SIZE)
        out.print()
        print_selection(out, selection)
        out.print(
            "\nNext: look around with\n"
            f"  EHRFETCH__STORE__URL=sqlite:///{db} ehrfetch cohort\n"
            "  ehrfetch participants import --help"
        )
    finally:
        engine.dispose()
