"""``ehrfetch bench export``: does the NDJSON export stream, and how fast does it go?

Fills a fresh SQLite store with N synthetic, valid resources (Observations and
Conditions spread over participants, one Provenance per participant), exports them
(with every line validated, as ``ehrfetch export`` does) and reports time, lines/s
and memory: the process's resident set when the export starts, the largest one
sampled while it ran (every 10,000 lines), and the peak of the whole process. Memory
that stays flat shows as a growth during the export that does not depend on N.
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from ehrfetch import store
from ehrfetch.export import ExportResult, export_ndjson
from ehrfetch.settings import StoreSettings
from ehrfetch.store.engine import remove_sqlite_store
from ehrfetch.store.tables import (
    Document,
    DocumentStatus,
    Organization,
    Participant,
    Provenance,
    Resource,
    Sex,
    table_of,
)

_FILL_CHUNK = 10_000
_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_LOINC = ["4548-4", "2345-7", "718-7", "2160-0", "8480-6", "8462-4", "29463-7", "8302-2"]
_SNOMED = ["44054006", "38341003", "195967001", "13645005", "49436004"]


@dataclass(frozen=True)
class ExportBenchResult:
    resources: int
    participants: int
    lines: int
    invalid: int
    fill_seconds: float
    export_seconds: float
    lines_per_second: float
    rss_at_export_start_mb: float
    rss_max_during_export_mb: float
    rss_growth_during_export_mb: float
    peak_rss_mb: float
    store: str
    out_dir: str


def as_dict(result: ExportBenchResult) -> dict[str, Any]:
    return asdict(result)


def run_export_bench(
    workdir: Path, resources: int = 1_000_000, *, participants: int = 1000, chunk: int = 1000
) -> ExportBenchResult:
    """Fill ``workdir/bench-export.db`` with ``resources`` resources and export them to
    ``workdir/export`` (both emptied first)."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "bench-export.db"
    remove_sqlite_store(db)
    out_dir = workdir / "export"
    if out_dir.exists():
        for old in out_dir.iterdir():
            old.unlink()
    engine = store.create_store_engine(StoreSettings(url=f"sqlite:///{db}"))
    try:
        store.upgrade(engine)
        sessions = store.session_factory(engine)
        started = time.perf_counter()
        with sessions.begin() as session:
            _fill(session, resources, participants)
        fill_seconds = time.perf_counter() - started

        samples: list[float] = []
        start_rss = _current_rss_mb()
        started = time.perf_counter()
        with sessions() as session:
            result: ExportResult = export_ndjson(
                session,
                out_dir,
                chunk=chunk,
                progress=lambda _lines: samples.append(_current_rss_mb()),
            )
        export_seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    top = max([start_rss, *samples])
    return ExportBenchResult(
        resources=resources,
        participants=participants,
        lines=result.lines,
        invalid=result.invalid,
        fill_seconds=round(fill_seconds, 2),
        export_seconds=round(export_seconds, 2),
        lines_per_second=round(result.lines / export_seconds) if export_seconds else 0,
        rss_at_export_start_mb=round(start_rss, 1),
        rss_max_during_export_mb=round(top, 1),
        rss_growth_during_export_mb=round(top - start_rss, 1),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        store=str(db),
        out_dir=str(out_dir),
    )


def _fill(session: Session, resources: int, participants: int) -> None:
    participants = max(1, min(participants, resources or 1))
    session.execute(
        insert(table_of(Participant)),
        [
            {
                "research_id": f"B{p:07d}",
                "birth_date": date(1950 + p % 50, 1 + p % 12, 1 + p % 28),
                "sex": Sex.FEMALE if p % 2 else Sex.MALE,
                "created_at": _NOW,
                "updated_at": _NOW,
            }
            for p in range(participants)
        ],
    )
    ids = dict(session.execute(select(Participant.research_id, Participant.id)).all())
    rows: list[dict[str, Any]] = []
    for n in range(resources):
        rows.append(_resource(n, n % participants, ids))
        if len(rows) == _FILL_CHUNK:
            session.execute(insert(table_of(Resource)), rows)
            rows = []
    if rows:
        session.execute(insert(table_of(Resource)), rows)
    _fill_provenance(session, participants, ids)


def _resource(n: int, p: int, ids: dict[str, int]) -> dict[str, Any]:
    rid = f"B{p:07d}"
    fhir_id = f"r{n:010d}"
    if n % 4 == 0:
        body: dict[str, Any] = {
            "resourceType": "Condition",
            "id": fhir_id,
            "clinicalStatus": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                        "code": "active",
                    }
                ]
            },
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": _SNOMED[n % 5]}]},
            "subject": {"reference": f"Patient/{rid}"},
            "onsetDateTime": f"20{10 + n % 15}-0{1 + n % 9}-1{n % 10}",
        }
    else:
        body = {
            "resourceType": "Observation",
            "id": fhir_id,
            "status": "final",
            "code": {
                "coding": [{"system": "http://loinc.org", "code": _LOINC[n % 8]}],
                "text": "synthetic",
            },
            "subject": {"reference": f"Patient/{rid}"},
            "effectiveDateTime": f"20{10 + n % 15}-0{1 + n % 9}-1{n % 10}T08:30:00Z",
            "valueQuantity": {
                "value": round(3 + (n % 97) / 10, 1),
                "unit": "mg/dL",
                "system": "http://unitsofmeasure.org",
                "code": "mg/dL",
            },
        }
    return {
        "participant_id": ids[rid],
        "resource_type": body["resourceType"],
        "fhir_id": fhir_id,
        "dedup_key": fhir_id,
        "body": body,
        "created_at": _NOW,
        "updated_at": _NOW,
    }


def _fill_provenance(session: Session, participants: int, ids: dict[str, int]) -> None:
    """One document and its Provenance per participant (targets: a sample, not all)."""
    session.execute(
        insert(table_of(Organization)),
        [
            {
                "id": "bench",
                "name": "Bench",
                "base_url": "http://b/fhir",
                "host": "b",
                "updated_at": _NOW,
            }
        ],
    )
    documents = [
        {
            "participant_id": ids[f"B{p:07d}"], "organization_id": "bench",
            "document_reference_id": f"doc{p}", "url": f"http://b/fhir/Binary/doc{p}",
            "content_type": "application/fhir+json", "status": DocumentStatus.STORED,
            "fetched_at": _NOW,
        }
        for p in range(participants)
    ]  # fmt: skip
    session.execute(insert(table_of(Document)), documents)
    doc_ids = dict(session.execute(select(Document.participant_id, Document.id)).all())
    rows = []
    for p in range(participants):
        pid = ids[f"B{p:07d}"]
        body = {
            "resourceType": "Provenance",
            "id": f"prov{p:07d}",
            "target": [{"reference": f"Observation/r{p + 1:010d}"}],
            "recorded": _NOW.isoformat(),
            "agent": [{"who": {"display": "ehrfetch bench"}}],
        }
        rows.append(
            {"participant_id": pid, "document_id": doc_ids[pid], "fhir_id": body["id"],
             "body": body, "recorded_at": _NOW}
        )  # fmt: skip
    session.execute(insert(table_of(Provenance)), rows)


def _current_rss_mb() -> float:
    """This process's resident set now (Linux /proc; the peak where that is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
