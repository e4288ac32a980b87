"""The mock network's document generator: determinism, counts, mix, FHIR validity, PDF."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class  # R4B models for R4: 8.x defaults to R5

from mock_network.documents import (
    CCDA_XML,
    FHIR_JSON,
    PDF,
    PLAIN_XML,
    TEXT,
    DocSubject,
    DocumentMix,
    document_count,
    make_doc_id,
    make_document,
    parse_doc_id,
)
from mock_network.documents.clock import OrgZone, utc_offset

SEED = 20250630
ONLY_FHIR = DocumentMix(1, 0, 0, 0)
ONLY_CCDA = DocumentMix(0, 1, 0, 0)
ONLY_PDF = DocumentMix(0, 0, 1, 0)
ONLY_TEXT = DocumentMix(0, 0, 0, 1)
SEXES = ("female", "male", "other", "unknown")


def subject(k: int, patient_id: str | None = None) -> DocSubject:
    birth = dt.date(1925 + (k * 7) % 100, 1 + k % 12, 1 + k % 28)
    return DocSubject(k, patient_id or f"MRN{k:06d}", "Dana", "O'Neil-Ruiz", birth, SEXES[k % 4])


@pytest.mark.parametrize("mix", [ONLY_FHIR, ONLY_CCDA, ONLY_PDF, ONLY_TEXT, DocumentMix()])
def test_same_inputs_give_identical_bytes(mix: DocumentMix) -> None:
    for k in range(20):
        a = make_document(subject(k), "org-1", "North Clinic", SEED, 3, mix)
        b = make_document(subject(k), "org-1", "North Clinic", SEED, 3, mix)
        assert a == b


def test_index_org_and_seed_each_change_the_document() -> None:
    s = subject(5)
    base = make_document(s, "org-1", "North Clinic", SEED, 0, ONLY_FHIR)
    others = [
        make_document(s, "org-1", "North Clinic", SEED, 1, ONLY_FHIR),
        make_document(s, "org-2", "South Clinic", SEED, 0, ONLY_FHIR),
        make_document(s, "org-1", "North Clinic", SEED + 1, 0, ONLY_FHIR),
    ]
    for other in others:
        assert other.body != base.body
    assert len({base.doc_id, others[0].doc_id, others[1].doc_id}) == 3


def test_doc_ids_are_url_safe_and_reversible() -> None:
    assert make_doc_id("org-1", "MRN1", 4) == "org-1.MRN1.4"
    assert parse_doc_id("org-1.MRN1.4", "org-1") == ("MRN1", 4)
    assert parse_doc_id("org-1.MRN1.4", "org-2") is None
    odd = make_doc_id("org 1", "a/b?c", 2)  # unsafe parts fall back to a hash
    assert re.fullmatch(r"[A-Za-z0-9.\-]{1,64}", odd)
    assert odd != make_doc_id("org 1", "a/b?c", 3)
    doc = make_document(subject(1, "weird/id 7"), "org-1", "North", SEED, 0, ONLY_FHIR)
    assert re.fullmatch(r"[A-Za-z0-9.\-]{1,64}", doc.doc_id)
    bundle = orjson.loads(doc.body)
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    assert patient["identifier"][0]["value"] == "weird/id 7"  # the MRN is kept verbatim


def test_document_count_stays_in_bounds_and_varies() -> None:
    counts = [document_count(subject(k), "org-1", SEED) for k in range(500)]
    assert min(counts) >= 1 and max(counts) <= 8
    assert set(counts) == set(range(1, 9))
    assert counts == [document_count(subject(k), "org-1", SEED) for k in range(500)]
    assert all(document_count(subject(k), "org-1", SEED, 2, 2) == 2 for k in range(20))
    assert all(0 <= document_count(subject(k), "o", SEED, 0, 3) <= 3 for k in range(50))
    with pytest.raises(ValueError, match="low"):
        document_count(subject(1), "org-1", SEED, 5, 2)


def test_mix_weights_are_honoured() -> None:
    kinds: Counter[str] = Counter()
    total = 0
    for k in range(400):
        for i in range(5):
            kinds[make_document(subject(k), "org-9", "Mix", SEED, i).content_type] += 1
            total += 1
    shares = {ct: n / total for ct, n in kinds.items()}
    assert shares[FHIR_JSON] == pytest.approx(0.5, abs=0.04)
    assert shares[CCDA_XML] + shares[PLAIN_XML] == pytest.approx(0.33, abs=0.04)
    assert shares[PLAIN_XML] > 0.02  # C-CDA is sometimes served as plain application/xml
    assert shares[PDF] == pytest.approx(0.09, abs=0.03)
    assert shares[TEXT] == pytest.approx(0.08, abs=0.03)
    skewed = Counter(
        make_document(subject(k), "o", "x", SEED, 0, DocumentMix(0, 0, 3, 1)).content_type
        for k in range(400)
    )
    assert set(skewed) == {PDF, TEXT} and skewed[PDF] > 2 * skewed[TEXT]
    with pytest.raises(ValueError, match="positive"):
        make_document(subject(1), "o", "x", SEED, 0, DocumentMix(0, 0, 0, 0))


def test_documents_carry_metadata() -> None:
    expected = {FHIR_JSON: "34133-9", PDF: "11506-3", TEXT: "11506-3"}
    for k in range(40):
        doc = make_document(subject(k), "org-1", "North Clinic", SEED, k % 8)
        assert doc.date.tzinfo is not None and doc.date.utcoffset() is not None
        assert doc.title
        if doc.content_type in expected:
            assert doc.type_code == expected[doc.content_type]
        else:
            assert doc.type_code in {"34133-9", "18842-5"}


# --- FHIR ---------------------------------------------------------------------------------------
CANONICAL = {
    "http://snomed.info/sct",
    "http://loinc.org",
    "http://www.nlm.nih.gov/research/umls/rxnorm",
    "http://hl7.org/fhir/sid/cvx",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/ndc",
}


def _bundles(n_subjects: int) -> list[tuple[DocSubject, dict[str, object]]]:
    out = []
    for k in range(n_subjects):
        s = subject(k)
        for i in (0, 5):
            doc = make_document(s, "org-f", "Fhir Clinic", SEED, i, ONLY_FHIR)
            assert doc.content_type == FHIR_JSON
            out.append((s, orjson.loads(doc.body)))
    return out


def test_every_bundle_validates_entry_by_entry_with_r4b() -> None:
    bundle_model = get_fhir_model_class("Bundle")
    seen: Counter[str] = Counter()
    sizes = []
    for _, bundle in _bundles(60):
        bundle_model.model_validate(bundle)
        entries = bundle["entry"]
        assert isinstance(entries, list)
        sizes.append(len(entries))
        for entry in entries:
            resource = entry["resource"]
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
            seen[resource["resourceType"]] += 1
    for rtype in (
        "Patient",
        "Encounter",
        "Condition",
        "Observation",
        "AllergyIntolerance",
        "Immunization",
        "Procedure",
        "MedicationRequest",
        "MedicationStatement",
        "DiagnosticReport",
        "Composition",
    ):
        assert seen[rtype] > 0, rtype
    assert 10 <= sum(sizes) / len(sizes) <= 22  # about 15 resources per bundle


def _codings(resource: dict[str, object], field: str) -> list[dict[str, str]]:
    value = resource.get(field)
    assert isinstance(value, dict)
    codings = value["coding"]
    assert isinstance(codings, list)
    return codings


def test_bundles_reference_the_org_local_patient_with_canonical_codes() -> None:
    ucum_quantities = 0
    for s, bundle in _bundles(40):
        entries = bundle["entry"]
        assert isinstance(entries, list)
        full_urls = {e["fullUrl"] for e in entries}
        patients = [e for e in entries if e["resource"]["resourceType"] == "Patient"]
        assert len(patients) == 1
        patient = patients[0]
        assert patient["resource"]["id"] == s.patient_id
        assert patient["resource"]["birthDate"] == s.birth_date.isoformat()
        assert patient["resource"]["gender"] == s.sex
        if bundle["type"] == "document":
            assert entries[0]["resource"]["resourceType"] == "Composition"
        else:
            assert bundle["type"] == "collection"
        for e in entries:
            r = e["resource"]
            ref = r.get("subject") or r.get("patient")
            if ref is not None:
                assert ref["reference"] == patient["fullUrl"]
            for value in re.findall(rb'"reference":"([^"]+)"', orjson.dumps(r)):
                assert value.decode() in full_urls  # every reference resolves in the bundle
            rtype = r["resourceType"]
            if rtype == "Condition":
                systems = {c["system"] for c in _codings(r, "code")}
                assert systems == {"http://snomed.info/sct", "http://hl7.org/fhir/sid/icd-10-cm"}
            elif rtype == "Observation":
                assert {c["system"] for c in _codings(r, "code")} == {"http://loinc.org"}
                for q in re.findall(rb'"valueQuantity":\{[^}]*\}', orjson.dumps(r)):
                    assert b'"system":"http://unitsofmeasure.org"' in q
                    ucum_quantities += 1
            elif rtype in ("MedicationRequest", "MedicationStatement"):
                assert (
                    _codings(r, "medicationCodeableConcept")[0]["system"]
                    == "http://www.nlm.nih.gov/research/umls/rxnorm"
                )
            elif rtype == "Immunization":
                assert _codings(r, "vaccineCode")[0]["system"] == "http://hl7.org/fhir/sid/cvx"
            for system in re.findall(rb'"system":"(http[^"]+)"', orjson.dumps(r)):
                text = system.decode()
                assert "urn:oid" not in text
                if "snomed" in text or "loinc" in text or "rxnorm" in text:
                    assert text in CANONICAL
    assert ucum_quantities > 100


def test_bundles_show_negations_and_not_given_immunizations() -> None:
    raw = b"".join(
        make_document(subject(k), "org-f", "F", SEED, i, ONLY_FHIR).body
        for k in range(150)
        for i in range(3)
    )
    assert b'"code":"716186003"' in raw  # no known allergy
    assert b'"status":"not-done"' in raw and b'"statusReason"' in raw
    assert b'"http://hl7.org/fhir/sid/ndc"' in raw
    assert b'"resolved"' in raw  # resolved acute problems appear with abatement


# --- PDF and text -------------------------------------------------------------------------------
def test_pdf_is_a_valid_pdf_1_4_with_an_exact_xref() -> None:
    for k in range(30):
        body = make_document(subject(k), "org-p", "Scan Co", SEED, k % 8, ONLY_PDF).body
        assert body.startswith(b"%PDF-1.4\n")
        assert body.rstrip().endswith(b"%%EOF")
        startxref = int(re.findall(rb"startxref\n(\d+)\n", body)[-1])
        assert body[startxref : startxref + 4] == b"xref"
        header = re.match(rb"xref\n0 (\d+)\n", body[startxref:])
        assert header is not None
        count = int(header.group(1))
        table = body[startxref + header.end() :].split(b"trailer")[0]
        rows = table.split(b"\n")[:count]
        assert rows[0] == b"0000000000 65535 f "
        for n, row in enumerate(rows[1:], start=1):
            assert len(row) + 1 == 20  # xref rows are exactly 20 bytes
            offset = int(row[:10])
            assert body[offset:].startswith(f"{n} 0 obj".encode())
        assert re.search(rb"trailer\n<< /Size %d /Root 1 0 R" % count, body)
        length = int(re.search(rb"/Length (\d+) >>\nstream\n", body).group(1))  # type: ignore[union-attr]
        start = body.index(b"stream\n") + len(b"stream\n")
        assert body[start + length : start + length + 9] == b"endstream"


def test_text_note_is_a_plain_clinical_note() -> None:
    s = subject(12)
    doc = make_document(s, "org-t", "Text Clinic", SEED, 2, ONLY_TEXT)
    note = doc.body.decode("utf-8")
    assert doc.content_type == TEXT
    for heading in (
        "SUBJECTIVE:",
        "MEDICATIONS:",
        "ALLERGIES:",
        "OBJECTIVE:",
        "ASSESSMENT AND PLAN:",
    ):
        assert heading in note
    assert s.patient_id in note


def test_documents_for_a_record_born_at_or_past_the_documents_clock() -> None:
    # A record born in the documents' reference year or later (a birth-year slip, or a
    # population with a later reference date) made every document of it a 500: "empty
    # range for randrange" from an allergy's onset year.
    for year in (2025, 2026, 2034):
        for k in range(60):
            born = DocSubject(k, f"MRN{k:06d}", "Dana", "Ruiz", dt.date(year, 3, 1), "female")
            for index in range(3):
                assert make_document(born, "org-1", "North Clinic", SEED, index, DocumentMix())


@pytest.mark.parametrize(
    ("zone", "when_utc", "hours"),
    [
        # US Eastern, 2024: daylight time from 10 March 02:00 EST (07:00Z) ...
        (OrgZone(-5, True), dt.datetime(2024, 3, 10, 6, 59), -5),
        (OrgZone(-5, True), dt.datetime(2024, 3, 10, 7, 0), -4),
        # ... to 3 November 02:00 EDT (06:00Z).
        (OrgZone(-5, True), dt.datetime(2024, 11, 3, 5, 59), -4),
        (OrgZone(-5, True), dt.datetime(2024, 11, 3, 6, 0), -5),
        # US Pacific, 2023 (12 March, 5 November), asked again after another year.
        (OrgZone(-8, True), dt.datetime(2023, 3, 12, 10, 0), -7),
        (OrgZone(-8, True), dt.datetime(2023, 11, 5, 9, 0), -8),
        (OrgZone(-8, True), dt.datetime(2023, 7, 1, 12, 0), -7),
        # Arizona keeps standard time all year.
        (OrgZone(-7, False), dt.datetime(2024, 7, 1, 12, 0), -7),
    ],
)
def test_local_offsets_follow_the_us_daylight_saving_rule(
    zone: OrgZone, when_utc: dt.datetime, hours: int
) -> None:
    assert utc_offset(zone, when_utc) == dt.timedelta(hours=hours)
