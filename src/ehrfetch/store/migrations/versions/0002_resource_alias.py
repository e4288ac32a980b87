"""resource_alias: cross-terminology de-duplication

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 10:00:00.000000

Resources stored before this revision have no aliases: they still merge with a new
document's resources by ``dedup_key`` as before, and by alias only once a document
that carries them again is stored (docs/dedup.md).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resource_alias",
        sa.Column(
            "participant_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("alias_key", sa.String(length=64), nullable=False),
        sa.Column(
            "resource_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("system", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["resource_id"],
            ["resource.id"],
            name=op.f("fk_resource_alias_resource_id_resource"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "participant_id",
            "resource_type",
            "alias_key",
            "resource_id",
            name=op.f("pk_resource_alias"),
        ),
    )
    with op.batch_alter_table("resource_alias", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_resource_alias_resource_id"), ["resource_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("resource_alias", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_resource_alias_resource_id"))

    op.drop_table("resource_alias")
