"""CPU of the paths the seventh session's profile of the 300,000 run pointed at.

Each figure is CPU seconds (``time.process_time``) of this process over repeated rounds,
the first round (warm-up: imports, statement compilation) left out, so it holds on a
busy machine better than wall time. Compare two commits by running this file against
each (``PYTHONPATH=<worktree>/src:<worktree> python scripts/bench_hot_paths.py``)::

    .venv/bin/python scripts/bench_hot_paths.py
    .venv/bin/python scripts/bench_hot_paths.py --store-url postgresql+psycopg://…/ehrfetch_bench

- ``read_ccda``: mock-network C-CDA documents, per document;
- ``make_document``: the mock network generating documents (its ``/Binary`` and search), per
  document;
- with ``--store-url`` (a store a throughput run filled; only read): ``load_records`` per
  1,000 participants, and the merge lookup of ``save_documents`` per participant, with
  the keys and alias keys that participant has stored (client CPU and wall per call);
- ``save_documents`` (added in the eighth session; same store, each save rolled back):
  three mock documents per participant (FHIR Bundle, C-CDA, PDF), normalized
  beforehand, written as acquisition writes them (consent gate, merge, resources,
  lineage, Provenance built per document): client CPU and wall per participant.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from ehrfetch.cohort.selection import rules_from
from ehrfetch.normalize.ccda import normalize_ccda, read_ccda
from ehrfetch.normalize.fhir_bundle import normalize_bundle
from ehrfetch.provenance import SourceDocument, build_provenance, provenance_id
from ehrfetch.settings import CohortSettings, StoreSettings
from ehrfetch.store import merge
from ehrfetch.store.documents import (
    DerivedResource,
    DocumentToSave,
    FetchedDocument,
    save_documents,
)
from ehrfetch.store.engine import create_store_engine
from ehrfetch.store.participants import load_records
from mock_network.documents import DocSubject, DocumentMix, make_document

ROUNDS = 5


def rounds(work: Callable[[], Any], n: int = ROUNDS) -> tuple[list[float], list[float]]:
    """CPU and wall seconds of each round after a warm-up round."""
    work()
    cpu, wall = [], []
    for _ in range(n):
        c, w = time.process_time(), time.perf_counter()
        work()
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return cpu, wall


def report(
    name: str, per: str, count: int, cpu: list[float], wall: list[float] | None = None
) -> None:
    line = (
        f"{name:14} CPU per {per}: median {statistics.median(cpu) / count * 1000:.3f} ms, "
        f"min {min(cpu) / count * 1000:.3f} ms"
    )
    if wall is not None:
        line += f"; wall median {statistics.median(wall) / count * 1000:.3f} ms"
    print(line)


def subjects(n: int) -> list[DocSubject]:
    return [
        DocSubject(k, f"MRN-{k}", "Sam", "Lee", dt.date(1950 + k % 50, 1, 10), "female")
        for k in range(n)
    ]


def bench_documents() -> None:
    ccda: list[tuple[bytes, str]] = []
    for s in subjects(60):
        for i in range(5):
            doc = make_document(s, "org-a", "ORG-A", 7, i, DocumentMix(0, 1, 0, 0))
            ccda.append((doc.body, s.patient_id))
    cpu, _ = rounds(lambda: [read_ccda(b, research_id="R", patient_id=p) for b, p in ccda])
    report("read_ccda", "document", len(ccda), cpu)

    people = subjects(100)
    seed = iter(range(1_000))  # a new seed each round: nothing is served from a cache

    def generate() -> None:
        round_seed = next(seed)
        for s in people:
            for i in range(3):
                make_document(s, "org-a", "ORG-A", round_seed, i)

    cpu, _ = rounds(generate)
    report("make_document", "document", 3 * len(people), cpu)


def bench_store(url: str) -> None:
    engine = create_engine(url)
    with Session(engine) as session:
        ids = [row[0] for row in session.execute(text("SELECT id FROM participant ORDER BY id"))]
        if len(ids) < 7_000:
            raise SystemExit(f"{url}: {len(ids)} participants; a filled store has 7,000 or more")
        chunk = iter(range(1, 1_000))

        def load() -> None:
            start = 1_000 * next(chunk)  # other participants each round
            load_records(session, ids[start : start + 1_000])

        cpu, wall = rounds(load)
        report("load_records", "1,000", 1, cpu, wall)

        cases = []
        with_resources = session.execute(
            text(
                "SELECT participant_id FROM resource GROUP BY participant_id "
                "HAVING count(*) > 20 ORDER BY participant_id LIMIT 60"
            )
        )
        for (pid,) in with_resources:
            keys = sorted(
                tuple(k)
                for k in session.execute(
                    text("SELECT resource_type, dedup_key FROM resource WHERE participant_id = :p"),
                    {"p": pid},
                )
            )
            aliases = sorted(
                {
                    a
                    for (a,) in session.execute(
                        text("SELECT alias_key FROM resource_alias WHERE participant_id = :p"),
                        {"p": pid},
                    )
                }
            )
            cases.append((pid, keys, aliases))
        # Before the seventh session, one statement with expanding lists; after, one per
        # dialect with arrays on PostgreSQL.
        postgresql = engine.dialect.name == "postgresql"
        arrays = isinstance(merge._LOOKUP, dict)
        statement: Any = merge._LOOKUP[postgresql] if arrays else merge._LOOKUP

        def params(pid: int, keys: list[tuple[str, str]], aliases: list[str]) -> dict[str, Any]:
            if arrays and postgresql:
                types = [t for t, _ in keys]
                return {
                    "pid": pid,
                    "types": types,
                    "keys": [k for _, k in keys],
                    "aliases": aliases,
                }
            return {"pid": pid, "keys": keys, "aliases": aliases}

        def lookups() -> None:
            for case in cases:
                session.execute(statement, params(*case)).all()

        cpu, wall = rounds(lookups)
        report("merge lookup", "participant", len(cases), cpu, wall)
    engine.dispose()


def bench_save(url: str) -> None:
    engine = create_store_engine(StoreSettings(url=url))  # as acquisition writes: orjson
    now = dt.datetime.now(dt.UTC)
    rules = rules_from(CohortSettings(), now)
    with Session(engine) as session:
        org = session.execute(text("SELECT min(id) FROM organization")).scalar()
        pids = [
            row[0]
            for row in session.execute(
                text(
                    "SELECT participant_id FROM attempt WHERE outcome = 'retrieved' "
                    "ORDER BY participant_id LIMIT 40"
                )
            )
        ]
    if org is None or len(pids) < 40:
        raise SystemExit(f"{url}: needs a store a throughput run filled")
    kinds = {
        "application/fhir+json": (DocumentMix(1, 0, 0, 0), normalize_bundle),
        "application/xml": (DocumentMix(0, 1, 0, 0), normalize_ccda),
        "application/pdf": (DocumentMix(0, 0, 1, 0), None),
    }
    work: list[tuple[int, list[DocumentToSave]]] = []
    for pid, subject in zip(pids, subjects(len(pids)), strict=True):
        items = []
        for index, (content_type, (mix, normalize)) in enumerate(kinds.items()):
            doc = make_document(subject, org, org.upper(), 11, index, mix)
            derived = []
            if normalize is not None:
                normalized = normalize(
                    doc.body, research_id=f"R{pid}", patient_id=subject.patient_id
                )
                derived = [
                    DerivedResource(r.resource_type, r.fhir_id, r.dedup_key, r.body, r.source_id)
                    for r in normalized.resources
                ]
            ref = f"bench-{doc.doc_id}"
            url_ = f"http://{org}.example/fhir/Binary/{ref}"
            document = FetchedDocument(
                participant_id=pid, organization_id=org, link_id=None,
                document_reference_id=ref, url=url_, content_type=content_type,
                declared_size=len(doc.body), declared_sha1=None, computed_sha1=None,
                sha256="ab" * 32, size=len(doc.body), content=doc.body,
            )  # fmt: skip
            source = SourceDocument(org, org.upper(), ref, url_, "ab" * 32, None, content_type)

            def provenance(
                targets: Any, rid: str = f"R{pid}", source: SourceDocument = source
            ) -> tuple[str, dict[str, Any]]:
                body = build_provenance(
                    research_id=rid, source=source, targets=targets, purpose_of_use="T-IAS",
                    recorded=now,
                )  # fmt: skip
                return provenance_id(rid, source), body

            items.append(DocumentToSave(document, derived, provenance, now))
        work.append((pid, items))
    with Session(engine) as session:

        def saves() -> None:
            for _, items in work:
                save_documents(session, items, rules)
                session.rollback()  # the store stays as the run left it

        cpu, wall = rounds(saves)
    report("save_documents", "participant", len(work), cpu, wall)
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store-url", help="a filled store (read only)")
    args = parser.parse_args()
    bench_documents()
    if args.store_url:
        bench_store(args.store_url)
        bench_save(args.store_url)


if __name__ == "__main__":
    main()
