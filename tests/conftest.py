"""Fixtures shared by the whole suite.

Store tests take the ``db`` (or ``empty_db``) fixture, which runs each test on SQLite and — when
``EHRFETCH_TEST_DATABASE_URL`` names a PostgreSQL database — on PostgreSQL too, each
test in a schema of its own. With ``EHRFETCH_REQUIRE_POSTGRES=1`` (CI) a missing
PostgreSQL fails the run instead of skipping those tests.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine, text

# fhir_models here, before any test module builds an R4B class: the classes get
# ehrfetch's validators as in the application (a test importing fhir.resources first
# would build them with the library's).
from ehrfetch import fhir_models, store  # noqa: F401
from ehrfetch.cli_runs import patient_temporary_server
from ehrfetch.settings import StoreSettings
from support import StoreUnderTest

# Before anything imports Prefect: the temporary servers that flow runs in this process
# start get the time ``ehrfetch run`` gives them, not Prefect's 20 s, which a busy
# machine exceeded.
patient_temporary_server()

PG_URL = os.environ.get("EHRFETCH_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("EHRFETCH_REQUIRE_POSTGRES") == "1"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's settings or writes into the working tree."""
    for name in list(os.environ):
        if name.startswith("EHRFETCH__"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session", autouse=True)
def _temporary_prefect_servers_stop_with_the_session() -> Iterator[None]:
    """A temporary Prefect server started in this process (a flow run with no API URL)
    is stopped by Prefect from atexit, after pytest has closed the stream its log
    handler writes to: a "Logging error" traceback after the summary. Stop such
    servers while the session's streams are still open."""
    yield
    server = sys.modules.get("prefect.server.api.server")
    if server is not None:
        for instance in list(server.SubprocessASGIServer._instances.values()):
            instance.stop()


def _backends() -> list[object]:
    pg_marks: list[pytest.MarkDecorator] = [pytest.mark.postgres]
    if PG_URL is None and not REQUIRE_PG:
        pg_marks.append(
            pytest.mark.skip(reason="EHRFETCH_TEST_DATABASE_URL is not set (CI sets it)")
        )
    return ["sqlite", pytest.param("postgresql", marks=pg_marks)]


@pytest.fixture(params=_backends())
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreUnderTest]:
    """A store with no schema yet."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
        engine = store.create_store_engine(StoreSettings(url=url))
        yield StoreUnderTest("sqlite", url, engine, store.session_factory(engine))
        engine.dispose()
        return
    if PG_URL is None:
        pytest.fail("EHRFETCH_REQUIRE_POSTGRES=1 but EHRFETCH_TEST_DATABASE_URL is not set")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options={quote(f'-csearch_path={schema}')}"
    engine = store.create_store_engine(StoreSettings(url=url))
    try:
        yield StoreUnderTest("postgresql", url, engine, store.session_factory(engine))
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db(empty_db: StoreUnderTest) -> StoreUnderTest:
    """A store with the schema at head."""
    store.upgrade(empty_db.engine)
    return empty_db
