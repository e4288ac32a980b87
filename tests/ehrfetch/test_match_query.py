"""What ehrfetch discloses to the network in a $match: enough to match, no more."""

from __future__ import annotations

from datetime import date

from fhir.resources.R4B.patient import Patient

from ehrfetch.acquire import match_query
from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.store.tables import Sex

RECORD = ParticipantRecord(
    research_id="R1",
    name=PersonName(family="Lindqvist", given="Grace", middle="Ada", suffix="Jr"),
    previous_names=(PersonName(family="Okafor"),),
    birth_date=date(1984, 11, 2),
    sex=Sex.FEMALE,
    address=PostalAddress("4 Cove St", "Unit 2", "Boston", "MA", "02110"),
    previous_addresses=(PostalAddress("80 Old Rd", None, "Lowell", "MA", "01850"),),
    phone="+16175550177",
    email="grace@example.org",
    ssn_last4="6789",
)


def test_query_is_a_valid_patient_with_history() -> None:
    query = match_query(RECORD)
    Patient.model_validate(query)
    assert [(n["use"], n["family"]) for n in query["name"]] == [
        ("official", "Lindqvist"),
        ("old", "Okafor"),
    ]
    assert query["name"][0]["given"] == ["Grace", "Ada"]
    assert query["name"][0]["suffix"] == ["Jr"]
    assert [a["use"] for a in query["address"]] == ["home", "old"]
    assert {t["system"] for t in query["telecom"]} == {"phone", "email"}


def test_query_never_carries_the_research_id_or_ssn() -> None:
    text = str(match_query(RECORD))
    assert "6789" not in text
    assert "R1" not in text
    assert "identifier" not in match_query(RECORD)
