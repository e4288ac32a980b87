"""Engines and sessions: the only place that knows how to connect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.settings import StoreSettings
from ehrfetch.store.types import json_text


def create_store_engine(settings: StoreSettings) -> Engine:
    """An engine for the configured store, with SQLite tuned for one writer, many readers."""
    url = settings.sqlalchemy_url()
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, echo=settings.echo, connections=settings.connections())
    size = settings.connections()
    return create_engine(
        url,
        echo=settings.echo,
        pool_pre_ping=True,
        # Every worker thread keeps its connection: overflow connections are closed on
        # return, and a 100,000-participant run opened new backends several times a
        # second with the default pool of 5.
        pool_size=size,
        max_overflow=size,
        json_serializer=json_text,
    )


def _sqlite_engine(url: URL, *, echo: bool, connections: int) -> Engine:
    # As for PostgreSQL: each connection opened runs the PRAGMAs below again. (An
    # in-memory database has one connection per thread and no pool to size.)
    in_memory = url.database in (None, "", ":memory:")
    pool = {} if in_memory else {"pool_size": connections, "max_overflow": connections}
    engine = create_engine(
        url,
        echo=echo,
        json_serializer=json_text,
        **pool,
        # A writer holding the lock makes others wait this long, not fail at once.
        connect_args={"timeout": 30},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL: readers never block the writer (status queries during a run).
        cursor.execute("PRAGMA journal_mode=WAL")
        # Off by default in SQLite; the schema's cascades rely on it.
        cursor.execute("PRAGMA foreign_keys=ON")
        # NORMAL is durable across application crashes in WAL mode; FULL only adds
        # protection against power loss at a large cost per commit.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    # expire_on_commit=False: objects stay readable after the unit of work ends.
    return sessionmaker(engine, expire_on_commit=False)


def remove_sqlite_store(path: Path) -> None:
    """Delete a SQLite store with its WAL and shared-memory files (a demo starting fresh)."""
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        part.unlink(missing_ok=True)
