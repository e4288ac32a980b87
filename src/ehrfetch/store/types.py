"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, DateTime, Dialect, Integer
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator

# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")

# JSONB on PostgreSQL: indexed, compact, and compared by value.
Json = JSON().with_variant(JSONB(), "postgresql")


def json_text(value: Any) -> str:
    """JSON as the store writes it (the engines' ``json_serializer``).

    orjson: the store writes every resource body, and the standard library's encoder
    was a visible share of that. Keys that are not strings are written as strings, as
    ``json.dumps`` does.
    """
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL keeps the zone; SQLite keeps none and would hand back naive datetimes,
    so comparisons between the two stores would differ. Naive input is refused: a
    naive time in this code base is a bug, not a local time.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite compares stored text, so one fixed form (naive UTC) keeps order right.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
