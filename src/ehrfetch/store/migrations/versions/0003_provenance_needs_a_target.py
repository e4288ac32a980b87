"""provenance: none for a document nothing was derived from

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 13:10:00.000000

Until this revision a PDF or text document (stored, not parsed) got a Provenance with
an empty ``target``: not valid FHIR (Provenance.target is 1..*, and FHIR JSON has no
empty arrays), and exported as such. Such documents now get none; this removes those
written before. The documents' rows keep where they came from. Nothing to undo on
downgrade: the older code reads a store without them as it reads one with them.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WITHOUT_TARGET = {
    "postgresql": "coalesce(jsonb_array_length(body -> 'target'), 0) = 0",
    "sqlite": "coalesce(json_array_length(body, '$.target'), 0) = 0",
}


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(f"DELETE FROM provenance WHERE {_WITHOUT_TARGET[dialect]}")  # noqa: S608 - fixed text


def downgrade() -> None:
    pass
