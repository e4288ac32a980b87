"""One participant, two organizations, two formats: each shared fact is stored once.

Organization 1 sends a FHIR Bundle, organization 2 a C-CDA. Both state the same problem
(ICD-10-CM only at one, SNOMED CT with an ICD-10-CM translation at the other), the same
HbA1c result and the same flu shot, each written the way its format writes it; each
also states one near miss that must stay its own fact. Both documents go through the
readers and ``save_document`` as acquisition does (``acquire._one_document``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, event, func, select

from ehrfetch.cohort.selection import rules_from
from ehrfetch.export import export_ndjson
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.codes import CVX, ICD10CM, LOINC, UCUM
from ehrfetch.normalize.fhir_bundle import NormalizedDocument, normalize_bundle
from ehrfetch.provenance import SourceDocument, build_provenance, provenance_id
from ehrfetch.settings import CohortSettings
from ehrfetch.store.documents import (
    DerivedResource,
    DocumentToSave,
    FetchedDocument,
    SaveOutcome,
    SaveResult,
    save_document,
    save_documents,
)
from ehrfetch.store.tables import (
    Document,
    Provenance,
    Resource,
    ResourceAlias,
    ResourceSource,
)
from support import NOW, StoreUnderTest, enroll, roster_row

RULES = rules_from(CohortSettings(), NOW)
RID = "R1"
T = "2.16.840.1.113883.10.20.22"
SNOMED_OID = "2.16.840.1.113883.6.96"
ICD10_OID = "2.16.840.1.113883.6.90"

# -- organization 1: a FHIR Bundle about its patient "fhir-7" --------------------------------

FHIR_RESOURCES: list[dict[str, Any]] = [
    {   # the problem, ICD-10-CM only, with a time on the day
        "resourceType": "Condition", "id": "cond-1",
        "code": {"coding": [{"system": ICD10CM, "code": "E11.9", "display": "Type 2 DM"}]},
        "onsetDateTime": "2013-07-15T09:00:00-05:00",
    },
    {   # the HbA1c, 7.20 %, at 14:30 UTC
        "resourceType": "Observation", "id": "a1c-1", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
        "effectiveDateTime": "2013-07-15T14:30:00Z",
        "valueQuantity": {"value": 7.20, "unit": "%", "system": UCUM, "code": "%"},
    },
    {   # the flu shot, at a time on the day
        "resourceType": "Immunization", "id": "imm-1", "status": "completed",
        "vaccineCode": {"coding": [{"system": CVX, "code": "140"}]},
        "occurrenceDateTime": "2013-10-01T10:00:00-04:00",
    },
    {   # near miss: the next HbA1c, 8.1 % (the C-CDA says 8.0 at that minute)
        "resourceType": "Observation", "id": "a1c-2", "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
        "effectiveDateTime": "2014-01-10T14:30:00Z",
        "valueQuantity": {"value": 8.1, "unit": "%", "system": UCUM, "code": "%"},
    },
    {   # near miss: next year's flu shot, given (the C-CDA says refused that day)
        "resourceType": "Immunization", "id": "imm-2", "status": "completed",
        "vaccineCode": {"coding": [{"system": CVX, "code": "140"}]},
        "occurrenceDateTime": "2014-10-01",
    },
]  # fmt: skip


def fhir_bundle() -> bytes:
    entries: list[dict[str, Any]] = [
        {"fullUrl": "urn:uuid:pat", "resource": {"resourceType": "Patient", "id": "fhir-7"}}
    ]
    for resource in FHIR_RESOURCES:
        about = "patient" if resource["resourceType"] == "Immunization" else "subject"
        entries.append(
            {
                "fullUrl": f"urn:uuid:{resource['id']}",
                "resource": {**resource, about: {"reference": "Patient/fhir-7"}},
            }
        )
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


# -- organization 2: a C-CDA about its patient "ccda-3" --------------------------------------


def problem(snomed: str, name: str) -> str:
    return (
        f'<entry><act classCode="ACT" moodCode="EVN"><templateId root="{T}.4.3"/>'
        '<code code="CONC" codeSystem="2.16.840.1.113883.5.6"/><statusCode code="active"/>'
        '<entryRelationship typeCode="SUBJ">'
        f'<observation classCode="OBS" moodCode="EVN"><templateId root="{T}.4.4"/>'
        f'<id root="2.16.840.1.113883.19" extension="prob-{snomed}"/>'
        f'<code code="55607006" codeSystem="{SNOMED_OID}"/><statusCode code="completed"/>'
        '<effectiveTime><low value="20130715"/></effectiveTime>'
        f'<value xsi:type="CD" code="{snomed}" codeSystem="{SNOMED_OID}" displayName="{name}">'
        f'<translation code="E11.9" codeSystem="{ICD10_OID}"/></value>'
        "</observation></entryRelationship></act></entry>"
    )


def hba1c(value: str, when: str) -> str:
    return (
        f'<entry><organizer classCode="BATTERY" moodCode="EVN"><templateId root="{T}.4.1"/>'
        '<statusCode code="completed"/><component>'
        f'<observation classCode="OBS" moodCode="EVN"><templateId root="{T}.4.2"/>'
        '<code code="4548-4" codeSystem="2.16.840.1.113883.6.1" displayName="HbA1c"/>'
        f'<statusCode code="completed"/><effectiveTime value="{when}"/>'
        f'<value xsi:type="PQ" value="{value}" unit="%"/>'
        "</observation></component></organizer></entry>"
    )


def flu_shot(when: str, refused: bool) -> str:
    return (
        '<entry><substanceAdministration classCode="SBADM" moodCode="EVN" '
        f'negationInd="{str(refused).lower()}"><templateId root="{T}.4.52"/>'
        f'<statusCode code="completed"/><effectiveTime value="{when}"/>'
        f'<consumable><manufacturedProduct><templateId root="{T}.4.54"/><manufacturedMaterial>'
        '<code code="140" codeSystem="2.16.840.1.113883.12.292">'
        '<translation code="49281-0703-55" codeSystem="2.16.840.1.113883.6.69"/></code>'
        "</manufacturedMaterial></manufacturedProduct></consumable>"
        "</substanceAdministration></entry>"
    )


def section(template: str, *entries: str) -> str:
    return (
        f'<component><section><templateId root="{T}.{template}" extension="2015-08-01"/>'
        f"<title>t</title><text>t</text>{''.join(entries)}</section></component>"
    )


def ccda_document() -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ClinicalDocument xmlns="urn:hl7-org:v3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<realmCode code="US"/><typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
        f'<templateId root="{T}.1.2" extension="2015-08-01"/>'
        '<id root="2.16.840.1.113883.19.5" extension="doc-1"/>'
        '<code code="34133-9" codeSystem="2.16.840.1.113883.6.1"/>'
        '<effectiveTime value="20140301120000-0500"/>'
        '<recordTarget><patientRole><id root="2.16.840.1.113883.19.5" extension="ccda-3"/>'
        "</patientRole></recordTarget><component><structuredBody>"
        + section(
            "2.5.1",
            problem("44054006", "Type 2 diabetes mellitus"),  # the problem
            # Near miss: another SNOMED CT concept with the same ICD-10-CM code.
            problem("46635009", "Type 1 diabetes mellitus"),
        )
        + section(
            "2.3.1",
            hba1c("7.2", "201307150930-0500"),  # the HbA1c: 09:30 at -05:00 is 14:30 UTC
            hba1c("8.0", "201401100930-0500"),  # near miss: another value, same minute
        )
        + section(
            "2.2.1",
            flu_shot("20131001", refused=False),  # the flu shot
            flu_shot("20141001", refused=True),  # near miss: refused, not given
        )
        + "</structuredBody></component></ClinicalDocument>"
    ).encode()


# -- storing them as acquisition does ---------------------------------------------------------


@pytest.fixture
def pid(db: StoreUnderTest, tmp_path: Path) -> int:
    return enroll(db, tmp_path, [roster_row(RID)])[RID]


def derived(normalized: NormalizedDocument) -> list[DerivedResource]:
    return [
        DerivedResource(r.resource_type, r.fhir_id, r.dedup_key, r.body, r.source_id)
        for r in normalized.resources
    ]


def to_save(pid: int, org: str, body: bytes, content_type: str) -> DocumentToSave:
    if content_type == "application/fhir+json":
        normalized = normalize_bundle(body, research_id=RID, patient_id="fhir-7")
    else:
        normalized = normalize_ccda(body, research_id=RID, patient_id="ccda-3")
    assert normalized.skipped == []
    url = f"http://{org}/fhir/Binary/{org}-doc"
    document = FetchedDocument(
        participant_id=pid, organization_id=org, link_id=None,
        document_reference_id=f"{org}-doc", url=url, content_type=content_type,
        declared_size=len(body), declared_sha1=None, computed_sha1=None, sha256="ab" * 32,
        size=len(body), content=body,
    )  # fmt: skip
    source = SourceDocument(org, org.upper(), f"{org}-doc", url, "ab" * 32, None, content_type)

    def provenance(targets: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
        built = build_provenance(
            research_id=RID, source=source, targets=targets, purpose_of_use="TREAT", recorded=NOW
        )
        return provenance_id(RID, source), built

    return DocumentToSave(document, derived(normalized), provenance, NOW)


def save(db: StoreUnderTest, pid: int, org: str, body: bytes, content_type: str) -> SaveResult:
    item = to_save(pid, org, body, content_type)
    with db.sessions.begin() as session:
        return save_document(
            session, item.document, item.resources, item.provenance, RULES, item.now
        )


def fhir_item(pid: int) -> DocumentToSave:
    return to_save(pid, "org1", fhir_bundle(), "application/fhir+json")


def ccda_item(pid: int) -> DocumentToSave:
    return to_save(pid, "org2", ccda_document(), "application/xml")


def save_together(db: StoreUnderTest, items: list[DocumentToSave]) -> list[SaveResult]:
    with db.sessions.begin() as session:
        return save_documents(session, items, RULES)


def save_fhir(db: StoreUnderTest, pid: int) -> SaveResult:
    return save(db, pid, "org1", fhir_bundle(), "application/fhir+json")


def save_ccda(db: StoreUnderTest, pid: int) -> SaveResult:
    return save(db, pid, "org2", ccda_document(), "application/xml")


def clear_documents(db: StoreUnderTest) -> None:
    with db.sessions.begin() as session:
        for model in (Provenance, ResourceAlias, ResourceSource, Resource, Document):
            session.execute(delete(model))


def counts(db: StoreUnderTest) -> tuple[int, ...]:
    with db.sessions() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Document, Resource, ResourceSource, Provenance, ResourceAlias)
        )


def sources_by_fact(db: StoreUnderTest) -> dict[tuple[str, str], set[str]]:
    """(type, concept code and when) → organizations whose documents the resource came from."""
    found: dict[tuple[str, str], set[str]] = {}
    with db.sessions() as session:
        rows = session.execute(
            select(Resource.resource_type, Resource.body, Document.organization_id)
            .join(ResourceSource, ResourceSource.resource_id == Resource.id)
            .join(Document, Document.id == ResourceSource.document_id)
        )
        for kind, body, org in rows:
            found.setdefault((kind, describe(body)), set()).add(org)
    return found


def describe(body: dict[str, Any]) -> str:
    concept = body.get("code") or body.get("vaccineCode") or {}
    codes = ",".join(sorted(c["code"] for c in concept["coding"]))
    when = body.get("onsetDateTime") or body.get("effectiveDateTime")
    when = when or body.get("occurrenceDateTime")
    value = body.get("valueQuantity", {}).get("value")
    extra = f" {value}" if value is not None else ""
    return f"{codes} @{when}{extra} {body.get('status', '')}".strip()


def provenance_targets(db: StoreUnderTest) -> dict[str, set[str]]:
    with db.sessions() as session:
        rows = session.execute(
            select(Document.organization_id, Provenance.body).join(
                Document, Document.id == Provenance.document_id
            )
        )
        return {org: {t["reference"] for t in body["target"]} for org, body in rows}


def stored_references(db: StoreUnderTest) -> set[str]:
    with db.sessions() as session:
        return {
            f"{kind}/{fhir_id}"
            for kind, fhir_id in session.execute(select(Resource.resource_type, Resource.fhir_id))
        }


# -- the tests --------------------------------------------------------------------------------


def test_shared_facts_are_stored_once_with_both_sources(db: StoreUnderTest, pid: int) -> None:
    first = save_fhir(db, pid)
    assert (first.outcome, first.resources, first.new_resources) == (SaveOutcome.STORED, 5, 5)
    second = save_ccda(db, pid)
    # Six facts in the C-CDA: three already stored (merged), three near misses (new).
    assert (second.outcome, second.resources, second.new_resources) == (SaveOutcome.STORED, 6, 3)

    # The first body stays (organization 1's words); both organizations are its sources.
    assert sources_by_fact(db) == {
        ("Condition", "E11.9 @2013-07-15T09:00:00-05:00"): {"org1", "org2"},
        ("Observation", "4548-4 @2013-07-15T14:30:00Z 7.2 final"): {"org1", "org2"},
        ("Immunization", "140 @2013-10-01T10:00:00-04:00 completed"): {"org1", "org2"},
        # The near misses: each its own fact, with its one source.
        ("Condition", "46635009,E11.9 @2013-07-15"): {"org2"},
        ("Observation", "4548-4 @2014-01-10T14:30:00Z 8.1 final"): {"org1"},
        ("Observation", "4548-4 @2014-01-10T09:30:00-05:00 8.0 final"): {"org2"},
        ("Immunization", "140 @2014-10-01 completed"): {"org1"},
        ("Immunization", "140,49281-0703-55 @2014-10-01 not-done"): {"org2"},
    }
    assert counts(db)[:4] == (2, 8, 11, 2)


def test_each_documents_provenance_names_the_stored_resources(db: StoreUnderTest, pid: int) -> None:
    save_fhir(db, pid)
    save_ccda(db, pid)
    stored = stored_references(db)
    targets = provenance_targets(db)
    assert targets["org1"] <= stored
    assert targets["org2"] <= stored  # the merged facts under the ids they were stored with
    shared = targets["org1"] & targets["org2"]
    assert sorted(ref.split("/")[0] for ref in shared) == [
        "Condition",
        "Immunization",
        "Observation",
    ]
    assert (len(targets["org1"]), len(targets["org2"])) == (5, 6)


def test_saving_both_documents_again_changes_nothing(db: StoreUnderTest, pid: int) -> None:
    save_fhir(db, pid)
    save_ccda(db, pid)
    before = counts(db)
    assert save_fhir(db, pid).outcome is SaveOutcome.ALREADY_STORED
    assert save_ccda(db, pid).outcome is SaveOutcome.ALREADY_STORED
    assert counts(db) == before


def test_the_other_order_merges_too_but_keeps_the_ambiguous_problem_apart(
    db: StoreUnderTest, pid: int
) -> None:
    save_ccda(db, pid)
    second = save_fhir(db, pid)
    # The HbA1c and the flu shot merge as before. The ICD-10-CM-only problem now meets
    # two stored SNOMED CT concepts that both translate to E11.9: which one it is cannot
    # be told, so it is stored apart rather than guessed (docs/dedup.md).
    assert (second.resources, second.new_resources) == (5, 3)
    facts = sources_by_fact(db)
    assert facts[("Observation", "4548-4 @2013-07-15T09:30:00-05:00 7.2 final")] == {
        "org1",
        "org2",
    }
    assert facts[("Immunization", "140,49281-0703-55 @2013-10-01 completed")] == {"org1", "org2"}
    assert facts[("Condition", "E11.9 @2013-07-15T09:00:00-05:00")] == {"org1"}


def test_export_writes_each_merged_fact_once_and_provenance_resolves(
    db: StoreUnderTest, pid: int, tmp_path: Path
) -> None:
    save_fhir(db, pid)
    save_ccda(db, pid)
    out = tmp_path / "export"
    with db.sessions() as session:
        export_ndjson(session, out, now=NOW)
    lines = {
        path.stem: [json.loads(line) for line in path.read_text().splitlines()]
        for path in out.glob("*.ndjson")
    }
    assert {kind: len(rows) for kind, rows in lines.items() if kind != "Patient"} == {
        "Condition": 2,
        "Observation": 3,
        "Immunization": 3,
        "Provenance": 2,
    }
    exported = {f"{kind}/{r['id']}" for kind, rows in lines.items() for r in rows}
    for prov in lines["Provenance"]:
        assert {t["reference"] for t in prov["target"]} <= exported


@pytest.mark.parametrize("order", ["fhir first", "ccda first"])
def test_saving_both_in_one_call_stores_what_one_by_one_stores(
    db: StoreUnderTest, pid: int, order: str
) -> None:
    # Acquisition writes a participant's documents together (``save_documents``): the
    # store must end up as if they had been saved one by one, in the same order.
    items = [fhir_item(pid), ccda_item(pid)]
    if order == "ccda first":
        items.reverse()
    together = save_together(db, items)
    facts, targets, stored = sources_by_fact(db), provenance_targets(db), counts(db)[:4]

    clear_documents(db)
    one_by_one = [save_together(db, [item])[0] for item in items]
    assert [(r.outcome, r.resources, r.new_resources) for r in together] == [
        (r.outcome, r.resources, r.new_resources) for r in one_by_one
    ]
    assert sources_by_fact(db) == facts
    assert provenance_targets(db) == targets
    assert counts(db)[:4] == stored


def test_a_document_listed_twice_or_already_stored_is_stored_once(
    db: StoreUnderTest, pid: int
) -> None:
    save_fhir(db, pid)
    before = counts(db)
    fhir_again, ccda, ccda_again = save_together(
        db, [fhir_item(pid), ccda_item(pid), ccda_item(pid)]
    )
    assert fhir_again.outcome is SaveOutcome.ALREADY_STORED
    assert (ccda.outcome, ccda.resources, ccda.new_resources) == (SaveOutcome.STORED, 6, 3)
    assert (ccda_again.outcome, ccda_again.document_id) == (
        SaveOutcome.ALREADY_STORED,
        ccda.document_id,
    )
    assert counts(db)[0] == before[0] + 1


def test_the_merge_lookup_is_one_statement_whatever_the_number_of_keys(
    db: StoreUnderTest, pid: int
) -> None:
    # On PostgreSQL the keys go as arrays: a statement whose text changed with every
    # participant's number of keys was converted afresh by psycopg (too long for its
    # cache) and parsed and planned anew by the server, for every participant.
    if db.backend != "postgresql":
        pytest.skip("SQLite has no arrays: its lookup lists one parameter per key, in-process")
    lookups: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "resource_alias AS hit" in statement:
            lookups.append(statement)

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        save_fhir(db, pid)  # 5 resources
        save_ccda(db, pid)  # 6, with the aliases of a translated code
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert len(lookups) == 2 and lookups[0] == lookups[1]


def test_resource_bodies_and_times_are_stored_exactly(db: StoreUnderTest, pid: int) -> None:
    # PostgreSQL gets the rows as one JSON document (not an array per column, whose
    # elements psycopg escapes one by one): quotes, backslashes, control characters,
    # non-ASCII text and numbers must come back as given, and the time to the microsecond.
    awkward = 'say "no" \\ then C:\\path\\x "\\"quoted\\"" \t tab\nline é 日本 😀 \u2028'
    bodies: list[dict[str, Any]] = [
        {"resourceType": "Condition", "id": f"c{i}", "note": [{"text": awkward * i}],
         "code": {"text": awkward, "coding": [{"code": f"{i}\"'"}]},
         "extension": [{"url": "u", "valueDecimal": 1.25}, {"url": "v", "valueInteger": 2**40}]}
        for i in range(1, 4)
    ]  # fmt: skip
    resources = [
        DerivedResource("Condition", body["id"], f'key "{body["id"]}" \\', body, None)
        for body in bodies
    ]
    now = datetime(2026, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    item = to_save(pid, "org1", fhir_bundle(), "application/fhir+json")
    item = DocumentToSave(item.document, resources, item.provenance, now)
    [result] = save_together(db, [item])
    assert result.outcome == SaveOutcome.STORED
    with db.sessions() as session:
        stored = session.execute(
            select(Resource.dedup_key, Resource.body, Resource.created_at).order_by(Resource.id)
        ).all()
    assert [(key, body) for key, body, _ in stored] == [(r.dedup_key, r.body) for r in resources]
    assert {at for _, _, at in stored} == {now}
