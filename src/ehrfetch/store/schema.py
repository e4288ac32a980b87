"""Schema versions: Alembic, driven from code so the CLI and tests share one path."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect

from ehrfetch.errors import SchemaError

MIGRATIONS = Path(__file__).parent / "migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # env.py runs on the connection we hand it, so a test's schema (PostgreSQL
    # search_path) or an in-memory database is the one migrated.
    config.attributes["connection"] = connection
    return config


@dataclass(frozen=True)
class SchemaState:
    current: str | None
    head: str
    known: bool
    """Whether ``current`` is a revision this code knows (None counts as known)."""

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def schema_state(engine: Engine) -> SchemaState:
    script = ScriptDirectory.from_config(_config())
    head = script.get_current_head()
    assert head is not None, "the migrations folder has no revision"
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    known = current is None or any(rev.revision == current for rev in script.walk_revisions())
    return SchemaState(current=current, head=head, known=known)


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.downgrade(_config(connection), revision)


def ensure_schema(engine: Engine) -> None:
    """Create the schema in an empty database; refuse to work on an outdated one.

    An empty database is upgraded on first use so a new user needs no extra step. A
    database at an older revision is not migrated behind the operator's back: schema
    changes on a production store are a decision, made with ``ehrfetch db upgrade``.
    """
    state = schema_state(engine)
    if state.up_to_date:
        return
    if state.current is None:
        if inspect(engine).get_table_names():
            raise SchemaError(
                f"{_where(engine)}: the database has tables but no ehrfetch schema version; "
                "point store.url at an empty database or at an ehrfetch store"
            )
        upgrade(engine)
        return
    if not state.known:
        raise SchemaError(
            f"{_where(engine)}: schema revision {state.current} is newer than this ehrfetch "
            f"(head {state.head}); upgrade ehrfetch"
        )
    raise SchemaError(
        f"{_where(engine)}: schema is at revision {state.current}, this ehrfetch needs "
        f"{state.head}; run `ehrfetch db upgrade`"
    )


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)
