"""The store: the only package that speaks SQL.

Public surface: :func:`create_store_engine`, :func:`session_factory`, the schema
functions (:func:`upgrade`, :func:`downgrade`, :func:`ensure_schema`,
:func:`schema_state`) and the tables in :mod:`ehrfetch.store.tables`.
"""

from ehrfetch.store.engine import create_store_engine, session_factory
from ehrfetch.store.schema import SchemaState, downgrade, ensure_schema, schema_state, upgrade

__all__ = [
    "SchemaState",
    "create_store_engine",
    "downgrade",
    "ensure_schema",
    "schema_state",
    "session_factory",
    "upgrade",
]
