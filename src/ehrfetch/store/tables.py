"""The store's tables (SQLAlchemy 2.0 typed ORM).

One module holds every table so the schema reads in one place; Alembic migrations in
``store/migrations`` create exactly this (a test compares them). Values that come from
a fixed vocabulary are ``StrEnum`` columns stored as short strings with a CHECK, which
behaves the same on SQLite and PostgreSQL and can grow by migration.

Demographics live only in ``participant``, ``participant_name`` and
``participant_address``. ``audit`` keeps the research id as plain text (no foreign
key) so the trail survives a consent withdrawal that purges everything else.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ehrfetch.store.types import Id, Json, UtcDateTime

# Stable constraint names, so migrations can refer to them on both databases.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, for bulk writes.

    The ORM's bulk INSERT sends one statement per row on psycopg; a Core insert of a
    list of rows is one executemany (measured: 0.5 s against 7 s for 20,000 rows).
    """
    table = model.__table__
    assert isinstance(table, Table)
    return table


def _enum(enum_cls: type[StrEnum], name: str) -> Enum:
    return Enum(
        enum_cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=24,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Sex(StrEnum):
    """FHIR administrative gender."""

    MALE = "male"
    FEMALE = "female"
    OTHER = "other"
    UNKNOWN = "unknown"


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    DECLINED = "declined"


class RunStatus(StrEnum):
    PENDING = "pending"
    """Selected into batches; nothing has run yet."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


class BatchStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


OPEN_BATCH_STATUSES = (BatchStatus.PENDING, BatchStatus.RUNNING)


class AttemptOutcome(StrEnum):
    RETRIEVED = "retrieved"
    """At least one accepted link, and documents stored for it (by this attempt or an
    earlier one whose outcome was never recorded, or a re-run)."""
    NO_DOCUMENTS = "no_documents"
    """Accepted links, but the organizations hold no documents for them."""
    NO_MATCH = "no_match"
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"
    WITHDRAWN = "withdrawn"
    """Consent was withdrawn while the attempt was pending or running."""


class LinkDecision(StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    REVIEW = "review"


class DecidedBy(StrEnum):
    AUTO = "auto"
    OPERATOR = "operator"


class DocumentStatus(StrEnum):
    STORED = "stored"
    QUARANTINED = "quarantined"


def _participant_fk() -> Any:
    return ForeignKey("participant.id", ondelete="CASCADE")


class Participant(Base):
    __tablename__ = "participant"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    research_id: Mapped[str] = mapped_column(String(64), unique=True)
    birth_date: Mapped[date] = mapped_column(Date)
    sex: Mapped[Sex] = mapped_column(_enum(Sex, "sex"))
    phone: Mapped[str | None] = mapped_column(String(32))
    email: Mapped[str | None] = mapped_column(String(254))
    ssn_last4: Mapped[str | None] = mapped_column(String(4))
    ehr_on_file: Mapped[bool] = mapped_column(Boolean, default=False)
    """The program already holds EHR for this participant from another channel."""
    record_hash: Mapped[str | None] = mapped_column(String(64))
    """Hash of the last imported roster record: an unchanged row re-imported writes nothing."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    names: Mapped[list[ParticipantName]] = relationship(
        back_populates="participant",
        cascade="all, delete-orphan",
        order_by="ParticipantName.position",
    )
    addresses: Mapped[list[ParticipantAddress]] = relationship(
        back_populates="participant",
        cascade="all, delete-orphan",
        order_by="ParticipantAddress.position",
    )


class ParticipantName(Base):
    """A participant's name: the current one (``current``) and earlier ones."""

    __tablename__ = "participant_name"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk(), index=True)
    current: Mapped[bool] = mapped_column(Boolean)
    position: Mapped[int] = mapped_column(Integer)
    given: Mapped[str | None] = mapped_column(String(100))
    middle: Mapped[str | None] = mapped_column(String(100))
    family: Mapped[str | None] = mapped_column(String(100))
    suffix: Mapped[str | None] = mapped_column(String(16))

    participant: Mapped[Participant] = relationship(back_populates="names")


class ParticipantAddress(Base):
    """A participant's address: the current one (``current``) and earlier ones."""

    __tablename__ = "participant_address"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk(), index=True)
    current: Mapped[bool] = mapped_column(Boolean)
    position: Mapped[int] = mapped_column(Integer)
    line1: Mapped[str | None] = mapped_column(String(200))
    line2: Mapped[str | None] = mapped_column(String(200))
    city: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str | None] = mapped_column(String(2))
    postal_code: Mapped[str | None] = mapped_column(String(10))

    participant: Mapped[Participant] = relationship(back_populates="addresses")


class Consent(Base):
    """One consent as signed; the latest ``recorded_at`` of a type is the one in force."""

    __tablename__ = "consent"
    __table_args__ = (UniqueConstraint("participant_id", "type", "recorded_at"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk())
    type: Mapped[str] = mapped_column(String(32))
    status: Mapped[ConsentStatus] = mapped_column(_enum(ConsentStatus, "consent_status"))
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    imported_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Run(Base):
    __tablename__ = "run"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    """What started it: ``acquire``, ``rerun``, ``select`` (selection only)."""
    status: Mapped[RunStatus] = mapped_column(_enum(RunStatus, "run_status"))
    parameters: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    summary: Mapped[dict[str, Any] | None] = mapped_column(Json)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    batches: Mapped[list[Batch]] = relationship(back_populates="run", order_by="Batch.seq")


class Batch(Base):
    __tablename__ = "batch"
    __table_args__ = (UniqueConstraint("run_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("run.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[BatchStatus] = mapped_column(_enum(BatchStatus, "batch_status"), index=True)
    size: Mapped[int] = mapped_column(Integer)
    tries: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    """Refreshed while running, so a batch whose process died can be told apart."""
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    run: Mapped[Run] = relationship(back_populates="batches")


class Attempt(Base):
    """One participant in one batch; ``outcome`` is empty until the batch gets to them."""

    __tablename__ = "attempt"
    __table_args__ = (
        UniqueConstraint("batch_id", "participant_id"),
        Index(None, "participant_id", "outcome", "finished_at"),
        # A participant waits in at most one batch at a time: two selections racing
        # (two schedulers, an operator and the nightly run) cannot both take them.
        Index(
            "ix_attempt_one_pending",
            "participant_id",
            unique=True,
            sqlite_where=text("outcome IS NULL"),
            postgresql_where=text("outcome IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"))
    participant_id: Mapped[int] = mapped_column(_participant_fk())
    outcome: Mapped[AttemptOutcome | None] = mapped_column(_enum(AttemptOutcome, "outcome"))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_detail: Mapped[str | None] = mapped_column(Text)
    links_accepted: Mapped[int] = mapped_column(Integer, default=0)
    documents: Mapped[int] = mapped_column(Integer, default=0)
    resources: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Organization(Base):
    """A member organization as the network directory last described it."""

    __tablename__ = "organization"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class PatientLink(Base):
    """A candidate at one organization and what ehrfetch decided about it, and why."""

    __tablename__ = "patient_link"
    __table_args__ = (
        UniqueConstraint("participant_id", "organization_id", "network_patient_id"),
        Index(None, "decision"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk())
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    network_patient_id: Mapped[str] = mapped_column(String(128))
    grade: Mapped[str | None] = mapped_column(String(16))
    """The network's match grade: advice, not a verdict."""
    network_score: Mapped[float | None] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    """ehrfetch's own score."""
    decision: Mapped[LinkDecision] = mapped_column(_enum(LinkDecision, "link_decision"))
    decided_by: Mapped[DecidedBy] = mapped_column(_enum(DecidedBy, "decided_by"))
    reasons: Mapped[list[str]] = mapped_column(Json, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Document(Base):
    """A fetched document: where it came from, what was declared and what arrived."""

    __tablename__ = "document"
    __table_args__ = (
        UniqueConstraint("participant_id", "organization_id", "document_reference_id"),
        Index(None, "sha256"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk())
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    link_id: Mapped[int | None] = mapped_column(ForeignKey("patient_link.id", ondelete="SET NULL"))
    document_reference_id: Mapped[str] = mapped_column(String(256))
    url: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(128))
    declared_size: Mapped[int | None] = mapped_column(Id)
    declared_sha1: Mapped[str | None] = mapped_column(String(64))
    computed_sha1: Mapped[str | None] = mapped_column(String(64))
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int | None] = mapped_column(Id)
    content: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_path: Mapped[str | None] = mapped_column(Text)
    """Content-addressed file when the bytes are kept outside the database."""
    status: Mapped[DocumentStatus] = mapped_column(_enum(DocumentStatus, "document_status"))
    quarantine_reason: Mapped[str | None] = mapped_column(Text)
    fetched_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Resource(Base):
    """One clinical fact as a FHIR R4 resource, stored once however many sites sent it."""

    __tablename__ = "resource"
    __table_args__ = (
        UniqueConstraint("participant_id", "resource_type", "dedup_key"),
        UniqueConstraint("resource_type", "fhir_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk())
    resource_type: Mapped[str] = mapped_column(String(64))
    fhir_id: Mapped[str] = mapped_column(String(64))
    dedup_key: Mapped[str] = mapped_column(String(128))
    body: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ResourceSource(Base):
    """Lineage: which document(s) a resource was derived from."""

    __tablename__ = "resource_source"

    resource_id: Mapped[int] = mapped_column(
        ForeignKey("resource.id", ondelete="CASCADE"), primary_key=True
    )
    document_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    source_resource_id: Mapped[str | None] = mapped_column(String(256))
    """The resource's id inside the source document, when it had one."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ResourceAlias(Base):
    """One (system, code) a stored resource's concept was sent with, by any source.

    ``dedup_key`` names a fact by its most specific code, so the same fact coded in
    another terminology (ICD-10-CM alone at one site, SNOMED CT with an ICD-10-CM
    translation at another) has another key. Each row is an alias key — the key's other
    parts plus this one coding (``normalize.dedup.fact_of``) — under which the resource
    can be found, and the rows of a resource together are every coding any of its
    sources gave it, which is what a candidate is checked against before a merge
    (``normalize.dedup.same_concept``). Several resources may share an alias key (one
    ICD-10-CM code for two SNOMED CT concepts): the key is a lookup, not a constraint.
    A resource only ever coded with one coding has no rows: its ``dedup_key`` is that
    coding's alias key (``store/merge.py``).
    """

    __tablename__ = "resource_alias"

    # No foreign key to participant: the one to resource already deletes these rows
    # with the participant's resources, and each key checked is a lookup per row
    # written, on the path every document takes.
    participant_id: Mapped[int] = mapped_column(Id, primary_key=True)
    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    alias_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[int] = mapped_column(
        # Indexed: deleting a resource looks its aliases up by it (the ON DELETE).
        ForeignKey("resource.id", ondelete="CASCADE"),
        primary_key=True,
        index=True,
    )
    # Text, not String(n): a site's code is whatever it sent, and an over-long one
    # must not fail the document's transaction on PostgreSQL.
    system: Mapped[str] = mapped_column(Text)
    code: Mapped[str] = mapped_column(Text)


class Provenance(Base):
    """The FHIR Provenance of what was derived from one document."""

    __tablename__ = "provenance"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int] = mapped_column(_participant_fk())
    document_id: Mapped[int] = mapped_column(
        ForeignKey("document.id", ondelete="CASCADE"), unique=True
    )
    fhir_id: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[dict[str, Any]] = mapped_column(Json)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Quarantine(Base):
    """Something refused on the way in, with the reason (never its content)."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    participant_id: Mapped[int | None] = mapped_column(_participant_fk(), index=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("document.id", ondelete="CASCADE"))
    organization_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    """``document``, ``resource``, ``attachment``, …"""
    reason: Mapped[str] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Audit(Base):
    """Every outbound query and every purge: who, where, why, when, outcome. No PHI."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    research_id: Mapped[str | None] = mapped_column(String(64), index=True)
    organization_id: Mapped[str | None] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(64))
    http_status: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    run_id: Mapped[int | None] = mapped_column(Id)
    batch_id: Mapped[int | None] = mapped_column(Id)
