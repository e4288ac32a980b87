"""INSERT … ON CONFLICT DO NOTHING on SQLite and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_missing(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert the rows whose ``keys`` are not there yet; leave existing rows untouched.

    Re-running any stage writes the same rows again: the unique keys make that a no-op
    instead of a duplicate or an error.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).on_conflict_do_nothing(index_elements=list(keys))
    session.execute(statement, list(rows))
