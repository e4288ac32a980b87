"""Alembic environment: migrations run on the connection ehrfetch hands over."""

from alembic import context

from ehrfetch.store.tables import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "ehrfetch migrations run through `ehrfetch db upgrade` (or ehrfetch.store.upgrade), "
        "which supplies the connection"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode copies the table instead.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
