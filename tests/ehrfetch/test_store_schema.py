from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError

from ehrfetch import store
from ehrfetch.errors import SchemaError
from ehrfetch.settings import StoreSettings
from ehrfetch.store.tables import (
    Base,
    Consent,
    ConsentStatus,
    Document,
    DocumentStatus,
    Participant,
    Sex,
    table_of,
)
from ehrfetch.store.tables import Provenance as ProvenanceRow
from support import StoreUnderTest, enroll, roster_row

EXPECTED_TABLES = {
    "participant", "participant_name", "participant_address", "consent", "run", "batch",
    "attempt", "organization", "patient_link", "document", "resource", "resource_source",
    "resource_alias", "provenance", "quarantine", "audit",
}  # fmt: skip


def tables(db: StoreUnderTest) -> set[str]:
    return set(inspect(db.engine).get_table_names()) - {"alembic_version"}


def test_migrations_create_exactly_the_models(empty_db: StoreUnderTest) -> None:
    store.upgrade(empty_db.engine)
    assert tables(empty_db) == EXPECTED_TABLES
    with empty_db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        # Any drift between tables.py and the migrations shows up here.
        assert compare_metadata(context, Base.metadata) == []


def test_migrations_are_reversible(empty_db: StoreUnderTest) -> None:
    store.upgrade(empty_db.engine)
    store.downgrade(empty_db.engine, "base")
    assert tables(empty_db) == set()
    assert store.schema_state(empty_db.engine).current is None
    store.upgrade(empty_db.engine)
    assert tables(empty_db) == EXPECTED_TABLES
    assert store.schema_state(empty_db.engine).up_to_date


def test_ensure_schema_creates_an_empty_database(empty_db: StoreUnderTest) -> None:
    store.ensure_schema(empty_db.engine)
    assert store.schema_state(empty_db.engine).up_to_date


def test_ensure_schema_refuses_an_outdated_database(empty_db: StoreUnderTest) -> None:
    store.upgrade(empty_db.engine)
    with empty_db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'fffffffffff0'"))
    with pytest.raises(SchemaError, match="newer than this ehrfetch"):
        store.ensure_schema(empty_db.engine)


def test_ensure_schema_asks_for_upgrade_when_behind(
    empty_db: StoreUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.upgrade(empty_db.engine)
    real = store.schema_state(empty_db.engine)
    # Pretend this code knows a newer head than the database has.
    monkeypatch.setattr(
        "ehrfetch.store.schema.schema_state",
        lambda engine: type(real)(current=real.current, head="9999", known=True),
    )
    with pytest.raises(SchemaError, match="run `ehrfetch db upgrade`"):
        store.ensure_schema(empty_db.engine)


def test_ensure_schema_refuses_a_foreign_database(empty_db: StoreUnderTest) -> None:
    with empty_db.engine.begin() as conn:
        conn.execute(text("CREATE TABLE somebody_elses (id INTEGER)"))
    with pytest.raises(SchemaError, match="has tables but no ehrfetch schema"):
        store.ensure_schema(empty_db.engine)


def test_sqlite_runs_in_wal_mode_with_foreign_keys(tmp_path: Path) -> None:
    engine = store.create_store_engine(StoreSettings(url=f"sqlite:///{tmp_path / 'x.db'}"))
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def add_participant(db: StoreUnderTest, research_id: str = "R1") -> int:
    now = datetime.now(UTC)
    with db.sessions.begin() as session:
        p = Participant(
            research_id=research_id,
            birth_date=date(1970, 1, 1),
            sex=Sex.FEMALE,
            created_at=now,
            updated_at=now,
        )
        session.add(p)
        session.flush()
        return p.id


def test_timestamps_come_back_aware_utc_on_every_backend(db: StoreUnderTest) -> None:
    pid = add_participant(db)
    eastern = timezone(timedelta(hours=-5))
    signed = datetime(2024, 3, 1, 9, 30, tzinfo=eastern)
    with db.sessions.begin() as session:
        session.add(
            Consent(
                participant_id=pid,
                type="ehr",
                status=ConsentStatus.ACTIVE,
                recorded_at=signed,
                imported_at=datetime.now(UTC),
            )
        )
    with db.sessions() as session:
        stored = session.scalars(select(Consent.recorded_at)).one()
    assert stored == signed
    assert stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)


def test_naive_timestamps_are_refused(db: StoreUnderTest) -> None:
    with pytest.raises(Exception, match="naive datetime"), db.sessions.begin() as session:
        session.add(
            Participant(
                research_id="R9",
                birth_date=date(1970, 1, 1),
                sex=Sex.MALE,
                created_at=datetime(2024, 1, 1),
                updated_at=datetime(2024, 1, 1),
            )
        )


def test_foreign_keys_cascade_on_delete(db: StoreUnderTest) -> None:
    pid = add_participant(db)
    with db.sessions.begin() as session:
        session.add(
            Consent(
                participant_id=pid,
                type="ehr",
                status=ConsentStatus.ACTIVE,
                recorded_at=datetime.now(UTC),
                imported_at=datetime.now(UTC),
            )
        )
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM participant"))
    with db.sessions() as session:
        assert session.scalars(select(Consent)).all() == []


def test_enum_columns_refuse_unknown_values(db: StoreUnderTest) -> None:
    add_participant(db)
    with pytest.raises(IntegrityError), db.engine.begin() as conn:
        conn.execute(text("UPDATE participant SET sex = 'mal'"))


def test_migration_0003_removes_only_the_provenance_without_targets(
    empty_db: StoreUnderTest, tmp_path: Path
) -> None:
    # Written by the code before 0003: a PDF's Provenance with "target": [] (invalid FHIR).
    store.upgrade(empty_db.engine, "0002")
    pid = enroll(empty_db, tmp_path, [roster_row("R1")])["R1"]
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with empty_db.sessions.begin() as session:
        for n, kind in enumerate(["application/pdf", "application/fhir+json", "text/plain"]):
            doc = session.execute(
                insert(table_of(Document)).returning(table_of(Document).c.id),
                {"participant_id": pid, "organization_id": "org1",
                 "document_reference_id": f"d{n}", "url": f"http://org1/Binary/{n}",
                 "content_type": kind, "status": DocumentStatus.STORED, "fetched_at": now},
            ).scalar_one()  # fmt: skip
            targets = [{"reference": "Condition/c1"}] if "fhir" in kind else []
            body = {"resourceType": "Provenance", "id": f"p{n}", "target": targets}
            if kind == "text/plain":
                del body["target"]
            session.execute(
                insert(table_of(ProvenanceRow)),
                {"participant_id": pid, "document_id": doc, "fhir_id": f"p{n}", "body": body,
                 "recorded_at": now},
            )  # fmt: skip
    store.upgrade(empty_db.engine)
    with empty_db.sessions() as session:
        left = session.scalars(select(ProvenanceRow.fhir_id)).all()
        documents = session.scalar(select(func.count()).select_from(Document))
    assert left == ["p1"]
    assert documents == 3


def test_large_values_are_compressed_with_lz4_where_postgresql_has_it(
    db: StoreUnderTest, tmp_path: Path
) -> None:
    # 0004: pglz was a measurable share of the server's CPU per document stored.
    if db.backend != "postgresql":
        assert store.schema_state(db.engine).up_to_date  # the revision changes nothing here
        return
    with db.engine.connect() as conn:
        lz4 = conn.execute(
            text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings"
                 " WHERE name = 'default_toast_compression'")
        ).scalar()  # fmt: skip
        if not lz4:
            pytest.skip("this PostgreSQL was built without lz4: 0004 leaves pglz in place")
        methods: dict[str, str] = dict(
            conn.execute(
                text("SELECT c.relname || '.' || a.attname, a.attcompression FROM pg_attribute a"
                     " JOIN pg_class c ON c.oid = a.attrelid"
                     " WHERE c.oid = ANY(ARRAY['document'::regclass, 'resource'::regclass,"
                     " 'provenance'::regclass]) AND a.attname IN ('content', 'body')")
            ).all()
        )  # fmt: skip
    assert methods == {"document.content": "l", "resource.body": "l", "provenance.body": "l"}
    pid = enroll(db, tmp_path, [roster_row("R1")])["R1"]
    content = b"<ClinicalDocument>" + b"<entry>same fact</entry>" * 4_000 + b"</ClinicalDocument>"
    with db.sessions.begin() as session:
        session.execute(
            insert(table_of(Document)),
            {"participant_id": pid, "organization_id": "org1", "document_reference_id": "d1",
             "url": "http://org1/Binary/1", "content_type": "application/hl7-v3+xml",
             "status": DocumentStatus.STORED, "fetched_at": datetime(2026, 6, 1, tzinfo=UTC),
             "content": content},
        )  # fmt: skip
    with db.engine.connect() as conn:
        method, stored = conn.execute(
            text("SELECT pg_column_compression(content), pg_column_size(content) FROM document")
        ).one()
    assert method == "lz4" and stored < len(content) // 10
