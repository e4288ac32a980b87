"""The C-CDA reader: entries by templateId into valid FHIR R4, and hostile input refused."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class

from ehrfetch.bench.ccda_coverage import as_document, ccda_coverage, format_report
from ehrfetch.errors import UnreadableDocument, WrongPatientError
from ehrfetch.normalize.ccda import MAX_CCDA_BYTES, normalize_ccda, read_ccda
from ehrfetch.normalize.ccda_values import fhir_time
from mock_network.documents import DocSubject, DocumentMix, make_document
from support import CCDA_EXAMPLES, require_ccda_examples

EXAMPLES = CCDA_EXAMPLES
T = "2.16.840.1.113883.10.20.22"
SNOMED_OID = "2.16.840.1.113883.6.96"


def doc(*sections: str, patient: str = "MRN-1") -> bytes:
    body = "".join(f"<component>{s}</component>" for s in sections)
    return (
        '<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:sdtc="urn:hl7-org:sdtc">'
        f'<recordTarget><patientRole><id root="1.2.3" extension="{patient}"/></patientRole>'
        f"</recordTarget><component><structuredBody>{body}</structuredBody></component>"
        "</ClinicalDocument>"
    ).encode()


def section(template: str, entries: str, title: str = "Anything") -> str:
    # Titles are deliberately wrong: sections are recognised by templateId only.
    return (
        f'<section><templateId root="{T}.{template}" extension="2015-08-01"/>'
        f'<title>{title}</title><text><content ID="n1">narrative text</content></text>'
        f"{entries}</section>"
    )


def resources(body: bytes, kind: str | None = None) -> list[dict[str, Any]]:
    result = normalize_ccda(body, research_id="R-1", patient_id="MRN-1")
    for r in result.resources:  # every produced resource validates as R4 (via R4B)
        get_fhir_model_class(r.resource_type).model_validate(r.body)
    return [r.body for r in result.resources if kind is None or r.resource_type == kind]


def problem(value: str, negated: bool = False, status: str = "active", when: str = "") -> str:
    neg = ' negationInd="true"' if negated else ""
    return (
        f'<entry><act classCode="ACT" moodCode="EVN"><templateId root="{T}.4.3"/>'
        f'<statusCode code="{status}"/><entryRelationship typeCode="SUBJ">'
        f'<observation classCode="OBS" moodCode="EVN"{neg}><templateId root="{T}.4.4"/>'
        f'<id root="1.2.3.4" extension="p1"/>'
        f'<code code="55607006" codeSystem="{SNOMED_OID}"/><statusCode code="completed"/>'
        f"<effectiveTime>{when}</effectiveTime>{value}</observation>"
        "</entryRelationship></act></entry>"
    )


DIABETES = (
    f'<value xsi:type="CD" code="44054006" codeSystem="{SNOMED_OID}" displayName="Diabetes">'
    '<originalText><reference value="#n1"/></originalText>'
    '<translation code="E11.9" codeSystem="2.16.840.1.113883.6.90"/></value>'
)


# -- problems ---------------------------------------------------------------------------------


def test_problem_becomes_condition_with_translation_text_and_status() -> None:
    body = doc(section("2.5.1", problem(DIABETES, when='<low value="20200115"/>'), "Meds"))
    (cond,) = resources(body, "Condition")
    assert cond["code"]["coding"] == [
        {"code": "44054006", "system": "http://snomed.info/sct", "display": "Diabetes"},
        {"code": "E11.9", "system": "http://hl7.org/fhir/sid/icd-10-cm"},
    ]
    assert cond["code"]["text"] == "narrative text"
    assert cond["clinicalStatus"]["coding"][0]["code"] == "active"
    assert cond["onsetDateTime"] == "2020-01-15"
    assert cond["subject"] == {"reference": "Patient/R-1"}
    assert "verificationStatus" not in cond


def test_negated_problem_is_refuted_not_a_positive_condition() -> None:
    (cond,) = resources(doc(section("2.5.1", problem(DIABETES, negated=True))), "Condition")
    assert cond["verificationStatus"]["coding"][0]["code"] == "refuted"


def test_resolved_problem_from_high_time() -> None:
    when = '<low value="2010"/><high value="201203"/>'
    (cond,) = resources(doc(section("2.5", problem(DIABETES, when=when))), "Condition")
    assert cond["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert (cond["onsetDateTime"], cond["abatementDateTime"]) == ("2010", "2012-03")


def test_problem_with_null_value_is_skipped_with_reason() -> None:
    result = read_ccda(
        doc(section("2.5.1", problem('<value xsi:type="CD" nullFlavor="UNK"/>'))),
        research_id="R-1",
        patient_id="MRN-1",
    )
    assert result.document.resources == []
    assert result.document.skipped[0].reason == "problem has no code or text"


# -- allergies --------------------------------------------------------------------------------


def allergy(substance: str, negated: bool = False, value_code: str = "416098002") -> str:
    neg = ' negationInd="true"' if negated else ""
    return (
        f'<entry><act classCode="ACT" moodCode="EVN"><templateId root="{T}.4.30"/>'
        '<statusCode code="active"/><entryRelationship typeCode="SUBJ">'
        f'<observation classCode="OBS" moodCode="EVN"{neg}><templateId root="{T}.4.7"/>'
        '<code code="ASSERTION" codeSystem="2.16.840.1.113883.5.4"/>'
        '<effectiveTime><low value="20190301"/></effectiveTime>'
        f'<value xsi:type="CD" code="{value_code}" codeSystem="{SNOMED_OID}"/>'
        '<participant typeCode="CSM"><participantRole classCode="MANU">'
        f'<playingEntity classCode="MMAT">{substance}</playingEntity></participantRole>'
        '</participant><entryRelationship typeCode="MFST" inversionInd="true">'
        f'<observation classCode="OBS" moodCode="EVN"><templateId root="{T}.4.9"/>'
        f'<value xsi:type="CD" code="247472004" codeSystem="{SNOMED_OID}" displayName="Hives"/>'
        '<entryRelationship typeCode="SUBJ" inversionInd="true">'
        f'<observation classCode="OBS" moodCode="EVN"><templateId root="{T}.4.8"/>'
        f'<value xsi:type="CD" code="6736007" codeSystem="{SNOMED_OID}"/></observation>'
        "</entryRelationship></observation></entryRelationship>"
        "</observation></entryRelationship></act></entry>"
    )


PENICILLIN = '<code code="7980" codeSystem="2.16.840.1.113883.6.88" displayName="Penicillin G"/>'


def test_allergy_substance_reaction_severity_and_status() -> None:
    (ai,) = resources(doc(section("2.6.1", allergy(PENICILLIN))), "AllergyIntolerance")
    assert ai["code"]["coding"][0]["system"] == "http://www.nlm.nih.gov/research/umls/rxnorm"
    assert ai["patient"] == {"reference": "Patient/R-1"}
    assert ai["category"] == ["medication"]
    assert ai["clinicalStatus"]["coding"][0]["code"] == "active"
    assert ai["reaction"][0]["manifestation"][0]["coding"][0]["code"] == "247472004"
    assert ai["reaction"][0]["severity"] == "moderate"
    assert ai["onsetDateTime"] == "2019-03-01"


def test_no_known_allergies_is_the_us_core_code() -> None:
    nka = allergy('<code nullFlavor="NA"/>', negated=True, value_code="419199007")
    (ai,) = resources(doc(section("2.6.1", nka)), "AllergyIntolerance")
    assert ai["code"]["coding"][0]["code"] == "716186003"
    assert "reaction" not in ai


def test_no_known_drug_allergies() -> None:
    nkda = allergy('<code nullFlavor="NA"/>', negated=True)
    (ai,) = resources(doc(section("2.6.1", nkda)), "AllergyIntolerance")
    assert ai["code"]["coding"][0]["code"] == "409137002"


def test_not_allergic_to_a_substance_is_refuted() -> None:
    (ai,) = resources(doc(section("2.6.1", allergy(PENICILLIN, negated=True))))
    assert ai["code"]["coding"][0]["code"] == "7980"
    assert ai["verificationStatus"]["coding"][0]["code"] == "refuted"


# -- medications ------------------------------------------------------------------------------


def medication(negated: bool = False) -> str:
    neg = ' negationInd="true"' if negated else ""
    return (
        f'<entry><substanceAdministration classCode="SBADM" moodCode="EVN"{neg}>'
        f'<templateId root="{T}.4.16" extension="2014-06-09"/><statusCode code="active"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20200101"/><high nullFlavor="UNK"/>'
        '</effectiveTime><effectiveTime xsi:type="PIVL_TS" operator="A">'
        '<period value="12" unit="h"/></effectiveTime>'
        '<routeCode code="C38288" codeSystem="2.16.840.1.113883.3.26.1.1"/>'
        '<doseQuantity value="1"/><consumable><manufacturedProduct>'
        f'<templateId root="{T}.4.23"/><manufacturedMaterial>'
        '<code code="197361" codeSystem="2.16.840.1.113883.6.88"/>'
        "</manufacturedMaterial></manufacturedProduct></consumable>"
        "</substanceAdministration></entry>"
    )


def test_medication_statement_with_dose_route_timing() -> None:
    (ms,) = resources(doc(section("2.1.1", medication())), "MedicationStatement")
    assert ms["status"] == "active"
    assert ms["medicationCodeableConcept"]["coding"][0]["code"] == "197361"
    assert ms["effectivePeriod"] == {"start": "2020-01-01"}
    dosage = ms["dosage"][0]
    assert dosage["timing"] == {"repeat": {"period": 12, "periodUnit": "h"}}
    assert dosage["doseAndRate"] == [{"doseQuantity": {"value": 1}}]
    assert dosage["route"]["coding"][0]["code"] == "C38288"


def test_refused_medication_is_not_taken() -> None:
    (ms,) = resources(doc(section("2.1.1", medication(negated=True))), "MedicationStatement")
    assert ms["status"] == "not-taken"


def ordered(
    status: str = "active", negated: bool = False, author: str = "", supply: str = ""
) -> str:
    """A medication activity in intent mood: a prescription."""
    neg = ' negationInd="true"' if negated else ""
    return (
        f'<entry><substanceAdministration classCode="SBADM" moodCode="INT"{neg}>'
        f'<templateId root="{T}.4.16" extension="2014-06-09"/><id root="1.2.3" extension="rx1"/>'
        f'<statusCode code="{status}"/>'
        '<effectiveTime xsi:type="IVL_TS"><low value="20200301"/><high value="20200331"/>'
        '</effectiveTime><effectiveTime xsi:type="PIVL_TS" institutionSpecified="true" '
        'operator="A"><period value="8" unit="h"/></effectiveTime>'
        '<routeCode code="C38288" codeSystem="2.16.840.1.113883.3.26.1.1"/>'
        '<doseQuantity value="500" unit="mg"/><consumable><manufacturedProduct>'
        f'<templateId root="{T}.4.23"/><manufacturedMaterial>'
        '<code code="308191" codeSystem="2.16.840.1.113883.6.88" displayName="Amoxicillin 500">'
        '<translation code="0093-3109-01" codeSystem="2.16.840.1.113883.6.69"/></code>'
        f"</manufacturedMaterial></manufacturedProduct></consumable>{author}"
        '<entryRelationship typeCode="RSON"><observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{T}.4.19"/><code code="75321-0" codeSystem="2.16.840.1.113883.6.1"/>'
        f'<value xsi:type="CD" code="43878008" codeSystem="{SNOMED_OID}"/></observation>'
        f"</entryRelationship>{supply}</substanceAdministration></entry>"
    )


AUTHOR = (
    '<author><time value="20200301101500-0500"/><assignedAuthor><id root="9"/></assignedAuthor>'
    "</author>"
)


def test_intended_medication_is_a_request_not_a_statement() -> None:
    body = doc(section("2.1.1", ordered(author=AUTHOR)))
    assert resources(body, "MedicationStatement") == []
    (mr,) = resources(body, "MedicationRequest")
    assert (mr["status"], mr["intent"]) == ("active", "order")
    assert mr["medicationCodeableConcept"]["coding"] == [
        {"code": "308191", "system": "http://www.nlm.nih.gov/research/umls/rxnorm",
         "display": "Amoxicillin 500"},
        {"code": "0093-3109-01", "system": "http://hl7.org/fhir/sid/ndc"},
    ]  # fmt: skip
    assert mr["authoredOn"] == "2020-03-01T10:15:00-05:00"
    assert mr["subject"] == {"reference": "Patient/R-1"}
    assert mr["reasonCode"][0]["coding"][0]["code"] == "43878008"
    (dosage,) = mr["dosageInstruction"]
    assert dosage["doseAndRate"] == [
        {"doseQuantity": {"value": 500, "unit": "mg", "system": "http://unitsofmeasure.org",
                          "code": "mg"}}
    ]  # fmt: skip
    assert dosage["route"]["coding"][0]["code"] == "C38288"
    assert dosage["timing"] == {
        "repeat": {
            "period": 8,
            "periodUnit": "h",
            "boundsPeriod": {"start": "2020-03-01", "end": "2020-03-31"},
        }
    }
    assert "dosage" not in mr and "effectivePeriod" not in mr  # MedicationStatement's fields


def test_order_status_and_plan() -> None:
    def request(**kw: Any) -> dict[str, Any]:
        (mr,) = resources(doc(section("2.1.1", ordered(**kw))), "MedicationRequest")
        return mr

    assert (request(status="completed")["status"], request()["intent"]) == ("completed", "order")
    assert (request(status="aborted")["status"], request(status="nullified")["status"]) == (
        "stopped",
        "entered-in-error",
    )
    assert (request(status="new")["status"], request(status="new")["intent"]) == ("draft", "plan")
    assert request(negated=True)["doNotPerform"] is True
    assert "authoredOn" not in request()


def test_order_authored_on_from_its_supply_order() -> None:
    supply = (
        '<entryRelationship typeCode="REFR"><supply classCode="SPLY" moodCode="INT">'
        f'<templateId root="{T}.4.17"/><statusCode code="completed"/>'
        '<author><time value="20200228"/><assignedAuthor><id root="9"/></assignedAuthor></author>'
        "</supply></entryRelationship>"
    )
    (mr,) = resources(doc(section("2.1.1", ordered(supply=supply))), "MedicationRequest")
    assert mr["authoredOn"] == "2020-02-28"


def test_the_same_order_twice_is_one_and_another_day_is_another() -> None:
    twice = doc(section("2.1.1", ordered(author=AUTHOR) + ordered(author=AUTHOR)))
    assert len(resources(twice, "MedicationRequest")) == 1
    later = AUTHOR.replace("20200301101500", "20200401101500")
    two = doc(section("2.1.1", ordered(author=AUTHOR) + ordered(author=later)))
    assert len(resources(two, "MedicationRequest")) == 2


# -- results, vital signs, social history -----------------------------------------------------


def obs(template: str, value: str, extra: str = "", when: str = "20200101083000-0500") -> str:
    return (
        f'<entry><organizer classCode="CLUSTER" moodCode="EVN"><templateId root="{T}.4.1"/>'
        '<component><observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{T}.{template}"/>'
        '<code code="2345-7" codeSystem="2.16.840.1.113883.6.1" displayName="Glucose"/>'
        f'<statusCode code="completed"/><effectiveTime value="{when}"/>{value}{extra}'
        "</observation></component></organizer></entry>"
    )


RANGE = (
    '<interpretationCode code="H" codeSystem="2.16.840.1.113883.5.83"/>'
    '<referenceRange><observationRange><value xsi:type="IVL_PQ"><low value="70" unit="mg/dL"/>'
    '<high value="99" unit="mg/dL"/></value></observationRange></referenceRange>'
)


def test_result_quantity_range_interpretation_and_time_zone() -> None:
    value = '<value xsi:type="PQ" value="120.5" unit="mg/dL"/>'
    (o,) = resources(doc(section("2.3.1", obs("4.2", value, RANGE))), "Observation")
    assert o["valueQuantity"] == {
        "value": 120.5,
        "unit": "mg/dL",
        "system": "http://unitsofmeasure.org",
        "code": "mg/dL",
    }
    assert o["effectiveDateTime"] == "2020-01-01T08:30:00-05:00"
    assert o["interpretation"][0]["coding"][0]["code"] == "H"
    assert o["referenceRange"][0]["low"]["value"] == 70
    assert o["category"][0]["coding"][0]["code"] == "laboratory"
    assert o["status"] == "final"


@pytest.mark.parametrize(
    ("value", "field", "expected"),
    [
        ('<value xsi:type="ST">dark yellow</value>', "valueString", "dark yellow"),
        (
            f'<value xsi:type="CD" code="260373001" codeSystem="{SNOMED_OID}"/>',
            "valueCodeableConcept",
            {"coding": [{"code": "260373001", "system": "http://snomed.info/sct"}]},
        ),
        (
            '<value xsi:type="IVL_PQ"><high value="5" unit="mg/dL" inclusive="false"/></value>',
            "valueQuantity",
            {
                "value": 5,
                "unit": "mg/dL",
                "system": "http://unitsofmeasure.org",
                "code": "mg/dL",
                "comparator": "<",
            },
        ),
    ],
)
def test_result_value_types(value: str, field: str, expected: Any) -> None:
    (o,) = resources(doc(section("2.3.1", obs("4.2", value))), "Observation")
    assert o[field] == expected


def test_null_flavored_value_is_absent_with_reason_not_invented() -> None:
    value = '<value xsi:type="PQ" nullFlavor="UNK"/>'
    (o,) = resources(doc(section("2.3.1", obs("4.2", value))), "Observation")
    assert "valueQuantity" not in o
    assert o["dataAbsentReason"]["coding"][0]["code"] == "unknown"


def test_vital_sign_category() -> None:
    value = '<value xsi:type="PQ" value="72" unit="/min"/>'
    (o,) = resources(doc(section("2.4.1", obs("4.27", value))), "Observation")
    assert o["category"][0]["coding"][0]["code"] == "vital-signs"


def test_smoking_status_is_a_social_history_observation() -> None:
    entry = (
        f'<entry><observation classCode="OBS" moodCode="EVN"><templateId root="{T}.4.78"/>'
        '<code code="72166-2" codeSystem="2.16.840.1.113883.6.1"/><statusCode code="completed"/>'
        '<effectiveTime value="20200101"/>'
        f'<value xsi:type="CD" code="8517006" codeSystem="{SNOMED_OID}"/></observation></entry>'
    )
    (o,) = resources(doc(section("2.17", entry)), "Observation")
    assert o["category"][0]["coding"][0]["code"] == "social-history"
    assert o["valueCodeableConcept"]["coding"][0]["code"] == "8517006"


# -- immunizations, procedures, encounters ----------------------------------------------------


def immunization(negated: bool = False, when: str = '<effectiveTime value="20151115"/>') -> str:
    neg = "true" if negated else "false"
    return (
        f'<entry><substanceAdministration classCode="SBADM" moodCode="EVN" negationInd="{neg}">'
        f'<templateId root="{T}.4.52"/><statusCode code="completed"/>{when}'
        f'<consumable><manufacturedProduct><templateId root="{T}.4.54"/><manufacturedMaterial>'
        '<code code="140" codeSystem="2.16.840.1.113883.12.292">'
        '<translation code="49281-0703-55" codeSystem="2.16.840.1.113883.6.69"/></code>'
        "<lotNumberText>L1</lotNumberText></manufacturedMaterial></manufacturedProduct>"
        '</consumable><entryRelationship typeCode="RSON">'
        f'<observation classCode="OBS" moodCode="EVN"><templateId root="{T}.4.53"/>'
        '<code code="PATOBJ" codeSystem="2.16.840.1.113883.5.8"/></observation>'
        "</entryRelationship></substanceAdministration></entry>"
    )


def test_immunization_keeps_ndc_translation() -> None:
    (imm,) = resources(doc(section("2.2.1", immunization())), "Immunization")
    systems = [c["system"] for c in imm["vaccineCode"]["coding"]]
    assert systems == ["http://hl7.org/fhir/sid/cvx", "http://hl7.org/fhir/sid/ndc"]
    assert imm["status"] == "completed"
    assert "statusReason" not in imm
    assert imm["occurrenceDateTime"] == "2015-11-15"


def test_immunization_not_given_has_reason() -> None:
    (imm,) = resources(doc(section("2.2.1", immunization(negated=True))), "Immunization")
    assert imm["status"] == "not-done"
    assert imm["statusReason"]["coding"][0]["code"] == "PATOBJ"


def test_immunization_without_time_is_skipped_not_dated() -> None:
    entry = immunization(when='<effectiveTime nullFlavor="UNK"/>')
    reading = read_ccda(doc(section("2.2.1", entry)), research_id="R-1", patient_id=None)
    assert reading.document.resources == []
    assert reading.document.skipped[0].reason == "immunization has no occurrence time"


def proc(negated: str, when: str) -> str:
    return (
        f'<entry><procedure classCode="PROC" moodCode="EVN" negationInd="{negated}">'
        f'<templateId root="{T}.4.14"/><code code="73761001" codeSystem="{SNOMED_OID}"/>'
        f'<statusCode code="completed"/><effectiveTime value="{when}"/></procedure></entry>'
    )


def test_procedure_and_refused_procedure() -> None:
    body = doc(section("2.7.1", proc("false", "20120806") + proc("true", "20130101")))
    done, refused = resources(body, "Procedure")
    assert (done["status"], done["performedDateTime"]) == ("completed", "2012-08-06")
    assert refused["status"] == "not-done"


def test_refused_and_done_procedure_on_one_day_are_two_facts() -> None:
    body = doc(section("2.7.1", proc("false", "20120806") + proc("true", "20120806")))
    assert len(resources(body, "Procedure")) == 2


def test_encounter_references_its_diagnoses() -> None:
    entry = (
        f'<entry><encounter classCode="ENC" moodCode="EVN"><templateId root="{T}.4.49"/>'
        '<code code="99213" codeSystem="2.16.840.1.113883.6.12">'
        '<translation code="AMB" codeSystem="2.16.840.1.113883.5.4"/></code>'
        '<effectiveTime><low value="201208061000-0400"/><high value="201208061100-0400"/>'
        '</effectiveTime><entryRelationship typeCode="REFR">'
        f'<act classCode="ACT" moodCode="EVN"><templateId root="{T}.4.80"/>'
        f'<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
        f'<templateId root="{T}.4.4"/><statusCode code="completed"/>{DIABETES}'
        "</observation></entryRelationship></act></entryRelationship></encounter></entry>"
    )
    found = resources(doc(section("2.22.1", entry)))
    enc = next(r for r in found if r["resourceType"] == "Encounter")
    cond = next(r for r in found if r["resourceType"] == "Condition")
    assert enc["class"]["code"] == "AMB"
    assert enc["period"] == {
        "start": "2012-08-06T10:00:00-04:00",
        "end": "2012-08-06T11:00:00-04:00",
    }
    assert enc["diagnosis"] == [{"condition": {"reference": f"Condition/{cond['id']}"}}]
    assert cond["category"][0]["coding"][0]["code"] == "encounter-diagnosis"


# -- recognition, ids, dates ------------------------------------------------------------------


def test_unknown_sections_are_ignored_and_ids_are_stable() -> None:
    body = doc(section("2.99", problem(DIABETES)), section("2.5.1", problem(DIABETES)))
    first = normalize_ccda(body, research_id="R-1", patient_id=None)
    again = normalize_ccda(body, research_id="R-1", patient_id=None)
    assert [r.fhir_id for r in first.resources] == [r.fhir_id for r in again.resources]
    assert len(first.resources) == 1
    assert first.resources[0].source_id == "1.2.3.4^p1"


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("2020", "2020"),
        ("202003", "2020-03"),
        ("20200315", "2020-03-15"),
        ("202003151230-0500", "2020-03-15T12:30:00-05:00"),
        ("20200315123045.5+0100", "2020-03-15T12:30:45.5+01:00"),
        ("20200315123045", "2020-03-15"),  # no offset: the day, not a guessed zone
        ("garbage", None),
    ],
)
def test_hl7_timestamps_keep_precision_and_zone(ts: str, expected: str | None) -> None:
    assert fhir_time(ts) == expected


# -- safety -----------------------------------------------------------------------------------

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol2;</title></ClinicalDocument>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&xxe;</title></ClinicalDocument>"""


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param(BILLION_LAUGHS, "declares a DTD", id="billion-laughs"),
        pytest.param(EXTERNAL_ENTITY, "declares a DTD", id="external-entity"),
        pytest.param(b"<ClinicalDocument", "not well-formed", id="malformed"),
        pytest.param(b"<html xmlns='urn:x'/>", "not a CDA document", id="non-CDA"),
        pytest.param(b"<ClinicalDocument/>", "not a CDA document", id="no-namespace"),
        pytest.param(b" " * (MAX_CCDA_BYTES + 1), "MiB cap", id="oversize"),
    ],
)
def test_hostile_and_broken_documents_are_refused(body: bytes, reason: str) -> None:
    with pytest.raises(UnreadableDocument, match=reason):
        normalize_ccda(body, research_id="R-1", patient_id=None)


def test_document_about_another_patient_is_refused() -> None:
    with pytest.raises(WrongPatientError):
        normalize_ccda(doc(patient="MRN-2"), research_id="R-1", patient_id="MRN-1")


def test_non_xml_body_is_not_parsed() -> None:
    body = (
        b'<ClinicalDocument xmlns="urn:hl7-org:v3"><component><nonXMLBody>'
        b'<text mediaType="text/plain">hello</text></nonXMLBody></component></ClinicalDocument>'
    )
    reading = read_ccda(body, research_id="R-1", patient_id=None)
    assert not reading.structured
    assert reading.document.resources == []


# -- the shared HL7 examples ------------------------------------------------------------------

# Under CI a missing ../shared fails (test_the_shared_examples_are_there); elsewhere skip.
needs_examples = pytest.mark.skipif(
    not EXAMPLES.is_dir() and not os.environ.get("CI"),
    reason="../shared/ccda-examples is missing (outside CI it is optional)",
)


def test_the_shared_examples_are_there() -> None:
    assert require_ccda_examples().is_dir()


@needs_examples
@pytest.mark.parametrize(
    "path",
    sorted(p for p in EXAMPLES.rglob("*") if p.suffix.lower() == ".xml")
    if EXAMPLES.is_dir()
    else [],
    ids=lambda p: p.stem,
)
def test_every_example_reads_and_validates(path: Path) -> None:
    reading = read_ccda(as_document(path.read_bytes()), research_id="R-1", patient_id=None)
    for r in reading.document.resources:
        get_fhir_model_class(r.resource_type).model_validate(r.body)
    for skipped in reading.document.skipped:
        assert not skipped.reason.startswith("invalid FHIR"), skipped.reason


@needs_examples
def test_whole_ccd_checks_patient_and_covers_every_section_kind() -> None:
    body = (EXAMPLES / "Documents/CCD/CCD_1/CCD.XML").read_bytes()
    types = {
        r.resource_type for r in normalize_ccda(body, research_id="R-1", patient_id=None).resources
    }
    assert {"Condition", "AllergyIntolerance", "MedicationStatement", "Observation"} <= types
    assert {"Immunization", "Procedure", "Encounter"} <= types


@needs_examples
def test_example_no_known_problems_is_not_a_positive_condition() -> None:
    path = EXAMPLES / "Problems/No_Known_Problems/No_Known_Problems_C-CDA2.1.xml"
    found = normalize_ccda(as_document(path.read_bytes()), research_id="R-1", patient_id=None)
    for r in found.resources:
        assert r.body["verificationStatus"]["coding"][0]["code"] == "refuted"


@needs_examples
def test_coverage_on_examples_meets_target() -> None:
    report = ccda_coverage(EXAMPLES)
    assert report.crashes == 0
    assert report.total.percent >= 95.0, format_report(report)


# -- the mock network's generated C-CDAs ------------------------------------------------------


def test_mock_network_ccdas_read_with_patient_check() -> None:
    produced = kinds = 0
    seen: set[str] = set()
    for k in range(30):
        subject = DocSubject(k, f"MRN-{k}", "Sam", "Lee", dt.date(1950 + k, 1, 10), "female")
        for i in range(4):
            document = make_document(subject, "org-a", "ORG-A", 7, i, DocumentMix(1, 1, 0, 0))
            if document.content_type == "application/fhir+json":
                continue
            reading = read_ccda(document.body, research_id="R-1", patient_id=f"MRN-{k}")
            assert not [s for s in reading.document.skipped if "invalid FHIR" in s.reason]
            assert all(e.produced for e in reading.entries if e.coded)
            produced += len(reading.document.resources)
            kinds += 1
            seen |= {r.resource_type for r in reading.document.resources}
    assert kinds > 0
    assert produced > 0
    assert {"Condition", "MedicationStatement", "Observation"} <= seen
