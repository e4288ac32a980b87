"""Many rows in one statement (inserted, with or without ON CONFLICT DO NOTHING, or
updated by key), on both stores.

On PostgreSQL a list of rows goes as **one** statement with one parameter: the rows as
a JSON array, unpacked by ``jsonb_to_recordset``. SQLAlchemy hands psycopg a list of
rows as an executemany, which psycopg sends as one Bind/Execute per row (pipelined, but
still a statement per row for both sides): a participant's documents were ~45 such
executions (29 lineage rows, 9 audit rows, 5 aliases, 2 Provenances), a large share of
the database's CPU and of psycopg's per participant (docs/benchmarks.md, eleventh
session). A fixed statement text per (table, columns) also keeps psycopg's prepared
statement, where a multi-row VALUES would be a new text for every row count (psycopg
re-parses texts of more than 50 parameters on every execution). Nor one array per
column: psycopg escapes every quote of every ``text[]`` element in a regex callback,
and resource bodies are mostly quotes; orjson's JSON goes through untouched.

SQLite is in-process: its executemany costs no round trip, and it stays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Dialect,
    Executable,
    Float,
    Result,
    Table,
    bindparam,
    cast,
    column,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TableValuedAlias
from sqlalchemy.sql.type_api import TypeEngine

from ehrfetch.store.types import json_text

Converter = Callable[[Any], Any]


def insert_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    skip_existing: Sequence[str] | None = None,
    returning: Sequence[str] = (),
) -> list[tuple[Any, ...]]:
    """Insert ``rows`` (each with the same columns) in one statement.

    ``skip_existing``: the unique key whose rows already stored are left untouched
    (ON CONFLICT DO NOTHING) instead of failing. ``returning``: the columns handed back,
    one tuple per row inserted (none for a row skipped), in no promised order. Values go
    through the columns' own types (a naive datetime is refused, an unknown enum value
    too) on both stores.
    """
    if not rows:
        return []
    dialect = session.get_bind().dialect
    columns = _same_columns("insert_rows into", table, rows)
    if dialect.name == "postgresql" and _json_safe(table, columns, rows):
        keys = tuple(skip_existing) if skip_existing is not None else None
        statement = _recordset_insert(table, columns, keys, tuple(returning))
        parameter = _recordset_parameter(statement, table, columns, rows, dialect)
        return _tuples(session.execute(statement, parameter), returning)
    module = postgresql if dialect.name == "postgresql" else sqlite
    statement = module.insert(table)
    if skip_existing is not None:
        statement = statement.on_conflict_do_nothing(index_elements=list(skip_existing))
    if returning:
        statement = statement.returning(*(table.c[name] for name in returning))
    return _tuples(session.execute(statement, list(rows)), returning)


def update_rows(
    session: Session,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    key: str,
    where: ColumnElement[bool] | None = None,
) -> None:
    """Set each row's values on the stored row whose ``key`` column equals the row's.

    One ``UPDATE … FROM jsonb_to_recordset`` on PostgreSQL, an executemany on SQLite.
    ``where``: a further condition on the stored row (a row it excludes is left as is).
    It is part of the key the statement is kept under: build it once (a module
    constant), not per call. Values go through the columns' own types, as
    ``insert_rows``'s do.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    columns = _same_columns("update_rows of", table, rows)
    if key not in columns:
        raise ValueError(f"update_rows of {table.name}: the rows have no {key!r}")
    if dialect.name == "postgresql" and _json_safe(table, columns, rows):
        statement = _recordset_update(table, columns, key, where)
        session.execute(statement, _recordset_parameter(statement, table, columns, rows, dialect))
        return
    # bindparam names must differ from the columns' names in an UPDATE's values.
    statement = update(table).where(*_conditions(table.c[key] == bindparam(f"_{key}"), where))
    statement = statement.values({name: bindparam(f"_{name}") for name in columns if name != key})
    session.connection().execute(
        statement, [{f"_{name}": value for name, value in row.items()} for row in rows]
    )


def insert_missing(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert the rows whose ``keys`` are not there yet; leave existing rows untouched.

    Re-running any stage writes the same rows again: the unique keys make that a no-op
    instead of a duplicate or an error.
    """
    insert_rows(session, table, rows, skip_existing=keys)


def _same_columns(what: str, table: Table, rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    first = rows[0].keys()
    for position, row in enumerate(rows):
        if row.keys() != first:
            # Both paths would otherwise drop a value silently (or fail on a missing one).
            raise ValueError(
                f"{what} {table.name}: row {position} has columns "
                f"{sorted(row)}, the first row {sorted(first)}"
            )
    return tuple(first)


def _recordset_parameter(
    statement: Executable,
    table: Table,
    columns: tuple[str, ...],
    rows: Sequence[dict[str, Any]],
    dialect: Dialect,
) -> dict[str, str]:
    """The rows as the one JSON parameter, each value through its column's type."""
    convert = _converters(table, columns, dialect)
    try:
        records = [{name: convert[name](row[name]) for name in columns} for row in rows]
    except (ValueError, LookupError, TypeError) as exc:
        # As SQLAlchemy reports a value its type refuses; the rows are not shown.
        raise StatementError(str(exc), str(statement), None, exc) from exc
    return {"rows": json_text(records)}


def _tuples(result: Result[Any], returning: Sequence[str]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in result] if returning else []


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
    table: Table,
    columns: tuple[str, ...],
    keys: tuple[str, ...] | None,
    returning: tuple[str, ...],
) -> Executable:
    """INSERT INTO table (columns) SELECT columns FROM jsonb_to_recordset(:rows) AS r(…).

    The JSON is written by the store's own serializer (``json_text``), so a JSON
    column's value is written as it would be one row at a time.
    """
    recordset = _recordset(table, columns)
    rows = select(*(recordset.c[name] for name in columns))
    statement = postgresql.insert(table).from_select(list(columns), rows)
    if keys is not None:
        statement = statement.on_conflict_do_nothing(index_elements=list(keys))
    if returning:
        return statement.returning(*(table.c[name] for name in returning))
    return statement


@functools.lru_cache(maxsize=64)
def _recordset_update(
    table: Table, columns: tuple[str, ...], key: str, where: ColumnElement[bool] | None
) -> Executable:
    """UPDATE table SET … FROM jsonb_to_recordset(:rows) AS r(…) WHERE table.key = r.key."""
    recordset = _recordset(table, columns)
    return (
        update(table)
        .where(*_conditions(table.c[key] == recordset.c[key], where))
        .values({name: recordset.c[name] for name in columns if name != key})
    )


def _conditions(
    match: ColumnElement[bool], where: ColumnElement[bool] | None
) -> tuple[ColumnElement[bool], ...]:
    """The key match, and the caller's further condition when there is one."""
    return (match,) if where is None else (match, where)


def _recordset(table: Table, columns: tuple[str, ...]) -> TableValuedAlias:
    """``jsonb_to_recordset(:rows) AS r(column type, …)``, typed as the table's columns."""
    return (
        func.jsonb_to_recordset(cast(bindparam("rows"), JSONB))
        .table_valued(*(column(name, table.c[name].type) for name in columns))
        .render_derived(name="r", with_types=True)
    )


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
