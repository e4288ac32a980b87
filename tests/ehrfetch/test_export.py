"""``ehrfetch export`` (FHIR Bulk Data NDJSON) and ``ehrfetch convert``."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fhir.resources.R4B import get_fhir_model_class
from typer.testing import CliRunner, Result

from ehrfetch import cli_export
from ehrfetch.cli import app
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.selection import rules_from
from ehrfetch.export import export_ndjson
from ehrfetch.normalize.fhir_bundle import NormalizedDocument, normalize_bundle
from ehrfetch.provenance import SourceDocument, build_provenance
from ehrfetch.settings import CohortSettings
from ehrfetch.store.documents import DerivedResource, FetchedDocument, save_document
from ehrfetch.store.links import OrganizationRow, upsert_organizations
from ehrfetch.store.participants import participant_ids
from ehrfetch.store.tables import Resource
from support import CTX, NOW, StoreUnderTest, roster_row, write_consents, write_roster

RULES = rules_from(CohortSettings(), NOW)
OLD = NOW - timedelta(days=10)
R1_PHI = ("Philomena", "Castellano", "1961-07-04", "12 Harbor View Rd", "Smith", "Salem")


# --- store state -----------------------------------------------------------------------------


@pytest.fixture
def pids(db: StoreUnderTest, tmp_path: Path) -> dict[str, int]:
    rows = [
        roster_row(
            "R1",
            given="Philomena",
            previous_names="Smith",
            previous_addresses="1 Elm St^^Salem^MA^01970",
        ),
        roster_row("R2", given="Ana", family="Ortiz", sex="female", birth_date="1990-02-03"),
        roster_row("R3"),  # no data: not in the export
    ]
    import_roster(write_roster(tmp_path / "r.csv", rows), db.sessions, CTX)
    consents: list[tuple[str, ...]] = [
        (r, "ehr", "active", "2024-01-01", "") for r in ("R1", "R2", "R3")
    ]
    import_consents(write_consents(tmp_path / "c.csv", consents), db.sessions, CTX)
    with db.sessions.begin() as session:
        upsert_organizations(
            session, [OrganizationRow("org1", "Org 1", "http://o1/fhir", "o1")], NOW
        )
        return participant_ids(session, ["R1", "R2", "R3"])


def condition(rid: str, key: str) -> DerivedResource:
    body: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"c-{rid}-{key}",
        "subject": {"reference": f"Patient/{rid}"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": key}]},
    }
    return DerivedResource("Condition", body["id"], key, body, key)


def observation(rid: str, key: str) -> DerivedResource:
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": f"o-{rid}-{key}",
        "status": "final",
        "subject": {"reference": f"Patient/{rid}"},
        "code": {"coding": [{"system": "http://loinc.org", "code": key}]},
        "valueQuantity": {"value": 5.4, "unit": "%"},
    }
    return DerivedResource("Observation", body["id"], key, body, key)


def store_document(
    db: StoreUnderTest,
    pid: int,
    rid: str,
    ref: str,
    resources: Sequence[DerivedResource],
    at: datetime,
) -> None:
    doc = FetchedDocument(
        participant_id=pid, organization_id="org1", link_id=None, document_reference_id=ref,
        url=f"http://o1/fhir/Binary/{ref}", content_type="application/fhir+json",
        declared_size=3, declared_sha1=None, computed_sha1="x", sha256="ab" * 32, size=3,
        content=b"{ }",
    )  # fmt: skip
    source = SourceDocument("org1", "Org 1", ref, doc.url, "ab" * 32, None, doc.content_type)

    def provenance(targets: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
        body = build_provenance(
            research_id=rid, source=source, targets=targets, purpose_of_use="TREAT", recorded=at
        )
        return body["id"], body

    with db.sessions.begin() as session:
        save_document(session, doc, resources, provenance, RULES, at)


@pytest.fixture
def filled(db: StoreUnderTest, pids: dict[str, int]) -> dict[str, int]:
    store_document(db, pids["R1"], "R1", "d1", [condition("R1", "a"), observation("R1", "x")], OLD)
    store_document(db, pids["R1"], "R1", "d2", [condition("R1", "b")], NOW)
    store_document(db, pids["R2"], "R2", "d3", [condition("R2", "a")], OLD)
    return pids


def export(db: StoreUnderTest, directory: Path, **kwargs: Any) -> Any:
    with db.sessions() as session:
        return export_ndjson(session, directory, now=NOW, **kwargs)


def read_export(directory: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    manifest = json.loads((directory / "manifest.json").read_text())
    files = {
        item["type"]: [
            json.loads(line) for line in (directory / item["url"]).read_text().splitlines()
        ]
        for item in manifest["output"]
    }
    return manifest, files


def assert_every_line_validates(directory: Path) -> int:
    lines = 0
    for path in sorted(directory.glob("*.ndjson")):
        for line in path.read_bytes().splitlines():
            kind = orjson.loads(line)["resourceType"]
            assert f"{kind}.ndjson" == path.name
            get_fhir_model_class(kind).model_validate_json(line)
            lines += 1
    return lines


# --- export ----------------------------------------------------------------------------------


def test_layout_manifest_and_pseudonymous_patients(
    db: StoreUnderTest, filled: dict[str, int], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    export(db, out)
    manifest, files = read_export(out)
    assert manifest["transactionTime"] == "2026-06-01T12:00:00Z"
    assert manifest["requiresAccessToken"] is False
    assert manifest["error"] == []
    assert [(o["type"], o["url"], o["count"]) for o in manifest["output"]] == [
        ("Patient", "Patient.ndjson", 2),
        ("Condition", "Condition.ndjson", 3),
        ("Observation", "Observation.ndjson", 1),
        ("Provenance", "Provenance.ndjson", 3),
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "Condition.ndjson", "Observation.ndjson", "Patient.ndjson", "Provenance.ndjson",
        "manifest.json",
    ]  # fmt: skip
    assert files["Patient"] == [
        {
            "resourceType": "Patient",
            "id": rid,
            "identifier": [{"system": "urn:ehrfetch:research-id", "value": rid}],
        }
        for rid in ("R1", "R2")
    ]
    text = "".join(p.read_text() for p in out.iterdir())
    assert not [phi for phi in R1_PHI if phi in text]
    targets = {t["reference"] for p in files["Provenance"] for t in p["target"]}
    assert targets == {
        f"{r['resourceType']}/{r['id']}" for k in ("Condition", "Observation") for r in files[k]
    }
    assert assert_every_line_validates(out) == 9


def test_with_demographics_patient_carries_the_roster(
    db: StoreUnderTest, filled: dict[str, int], tmp_path: Path
) -> None:
    export(db, tmp_path / "e", demographics=True)
    _, files = read_export(tmp_path / "e")
    r1, r2 = files["Patient"]
    assert r1["name"] == [
        {"use": "official", "family": "Castellano", "given": ["Philomena", "Lee"]},
        {"use": "old", "family": "Smith"},
    ]
    assert (r1["birthDate"], r1["gender"]) == ("1961-07-04", "male")
    assert r1["address"] == [
        {
            "use": "home",
            "line": ["12 Harbor View Rd"],
            "city": "Portland",
            "state": "ME",
            "postalCode": "04101",
        },
        {"use": "old", "line": ["1 Elm St"], "city": "Salem", "state": "MA", "postalCode": "01970"},
    ]
    assert {t["system"] for t in r1["telecom"]} == {"phone", "email"}
    assert (r2["birthDate"], r2["gender"], r2["name"][0]["family"]) == (
        "1990-02-03",
        "female",
        "Ortiz",
    )
    assert "4821" not in (tmp_path / "e" / "Patient.ndjson").read_text()  # never the SSN digits
    assert_every_line_validates(tmp_path / "e")


def run(args: list[str], url: str) -> Result:
    return CliRunner().invoke(app, args, env={"COLUMNS": "200", "EHRFETCH__STORE__URL": url})


def test_cli_participant_and_since_filters(
    db: StoreUnderTest, filled: dict[str, int], tmp_path: Path
) -> None:
    result = run(["export", "--format", "ndjson", "--out", "one", "--participant", "R2"], db.url)
    assert result.exit_code == 0, result.output
    manifest, files = read_export(Path("one"))
    assert [p["id"] for p in files["Patient"]] == ["R2"]
    assert [c["id"] for c in files["Condition"]] == ["c-R2-a"]
    assert len(files["Provenance"]) == 1 and "Observation" not in files
    assert "--participant R2" in manifest["request"]

    since = (NOW - timedelta(days=1)).isoformat()
    result = run(["export", "--out", "recent", "--since", since], db.url)
    assert result.exit_code == 0, result.output
    _, files = read_export(Path("recent"))
    assert [p["id"] for p in files["Patient"]] == ["R1"]
    assert [c["id"] for c in files["Condition"]] == ["c-R1-b"]
    assert [len(p["target"]) for p in files["Provenance"]] == [1]
    assert_every_line_validates(Path("recent"))


def test_cli_refuses_unknown_participant_bad_since_and_a_used_folder(
    db: StoreUnderTest, filled: dict[str, int]
) -> None:
    result = run(["export", "--out", "x", "--participant", "NOPE"], db.url)
    assert result.exit_code == 2 and "no participant with research id NOPE" in result.stderr
    assert not Path("x").exists()
    result = run(["export", "--out", "x", "--since", "yesterday"], db.url)
    assert result.exit_code == 2 and "--since" in result.stderr
    assert run(["export", "--out", "x"], db.url).exit_code == 0
    result = run(["export", "--out", "x"], db.url)
    assert result.exit_code == 2 and "already holds an export" in result.stderr


def test_empty_store_exports_an_empty_manifest(db: StoreUnderTest) -> None:
    result = run(["export", "--out", "empty"], db.url)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in Path("empty").iterdir()) == ["manifest.json"]
    manifest = json.loads(Path("empty/manifest.json").read_text())
    assert (manifest["output"], manifest["error"]) == ([], [])
    assert "nothing to export" in result.stdout


def test_invalid_stored_resource_is_left_out_with_an_operation_outcome(
    db: StoreUnderTest, filled: dict[str, int], tmp_path: Path
) -> None:
    with db.sessions.begin() as session:
        bad = {"resourceType": "Observation", "id": "o-bad", "code": {"text": "secret value"}}
        session.add(
            Resource(
                participant_id=filled["R2"], resource_type="Observation", fhir_id="o-bad",
                dedup_key="bad", body=bad, created_at=NOW, updated_at=NOW,
            )
        )  # fmt: skip
    result = export(db, tmp_path / "e")
    assert result.invalid == 1
    manifest, _ = read_export(tmp_path / "e")
    assert [o["count"] for o in manifest["output"] if o["type"] == "Observation"] == [1]
    assert manifest["error"] == [
        {"type": "OperationOutcome", "url": "OperationOutcome.ndjson", "count": 1}
    ]
    (outcome,) = [
        json.loads(x) for x in (tmp_path / "e/OperationOutcome.ndjson").read_text().splitlines()
    ]
    diagnostics = outcome["issue"][0]["diagnostics"]
    assert "Observation/o-bad not exported" in diagnostics and "status" in diagnostics
    assert "secret value" not in diagnostics
    assert assert_every_line_validates(tmp_path / "e") == 10  # 9 + the OperationOutcome

    result = run(["export", "--out", "cli"], db.url)
    assert result.exit_code == 1 and "did not validate" in result.stdout


# --- convert ---------------------------------------------------------------------------------

BUNDLE = {
    "resourceType": "Bundle",
    "type": "collection",
    "entry": [
        {"fullUrl": "urn:uuid:p1", "resource": {"resourceType": "Patient", "id": "site-77"}},
        {
            "resource": {
                "resourceType": "Condition",
                "id": "c1",
                "subject": {"reference": "urn:uuid:p1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
            }
        },
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o1",
                "status": "final",
                "subject": {"reference": "Patient/site-77"},
                "code": {"text": "HbA1c"},
                "valueQuantity": {"value": "high", "unit": "%"},
            }
        },
        {
            "resource": {
                "resourceType": "Observation",
                "id": "o2",
                "status": "final",
                "subject": {"reference": "Patient/site-77"},
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "valueQuantity": {"value": 6.1, "unit": "%"},
            }
        },
    ],
}


def test_convert_bundle_prints_resources_and_reports_the_skipped_entry(tmp_path: Path) -> None:
    path = tmp_path / "bundle.json"
    path.write_bytes(orjson.dumps(BUNDLE))
    result = CliRunner().invoke(
        app, env={"COLUMNS": "400"}, args=["convert", str(path), "--participant-id", "R9"]
    )
    assert result.exit_code == 1  # done, but an entry was skipped
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [r["resourceType"] for r in lines] == ["Condition", "Observation"]
    assert {r["subject"]["reference"] for r in lines} == {"Patient/R9"}
    for line in result.stdout.splitlines():
        get_fhir_model_class(orjson.loads(line)["resourceType"]).model_validate_json(line)
    assert "skipped entry 2 (Observation): invalid FHIR at valueQuantity.value" in result.stderr
    assert "2 resource(s), 1 skipped" in result.stderr


def test_convert_garbage_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "garbage.bin"
    path.write_bytes(b"\x00\x01 not a document")
    result = CliRunner().invoke(app, env={"COLUMNS": "400"}, args=["convert", str(path)])
    assert result.exit_code == 2
    assert "neither a FHIR Bundle (JSON) nor a C-CDA document (XML)" in result.stderr
    assert result.stdout == ""
    broken = tmp_path / "broken.json"
    broken.write_bytes(b'{"resourceType": "Bundle", ')
    result = CliRunner().invoke(app, env={"COLUMNS": "400"}, args=["convert", str(broken)])
    assert result.exit_code == 2 and "not JSON" in result.stderr
    result = CliRunner().invoke(
        app, env={"COLUMNS": "400"}, args=["convert", str(tmp_path / "missing.json")]
    )
    assert result.exit_code == 2


def test_convert_xml_without_the_ccda_module_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cli_export, "_ccda_converter", lambda: None)
    path = tmp_path / "doc.xml"
    path.write_bytes(b'<?xml version="1.0"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>')
    result = CliRunner().invoke(app, env={"COLUMNS": "400"}, args=["convert", str(path)])
    assert result.exit_code == 2 and "C-CDA conversion not available yet" in result.stderr


def test_convert_xml_calls_normalize_ccda_without_a_patient_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake(body: bytes, **kwargs: Any) -> NormalizedDocument:
        calls.append(kwargs)
        return NormalizedDocument()

    converter: Callable[[], Callable[..., NormalizedDocument]] = lambda: fake  # noqa: E731
    monkeypatch.setattr(cli_export, "_ccda_converter", converter)
    path = tmp_path / "doc.xml"
    path.write_bytes(b"<ClinicalDocument/>")
    result = CliRunner().invoke(
        app, env={"COLUMNS": "400"}, args=["convert", str(path), "--participant-id", "R4"]
    )
    assert result.exit_code == 0, result.output
    assert calls == [{"research_id": "R4", "patient_id": None}]


def test_normalize_bundle_without_patient_id_takes_the_bundles_patient() -> None:
    body = orjson.dumps(BUNDLE)
    document = normalize_bundle(body, research_id="R9", patient_id=None)
    assert [r.resource_type for r in document.resources] == ["Condition", "Observation"]
    # No Patient entry at all: the resources' subject is the patient.
    no_patient = {**BUNDLE, "entry": BUNDLE["entry"][3:]}
    document = normalize_bundle(orjson.dumps(no_patient), research_id="R9", patient_id=None)
    assert document.resources[0].body["subject"] == {"reference": "Patient/R9"}
    # With a patient id the check still stands.
    from ehrfetch.errors import WrongPatientError

    with pytest.raises(WrongPatientError):
        normalize_bundle(body, research_id="R9", patient_id="someone-else")
