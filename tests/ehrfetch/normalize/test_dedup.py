"""Dedup keys across formats: the same fact from a FHIR Bundle and a C-CDA, and near misses.

Each case reads real input through the readers (``normalize_bundle``, ``normalize_ccda``)
so what is compared is what the store is given, not hand-made dicts.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.codes import CVX, ICD10CM, LOINC, NDC, SNOMED
from ehrfetch.normalize.dedup import dedup_key, fact_of, same_concept
from ehrfetch.normalize.fhir_bundle import normalize_bundle

T = "2.16.840.1.113883.10.20.22"
SNOMED_OID = "2.16.840.1.113883.6.96"
ICD10_OID = "2.16.840.1.113883.6.90"
UCUM = "http://unitsofmeasure.org"


def from_fhir(resource: dict[str, Any]) -> dict[str, Any]:
    about = "patient" if resource["resourceType"] == "Immunization" else "subject"
    entries = [
        {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient", "id": "mrn-1"}},
        {"fullUrl": "urn:uuid:r", "resource": {**resource, about: {"reference": "urn:uuid:p"}}},
    ]
    bundle = orjson.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries})
    (only,) = normalize_bundle(bundle, research_id="R1", patient_id="mrn-1").resources
    return only.body


def from_ccda(section_template: str, entry: str) -> dict[str, Any]:
    body = (
        '<ClinicalDocument xmlns="urn:hl7-org:v3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        '<recordTarget><patientRole><id root="1.2.3" extension="mrn-1"/></patientRole>'
        "</recordTarget><component><structuredBody><component><section>"
        f'<templateId root="{T}.{section_template}"/>{entry}</section></component>'
        "</structuredBody></component></ClinicalDocument>"
    ).encode()
    (only,) = normalize_ccda(body, research_id="R1", patient_id="mrn-1").resources
    return only.body


# -- builders: one fact, written the way each format writes it ------------------------------


def fhir_condition(
    codings: list[tuple[str, str]], onset: str = "2013-07-15", **extra: Any
) -> dict[str, Any]:
    return from_fhir(
        {
            "resourceType": "Condition",
            "code": {"coding": [{"system": s, "code": c} for s, c in codings]},
            "onsetDateTime": onset,
            **extra,
        }
    )


def ccda_problem(
    code: str = "44054006",
    translation: str | None = "E11.9",
    onset: str = "20130715",
    negated: bool = False,
) -> dict[str, Any]:
    neg = ' negationInd="true"' if negated else ""
    extra = f'<translation code="{translation}" codeSystem="{ICD10_OID}"/>' if translation else ""
    return from_ccda(
        "2.5.1",
        f'<entry><act classCode="ACT" moodCode="EVN"><templateId root="{T}.4.3"/>'
        '<statusCode code="active"/><entryRelationship typeCode="SUBJ">'
        f'<observation classCode="OBS" moodCode="EVN"{neg}><templateId root="{T}.4.4"/>'
        '<code code="55607006" codeSystem="2.16.840.1.113883.6.96"/>'
        f'<effectiveTime><low value="{onset}"/></effectiveTime>'
        f'<value xsi:type="CD" code="{code}" codeSystem="{SNOMED_OID}">{extra}</value>'
        "</observation></entryRelationship></act></entry>",
    )


def fhir_hba1c(value: Any, when: str = "2013-07-15T14:30:00Z", **quantity: Any) -> dict[str, Any]:
    return from_fhir(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "4548-4"}]},
            "effectiveDateTime": when,
            "valueQuantity": {"value": value, "unit": "%", "system": UCUM, "code": "%", **quantity},
        }
    )


def ccda_hba1c(
    value: str = "7.2", when: str = "201307150930-0500", unit: str = "%"
) -> dict[str, Any]:
    return from_ccda(
        "2.3.1",
        f'<entry><organizer classCode="BATTERY" moodCode="EVN"><templateId root="{T}.4.1"/>'
        '<component><observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{T}.4.2"/>'
        '<code code="4548-4" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<statusCode code="completed"/><effectiveTime value="{when}"/>'
        f'<value xsi:type="PQ" value="{value}" unit="{unit}"/>'
        "</observation></component></organizer></entry>",
    )


def fhir_flu_shot(
    when: str = "2013-10-01T10:00:00-04:00", status: str = "completed"
) -> dict[str, Any]:
    return from_fhir(
        {
            "resourceType": "Immunization",
            "status": status,
            "vaccineCode": {"coding": [{"system": CVX, "code": "140"}]},
            "occurrenceDateTime": when,
        }
    )


def ccda_flu_shot(when: str = "20131001", negated: bool = False) -> dict[str, Any]:
    neg = "true" if negated else "false"
    return from_ccda(
        "2.2.1",
        f'<entry><substanceAdministration classCode="SBADM" moodCode="EVN" negationInd="{neg}">'
        f'<templateId root="{T}.4.52"/><statusCode code="completed"/>'
        f'<effectiveTime value="{when}"/><consumable><manufacturedProduct>'
        f'<templateId root="{T}.4.54"/><manufacturedMaterial>'
        '<code code="140" codeSystem="2.16.840.1.113883.12.292">'
        '<translation code="49281-0703-55" codeSystem="2.16.840.1.113883.6.69"/></code>'
        "</manufacturedMaterial></manufacturedProduct></consumable>"
        "</substanceAdministration></entry>",
    )


def shares_alias(a: dict[str, Any], b: dict[str, Any]) -> bool:
    keys_a = {alias for _, alias in fact_of(a).aliases}
    return any(alias in keys_a for _, alias in fact_of(b).aliases)


def same_fact(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """What the store decides for two resources (store/merge.py), on their own."""
    if dedup_key(a) == dedup_key(b):
        return True
    return shares_alias(a, b) and same_concept(fact_of(a).codings, fact_of(b).codings)


# -- the same fact across formats -----------------------------------------------------------


def test_the_same_problem_coded_the_same_way_has_one_key_across_formats() -> None:
    fhir = fhir_condition([(SNOMED, "44054006"), (ICD10CM, "E11.9")])
    assert dedup_key(fhir) == dedup_key(ccda_problem())


def test_hba1c_7_2_percent_has_one_key_across_formats() -> None:
    ccda = ccda_hba1c("7.2")
    assert ccda["valueQuantity"] == {"value": 7.2, "unit": "%", "system": UCUM, "code": "%"}
    assert dedup_key(ccda) == dedup_key(fhir_hba1c(7.20))
    # The C-CDA time is 09:30 at -05:00: the same minute as 14:30 UTC.
    assert dedup_key(ccda) == dedup_key(fhir_hba1c(7.2, "2013-07-15T10:30:00-04:00"))


@pytest.mark.parametrize(
    ("fhir_value", "ccda_value"),
    [(100, "100"), (100.0, "100.0"), (0.00001, "0.000010"), (12, "12.00")],
)
def test_numbers_compare_as_exact_decimals(fhir_value: float, ccda_value: str) -> None:
    assert dedup_key(fhir_hba1c(fhir_value)) == dedup_key(ccda_hba1c(ccda_value))


def test_the_ucum_code_names_the_unit_not_its_display() -> None:
    assert dedup_key(fhir_hba1c(7.2, unit="percent")) == dedup_key(ccda_hba1c("7.2"))


@pytest.mark.parametrize("onset", ["2013-07-15T00:00:00-05:00", "2013-07-15T22:00:00-05:00"])
def test_a_date_and_a_time_on_that_day_are_one_condition(onset: str) -> None:
    # To the day, the day is the one the site wrote: 22:00 at -05:00 is still July 15th
    # there, though it is July 16th in UTC.
    fhir = fhir_condition([(SNOMED, "44054006"), (ICD10CM, "E11.9")], onset)
    assert dedup_key(fhir) == dedup_key(ccda_problem(onset="20130715"))


def test_a_date_and_a_time_on_that_day_are_one_immunization() -> None:
    assert dedup_key(fhir_flu_shot("2013-10-01T10:00:00-04:00")) == dedup_key(ccda_flu_shot())


def test_no_verification_status_is_confirmed() -> None:
    confirmed = {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed",
            }
        ]
    }
    fhir = fhir_condition([(SNOMED, "44054006"), (ICD10CM, "E11.9")], verificationStatus=confirmed)
    assert dedup_key(fhir) == dedup_key(ccda_problem())


# -- equivalence through translations -------------------------------------------------------


def test_icd10_only_condition_is_the_snomed_one_with_that_translation() -> None:
    fhir = fhir_condition([(ICD10CM, "E11.9")])
    ccda = ccda_problem("44054006", "E11.9")
    # The keys differ (each names its fact by its most specific code) ...
    assert dedup_key(fhir) != dedup_key(ccda)
    # ... but they share an alias key and the concepts agree: the store merges them.
    assert shares_alias(fhir, ccda)
    assert same_fact(fhir, ccda)


def test_ndc_only_vaccine_is_the_cvx_one_with_that_ndc() -> None:
    ndc_only = from_fhir(
        {
            "resourceType": "Immunization",
            "status": "completed",
            "vaccineCode": {"coding": [{"system": NDC, "code": "49281-0703-55"}]},
            "occurrenceDateTime": "2013-10-01",
        }
    )
    assert same_fact(ndc_only, ccda_flu_shot())


DM2 = (SNOMED, "44054006")
DM1 = (SNOMED, "46635009")
E119 = (ICD10CM, "E11.9")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({E119}, {DM2, E119}, True),
        # Both carry SNOMED CT and disagree: ICD-10-CM is coarser and cannot overrule it.
        ({DM1, E119}, {DM2, E119}, False),
        # One SNOMED CT concept, two sites' ICD-10-CM maps of it: the finer code decides.
        ({DM2, E119}, {DM2, (ICD10CM, "E11.65")}, True),
        ({E119}, {(ICD10CM, "E11.65")}, False),
        ({E119}, {DM2}, False),  # nothing in common
        ({(CVX, "140"), (NDC, "1")}, {(NDC, "1")}, True),
        # Two systems ehrfetch does not rank share the last rank: both must agree.
        ({("urn:x", "a"), ("urn:y", "b")}, {("urn:x", "a"), ("urn:y", "c")}, False),
        ({("urn:x", "a"), ("urn:y", "b")}, {("urn:x", "a"), (ICD10CM, "E11.65")}, True),
        (set(), set(), False),
    ],
)
def test_same_concept(a: set[tuple[str, str]], b: set[tuple[str, str]], same: bool) -> None:
    assert same_concept(a, b) is same
    assert same_concept(b, a) is same


def test_text_only_concepts_have_no_aliases() -> None:
    text_only = from_fhir(
        {"resourceType": "Condition", "code": {"text": "sugar"}, "onsetDateTime": "2013-07-15"}
    )
    assert fact_of(text_only).aliases == ()


# -- near misses: kept apart ----------------------------------------------------------------


def test_same_code_another_day_is_another_condition() -> None:
    fhir = fhir_condition([(SNOMED, "44054006"), (ICD10CM, "E11.9")], "2013-07-16")
    assert not same_fact(fhir, ccda_problem(onset="20130715"))
    icd_only = fhir_condition([(ICD10CM, "E11.9")], "2013-07-16")
    assert not same_fact(icd_only, ccda_problem(onset="20130715"))


def test_same_lab_another_value_is_another_result() -> None:
    assert not same_fact(fhir_hba1c(7.3), ccda_hba1c("7.2"))
    assert not same_fact(fhir_hba1c(7.2, comparator="<"), ccda_hba1c("7.2"))
    assert not same_fact(fhir_hba1c(7.2, unit="mmol/mol", code="mmol/mol"), ccda_hba1c("7.2"))


def test_a_dated_observation_is_not_a_timed_one() -> None:
    # Observations are keyed to the minute: a date alone never equals a time that day.
    assert not same_fact(fhir_hba1c(7.2, "2013-07-15"), ccda_hba1c("7.2", "201307150930-0500"))
    # A C-CDA time without a zone is cut to its day by the reader, so it is a date too.
    assert same_fact(fhir_hba1c(7.2, "2013-07-15"), ccda_hba1c("7.2", "201307150930"))


def test_same_icd10_another_snomed_is_another_condition() -> None:
    type_1 = fhir_condition([(SNOMED, "46635009"), (ICD10CM, "E11.9")])
    type_2 = ccda_problem("44054006", "E11.9")
    assert shares_alias(type_1, type_2)  # found as a candidate ...
    assert not same_fact(type_1, type_2)  # ... and refused


def test_refuted_is_not_confirmed() -> None:
    refuted = ccda_problem(negated=True)
    assert refuted["verificationStatus"]["coding"][0]["code"] == "refuted"
    assert not same_fact(fhir_condition([(SNOMED, "44054006"), (ICD10CM, "E11.9")]), refuted)
    assert not same_fact(fhir_condition([(ICD10CM, "E11.9")]), refuted)


def test_not_given_is_not_given() -> None:
    assert not same_fact(fhir_flu_shot(), ccda_flu_shot(negated=True))
    assert not same_fact(fhir_flu_shot("2013-10-02"), ccda_flu_shot())


def test_not_taken_is_not_taken() -> None:
    def statement(status: str) -> dict[str, Any]:
        return from_fhir(
            {
                "resourceType": "MedicationStatement",
                "status": status,
                "medicationCodeableConcept": {
                    "coding": [
                        {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1"}
                    ]
                },
                "effectiveDateTime": "2013-07-15",
            }
        )

    assert same_fact(statement("active"), statement("completed"))
    assert not same_fact(statement("active"), statement("not-taken"))
