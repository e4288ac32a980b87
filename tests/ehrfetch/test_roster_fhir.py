"""Roster as FHIR R4 Patient NDJSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from ehrfetch.cohort.importing import import_roster, roster_format
from ehrfetch.errors import InputFileError
from ehrfetch.store.tables import Participant, Sex
from support import CTX, StoreUnderTest

SYSTEM = CTX.research_id_system


def patient(research_id: str = "R1", **changes: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "local-17",
        "identifier": [
            {"system": "http://hospital.example/mrn", "value": "MRN-9"},
            {"system": SYSTEM, "value": research_id},
            {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "123-45-6789"},
        ],
        "name": [
            {"use": "maiden", "family": "Okafor", "given": ["Grace"]},
            {"use": "official", "family": "Lindqvist", "given": ["Grace", "Adaeze"]},
        ],
        "gender": "female",
        "birthDate": "1984-11-02",
        "telecom": [
            {"system": "email", "value": "grace@example.org"},
            {"system": "phone", "value": "+1 (617) 555-0177"},
        ],
        "address": [
            {"use": "home", "line": ["4 Cove St", "Unit 2"], "city": "Boston", "state": "MA",
             "postalCode": "02110"},
            {"use": "home", "line": ["80 Old Rd"], "city": "Lowell", "state": "MA",
             "postalCode": "01850", "period": {"end": "2019-05-01"}},
        ],
    }  # fmt: skip
    resource.update(changes)
    return resource


def write_ndjson(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def line(resource: dict[str, Any]) -> bytes:
    return orjson.dumps(resource)


def test_patient_becomes_participant_with_history_and_only_ssn_last4(
    db: StoreUnderTest, tmp_path: Path
) -> None:
    report = import_roster(write_ndjson(tmp_path / "r.ndjson", [line(patient())]), db.sessions, CTX)
    assert (report.inserted, report.skipped) == (1, 0)
    with db.sessions() as session:
        p = session.scalars(select(Participant)).one()
        assert (p.research_id, p.sex, str(p.birth_date)) == ("R1", Sex.FEMALE, "1984-11-02")
        assert (p.phone, p.email, p.ssn_last4) == ("+16175550177", "grace@example.org", "6789")
        assert [(n.current, n.given, n.middle, n.family) for n in p.names] == [
            (True, "Grace", "Adaeze", "Lindqvist"),
            (False, "Grace", None, "Okafor"),
        ]
        assert [(a.current, a.line1, a.line2, a.city) for a in p.addresses] == [
            (True, "4 Cove St", "Unit 2", "Boston"),
            (False, "80 Old Rd", None, "Lowell"),
        ]


@pytest.mark.parametrize(
    ("raw", "column", "reason"),
    [
        pytest.param(b'{"resourceType": "Patient", ', "-", "not valid JSON", id="malformed json"),
        pytest.param(b"[1, 2]", "-", "not a JSON object", id="not an object"),
        pytest.param(b'\xff{"a": 1}', "-", "not valid UTF-8", id="invalid utf-8"),
        pytest.param(
            line({"resourceType": "Observation"}), "resourceType", "is not Patient", id="wrong type"
        ),
        pytest.param(
            line(patient(identifier=[{"system": "other", "value": "R2"}])),
            "identifier",
            f"no identifier with system {SYSTEM}",
            id="no research id",
        ),
        pytest.param(
            line(patient("R2", birthDate="1990-02-30")), "birthDate", "invalid FHIR", id="bad date"
        ),
        pytest.param(
            line(patient("R2", birthDate="2030-02-03")), "birthDate", "future", id="future date"
        ),
        pytest.param(line(patient("R2", gender="mal")), "gender", "unknown sex", id="bad gender"),
        pytest.param(
            line(patient("R2", telecom=[{"system": "phone", "value": "12"}])),
            "telecom[0].value",
            "phone",
            id="bad phone",
        ),
        pytest.param(
            line(patient("R2", name=[{"given": ["Ann"]}])), "name[0]", "family", id="no family"
        ),
        pytest.param(
            line(patient("R2", name=[{"family": 7}])), "name[0].family", "invalid FHIR", id="type"
        ),
        pytest.param(
            line(patient("R2", address=[{"postalCode": "1234"}])),
            "address[0]",
            "ZIP",
            id="bad zip",
        ),
    ],
)
def test_bad_line_is_reported_and_skipped(
    db: StoreUnderTest, tmp_path: Path, raw: bytes, column: str, reason: str
) -> None:
    path = write_ndjson(tmp_path / "r.ndjson", [line(patient("R1")), raw, line(patient("R3"))])
    report = import_roster(path, db.sessions, CTX)
    assert (report.inserted, report.skipped) == (2, 1)
    [problem] = report.problems
    assert (problem.line, problem.column) == (2, column)
    assert reason in problem.reason
    for secret in ("Lindqvist", "1984-11-02", "617", "Cove"):
        assert secret not in str(problem)


def test_duplicate_research_id_in_ndjson(db: StoreUnderTest, tmp_path: Path) -> None:
    path = write_ndjson(tmp_path / "r.ndjson", [line(patient("R1")), line(patient("R1"))])
    report = import_roster(path, db.sessions, CTX)
    assert (report.inserted, report.skipped) == (0, 2)


def test_format_comes_from_extension(tmp_path: Path) -> None:
    assert roster_format(tmp_path / "a.ndjson") == "ndjson"
    assert roster_format(tmp_path / "a.CSV") == "csv"
    with pytest.raises(InputFileError, match="pass --format"):
        roster_format(tmp_path / "a.xlsx")
