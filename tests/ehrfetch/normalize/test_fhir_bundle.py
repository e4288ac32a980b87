"""FHIR Bundle normalization: re-pointing, codes, dedup keys, wrong patient, bad entries."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from ehrfetch.errors import UnreadableDocument, WrongPatientError
from ehrfetch.normalize.codes import SNOMED, canonical_system
from ehrfetch.normalize.fhir_bundle import normalize_bundle

PATIENT = {"resourceType": "Patient", "id": "mrn-7", "name": [{"family": "Quist"}]}


def condition(code: str = "44054006", onset: str = "2019-03-04", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": "c1",
        "meta": {"versionId": "3", "lastUpdated": "2024-01-01T00:00:00Z"},
        "text": {"status": "generated", "div": "<div>Jane Quist, diabetes</div>"},
        "subject": {"reference": "urn:uuid:pat"},
        "encounter": {"reference": "urn:uuid:enc"},
        "recorder": {"reference": "Practitioner/dr-1", "display": "Dr. Who"},
        "asserter": {"reference": "Practitioner/dr-2"},
        "code": {
            "coding": [
                {"system": "urn:oid:2.16.840.1.113883.6.96", "code": code, "display": "Diabetes"},
                {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"},
            ]
        },
        "onsetDateTime": onset,
        **extra,
    }


ENCOUNTER = {
    "resourceType": "Encounter",
    "id": "e1",
    "status": "finished",
    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
    "subject": {"reference": "urn:uuid:pat"},
    "period": {"start": "2019-03-04T09:00:00-05:00"},
}


def bundle(*resources: dict[str, Any], patient: dict[str, Any] | None = PATIENT) -> bytes:
    entries = []
    if patient is not None:
        entries.append({"fullUrl": "urn:uuid:pat", "resource": patient})
    names = {"Encounter": "urn:uuid:enc"}
    for n, r in enumerate(resources):
        entries.append({"fullUrl": names.get(r["resourceType"], f"urn:uuid:r{n}"), "resource": r})
    return orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})


def by_type(body: bytes) -> dict[str, dict[str, Any]]:
    document = normalize_bundle(body, research_id="R1", patient_id="mrn-7")
    return {r.resource_type: r.body for r in document.resources}


def test_resources_are_repointed_at_the_participant() -> None:
    kept = by_type(bundle(condition(), ENCOUNTER))
    cond, enc = kept["Condition"], kept["Encounter"]
    assert cond["subject"] == {"reference": "Patient/R1"}
    assert cond["encounter"] == {"reference": f"Encounter/{enc['id']}"}
    # References to resources not kept keep only their display text.
    assert cond["recorder"] == {"display": "Dr. Who"}
    assert "reference" not in cond["asserter"]
    # The site's metadata and narrative (which names the patient) are gone.
    assert "meta" not in cond and "text" not in cond
    assert "Patient" not in kept


def test_code_systems_become_canonical() -> None:
    cond = by_type(bundle(condition()))["Condition"]
    assert cond["code"]["coding"][0]["system"] == SNOMED
    assert canonical_system("2.16.840.1.113883.6.1") == "http://loinc.org"
    assert canonical_system("http://snomed.info/sct/731000124108/version/20230301") == SNOMED
    assert canonical_system("https://example.org/local") == "https://example.org/local"


def test_same_fact_from_two_sites_gets_one_id_and_key() -> None:
    site_a = condition()
    site_b = condition(id="zz-99")
    site_b["code"]["coding"] = [
        {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"},
        {"system": "http://snomed.info/sct", "code": "44054006"},
    ]
    site_b["onsetDateTime"] = "2019-03-04T16:30:00Z"
    a = normalize_bundle(bundle(site_a), research_id="R1", patient_id="mrn-7").resources[0]
    b = normalize_bundle(bundle(site_b), research_id="R1", patient_id="mrn-7").resources[0]
    assert (a.dedup_key, a.fhir_id) == (b.dedup_key, b.fhir_id)
    assert (a.source_id, b.source_id) == ("c1", "zz-99")


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"onsetDateTime": "2019-03-05"}, "same code, another day"),
        ({"code": {"coding": [{"system": SNOMED, "code": "38341003"}]}}, "another code"),
    ],
)
def test_near_misses_are_different_facts(change: dict[str, Any], why: str) -> None:
    first = normalize_bundle(bundle(condition()), research_id="R1", patient_id="mrn-7")
    other = condition()
    other.update(change)
    second = normalize_bundle(bundle(other), research_id="R1", patient_id="mrn-7")
    assert first.resources[0].dedup_key != second.resources[0].dedup_key, why


def lab(value: float, when: str = "2020-05-01T08:00:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "subject": {"reference": "Patient/mrn-7"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org",
                          "code": "%"},
    }  # fmt: skip


def key(resource: dict[str, Any]) -> str:
    document = normalize_bundle(bundle(resource), research_id="R1", patient_id="mrn-7")
    return document.resources[0].dedup_key


def test_lab_values_and_times_are_part_of_the_fact() -> None:
    assert key(lab(7.1)) == key(lab(7.10))  # the same number, written differently
    assert key(lab(7.1)) != key(lab(7.2))
    assert key(lab(7.1)) != key(lab(7.1, "2020-06-01T08:00:00Z"))


def test_the_same_fact_twice_in_one_document_is_kept_once() -> None:
    twice = copy.deepcopy(condition(id="c2"))
    document = normalize_bundle(bundle(condition(), twice), research_id="R1", patient_id="mrn-7")
    assert len(document.resources) == 1


def test_a_bundle_about_another_patient_is_refused_whole() -> None:
    stranger = {**PATIENT, "id": "mrn-8"}
    with pytest.raises(WrongPatientError, match="not the linked patient"):
        normalize_bundle(
            bundle(condition(), patient=stranger), research_id="R1", patient_id="mrn-7"
        )
    about_other = condition(subject={"reference": "Patient/mrn-8"})
    with pytest.raises(WrongPatientError, match="about another patient"):
        normalize_bundle(bundle(about_other), research_id="R1", patient_id="mrn-7")


def test_patient_known_by_identifier_is_accepted() -> None:
    local = {**PATIENT, "id": "x1", "identifier": [{"system": "urn:mrn", "value": "mrn-7"}]}
    document = normalize_bundle(
        bundle(condition(), patient=local), research_id="R1", patient_id="mrn-7"
    )
    assert len(document.resources) == 1


def test_invalid_resource_is_skipped_with_reason_and_the_rest_kept() -> None:
    broken = condition(onsetDateTime="2019-02-30")
    document = normalize_bundle(bundle(broken, ENCOUNTER), research_id="R1", patient_id="mrn-7")
    assert [r.resource_type for r in document.resources] == ["Encounter"]
    [skipped] = document.skipped
    assert skipped.resource_type == "Condition"
    assert "invalid FHIR at onsetDateTime" in skipped.reason
    assert "2019-02-30" not in skipped.reason


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b'{"resourceType": "Patient"}', "not a FHIR Bundle"),
        (b"[]", "not a FHIR Bundle"),
    ],
)
def test_unreadable_documents(body: bytes, reason: str) -> None:
    with pytest.raises(UnreadableDocument, match=reason):
        normalize_bundle(body, research_id="R1", patient_id="mrn-7")
