"""MatchPerson from a roster record and from a FHIR Patient."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.matching.person import MatchPerson
from ehrfetch.store.tables import Sex

HOME = PostalAddress("12 Harbor View Rd", None, "Portland", "ME", "04101")
OLD = PostalAddress("9 Elm St", "Apt 2", "Bangor", "ME", "04401")


def test_from_record_orders_current_before_previous() -> None:
    record = ParticipantRecord(
        research_id="R-1",
        name=PersonName("Smith", "Ann", "Marie", "Jr."),
        birth_date=dt.date(1970, 3, 7),
        sex=Sex.FEMALE,
        address=HOME,
        previous_names=(PersonName("Jones", "Ann"),),
        previous_addresses=(OLD,),
        phone="+12075550134",
        email="Ann@Example.org",
        ssn_last4="4821",
    )
    person = MatchPerson.from_record(record)
    assert person.id == "R-1"
    assert [name.family for name in person.names] == ["Smith", "Jones"]
    assert person.addresses == (HOME, OLD)
    assert person.phones == ("+12075550134",)
    assert person.emails == ("ann@example.org",)
    assert person.ssn_last4 == "4821"
    assert person.suffix == "JR"
    assert person.sex is Sex.FEMALE


def test_from_record_without_optional_fields() -> None:
    record = ParticipantRecord("R-2", PersonName("Smith"), dt.date(1970, 1, 1), Sex.UNKNOWN)
    person = MatchPerson.from_record(record)
    assert person.addresses == () and person.phones == () and person.emails == ()
    assert person.ssn_last4 is None and person.suffix is None


PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "0847146114",
    "identifier": [
        {"system": "urn:org:mrn", "value": "12345"},
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
    ],
    "name": [
        {"use": "maiden", "family": "Jones", "given": ["Ann"]},
        {"use": "official", "family": "Smith", "given": ["Ann", "Marie"], "suffix": ["MD"]},
        {"family": "Smyth", "given": ["Annie"], "period": {"end": "2001-01-01"}},
    ],
    "gender": "female",
    "birthDate": "1970-03-07",
    "address": [
        {"use": "old", "line": ["9 Elm St", "Apt 2"], "city": "Bangor", "state": "ME"},
        {"use": "home", "line": ["12 Harbor View Rd"], "city": "Portland", "postalCode": "04101"},
    ],
    "telecom": [
        {"system": "phone", "value": "(207) 555-0134", "use": "home"},
        {"system": "email", "value": "Ann@Example.org"},
        {"system": "fax", "value": "(207) 555-9999"},
    ],
}


def test_from_fhir_patient_reads_history_and_identifiers() -> None:
    person = MatchPerson.from_fhir_patient(PATIENT)
    assert person.id == "0847146114"
    assert [(n.family, n.given, n.middle) for n in person.names] == [
        ("Smith", "Ann", "Marie"),
        ("Jones", "Ann", None),
        ("Smyth", "Annie", None),
    ]
    assert person.suffix is None  # MD is not a generational suffix
    assert person.birth_date == dt.date(1970, 3, 7)
    assert person.sex is Sex.FEMALE
    assert person.addresses[0].line1 == "12 Harbor View Rd"
    assert person.addresses[1] == PostalAddress("9 Elm St", "Apt 2", "Bangor", "ME", None)
    assert person.phones == ("+12075550134",)  # the fax is not a phone to match on
    assert person.emails == ("ann@example.org",)
    assert person.ssn_last4 == "6789"  # only the last four digits are kept


def test_ssn_by_identifier_type() -> None:
    resource = {
        "resourceType": "Patient",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}
                    ]
                },
                "value": "987654321",
            }
        ],
    }
    assert MatchPerson.from_fhir_patient(resource).ssn_last4 == "4321"


@pytest.mark.parametrize(
    "resource",
    [
        {},
        {"resourceType": "Patient"},
        {"name": "not a list", "birthDate": 19700101, "gender": 3, "telecom": {"x": 1}},
        {"name": [None, 5, {"given": [None, 7]}], "address": [None, {"line": [None]}]},
        {"birthDate": "1970"},
        {"birthDate": "1970-02-30"},
        {"gender": "robot", "identifier": [{"system": "http://hl7.org/fhir/sid/us-ssn"}]},
        {"telecom": [{"system": "phone", "value": "abc"}, {"system": "email", "value": "x"}]},
    ],
)
def test_from_fhir_patient_never_raises(resource: dict[str, Any]) -> None:
    person = MatchPerson.from_fhir_patient(resource)
    assert person.birth_date is None
    assert person.phones == () and person.emails == () and person.ssn_last4 is None


def test_name_from_text_only() -> None:
    person = MatchPerson.from_fhir_patient({"name": [{"text": "Ann Marie Smith"}]})
    assert person.name == PersonName("Smith", "Ann", "Marie")


def test_generational_suffix_from_fhir() -> None:
    resource = {"name": [{"family": "Smith", "given": ["John"], "suffix": ["Jr."]}]}
    assert MatchPerson.from_fhir_patient(resource).suffix == "JR"
