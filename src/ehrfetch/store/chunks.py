"""Long id lists cut into statements of a safe size."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

_T = TypeVar("_T")

CHUNK = 1_000
"""Items per statement: with up to 8 bound values each (8,000 a statement), below the
drivers' limits (SQLite 32,766, PostgreSQL 65,535) at any batch size (up to 100,000)."""


def chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
