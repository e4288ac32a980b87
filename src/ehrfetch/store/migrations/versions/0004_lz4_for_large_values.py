"""PostgreSQL: large values compressed with lz4 instead of pglz

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:40:00.000000

PostgreSQL compresses a value that would make its row larger than about 2 KB before it
stores it out of line, by default with its own pglz. Every retrieved document's bytes
go through that (C-CDA and Bundles of ~14 KB on average in the throughput benchmark),
and pglz is slow to compress: lz4 spends a fraction of the CPU for a slightly larger
result (figures in docs/benchmarks.md, fourteenth session). The store's large columns
now ask for lz4 where the server was built with it (PostgreSQL 14 and later, as
Debian's and the PGDG packages are); elsewhere nothing changes. Values already stored
keep their compression: PostgreSQL reads either. SQLite does not compress.
"""

from collections.abc import Sequence

from alembic import op
from sqlalchemy import text

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column): the values that may be large — documents' bytes, FHIR bodies.
LARGE = (("document", "content"), ("resource", "body"), ("provenance", "body"))


def _lz4_available() -> bool:
    # A server built without lz4 lists only pglz among default_toast_compression's
    # values (and refuses SET COMPRESSION lz4).
    found = op.get_bind().execute(
        text(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        )
    )
    return bool(found.scalar())


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql" or not _lz4_available():
        return
    for table, column in LARGE:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column in LARGE:
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION default")
