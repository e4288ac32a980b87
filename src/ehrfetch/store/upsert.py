"""Many rows in one statement, with or without ON CONFLICT DO NOTHING, on both stores.

On PostgreSQL a list of rows goes as **one** statement with one parameter: the rows as
a JSON array, unpacked by ``jsonb_to_recordset``. SQLAlchemy hands psycopg a list of
rows as an executemany, which psycopg sends as one Bind/Execute per row (pipelined, but
still a statement per row for both sides): a participant's documents were ~45 such
executions (29 lineage rows, 9 audit rows, 5 aliases, 2 Provenances), a large share of
the database's CPU and of psycopg's per participant (docs/benchmarks.md, eleventh
session). A fixed statement text per (table, columns) also keeps psycopg's prepared
statement, where a multi-row VALUES would be a new text for every row count.

SQLite is in-process: its executemany costs no round trip, and it stays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import (
    JSON,
    Dialect,
    Executable,
    Float,
    Table,
    bindparam,
    cast,
    column,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session
from sqlalchemy.sql.type_api import TypeEngine

Converter = Callable[[Any], Any]


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_existing: Sequence[str] | None = None,
) -> None:
    """Insert ``rows`` (each with the same columns) in one statement.

    ``skip_existing``: the unique key whose rows already stored are left untouched
    (ON CONFLICT DO NOTHING) instead of failing. Values go through the columns' own
    types (a naive datetime is refused, an unknown enum value too) on both stores.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    columns = tuple(rows[0])
    first = rows[0].keys()
    for position, row in enumerate(rows):
        if row.keys() != first:
            # Both paths would otherwise drop a value silently (or fail on a missing one).
            raise ValueError(
                f"insert_rows into {table.name}: row {position} has columns "
                f"{sorted(row)}, the first row {sorted(first)}"
            )
    if dialect.name == "postgresql" and _json_safe(table, columns, rows):
        keys = tuple(skip_existing) if skip_existing is not None else None
        statement = _recordset_insert(table, columns, keys)
        convert = _converters(table, columns, dialect)
        try:
            records = [{name: convert[name](row[name]) for name in columns} for row in rows]
        except (ValueError, LookupError, TypeError) as exc:
            # As SQLAlchemy reports a value its type refuses; the rows are not shown.
            raise StatementError(str(exc), str(statement), None, exc) from exc
        session.execute(statement, {"rows": _dumps(records)})
        return
    module = postgresql if dialect.name == "postgresql" else sqlite
    statement = module.insert(table)
    if skip_existing is not None:
        statement = statement.on_conflict_do_nothing(index_elements=list(skip_existing))
    session.execute(statement, list(rows))


def insert_missing(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert the rows whose ``keys`` are not there yet; leave existing rows untouched.

    Re-running any stage writes the same rows again: the unique keys make that a no-op
    instead of a duplicate or an error.
    """
    insert_rows(session, table, rows, skip_existing=keys)


def _dumps(records: list[dict[str, Any]]) -> str:
    # The engines' json_serializer options (store/types.py), so a JSON column's value
    # is written as it would be one row at a time.
    return orjson.dumps(records, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_safe(table: Table, columns: tuple[str, ...], rows: Sequence[dict[str, Any]]) -> bool:
    """False when a float column holds NaN or ±Infinity: JSON has no such numbers
    (orjson would write null), so those rows take the row-by-row path, which keeps them."""
    floats = [name for name in columns if isinstance(table.c[name].type, Float)]
    return not any(
        isinstance(row[name], float) and not math.isfinite(row[name])
        for row in rows
        for name in floats
    )


@functools.lru_cache(maxsize=64)
def _recordset_insert(
    table: Table, columns: tuple[str, ...], keys: tuple[str, ...] | None
) -> Executable:
    """INSERT INTO table (columns) SELECT columns FROM jsonb_to_recordset(:rows) AS r(…)."""
    recordset = (
        func.jsonb_to_recordset(cast(bindparam("rows"), JSONB))
        .table_valued(*(column(name, table.c[name].type) for name in columns))
        .render_derived(name="r", with_types=True)
    )
    rows = select(*(recordset.c[name] for name in columns))
    statement = postgresql.insert(table).from_select(list(columns), rows)
    if keys is not None:
        return statement.on_conflict_do_nothing(index_elements=list(keys))
    return statement


@functools.lru_cache(maxsize=64)
def _converters(table: Table, columns: tuple[str, ...], dialect: Dialect) -> dict[str, Converter]:
    return {name: _converter(table.c[name].type, dialect) for name in columns}


def _converter(column_type: TypeEngine[Any], dialect: Dialect) -> Converter:
    """What a value becomes before it is written as JSON.

    A JSON column's value is embedded as is (its bind processor would serialize it to a
    string, which ``jsonb`` would then keep as a string). Every other column applies the
    type's bind processing — the UTC rule, enum values checked and written as values.
    """
    if isinstance(column_type.dialect_impl(dialect), JSON):
        return _same
    process = column_type.bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value
