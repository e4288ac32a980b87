"""The roster command: roster.csv and consents.csv in the documented formats, and the truth."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import phonenumbers

from mock_network.config import NetworkConfig
from mock_network.population import Population
from mock_network.roster import CONSENT_COLUMNS, ROSTER_COLUMNS, write_roster

REPO = Path(__file__).resolve().parents[2]


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_roster_rows_follow_the_roster_format(tmp_path: Path, config: NetworkConfig) -> None:
    write_roster(config, tmp_path, size=300)
    rows = _read(tmp_path / "roster.csv")
    assert tuple(rows[0]) == ROSTER_COLUMNS
    assert len(rows) == 300
    assert len({r["research_id"] for r in rows}) == 300
    for row in rows:
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,64}", row["research_id"])
        assert row["given"] and row["family"]
        born = dt.date.fromisoformat(row["birth_date"])
        assert dt.date(1880, 1, 1) <= born <= dt.date.today()
        assert row["sex"] in {"male", "female", "other", "unknown", "M", "F", "O", "U"}
        assert row["suffix"] in {"", "Jr", "Sr", "II", "III"}
        assert re.fullmatch(r"[A-Z]{2}", row["state"])
        assert re.fullmatch(r"\d{5}(-\d{4})?", row["postal_code"])
        if row["phone"]:
            assert phonenumbers.is_valid_number(phonenumbers.parse(row["phone"], "US"))
        if row["ssn_last4"]:
            assert re.fullmatch(r"\d{4}", row["ssn_last4"]) and row["ssn_last4"] != "0000"
        if row["email"]:
            assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", row["email"])
        for name in filter(None, row["previous_names"].split("|")):
            assert 1 <= len(name.split("^")) <= 4
        for address in filter(None, row["previous_addresses"].split("|")):
            assert len(address.split("^")) == 5
        assert row["ehr_on_file"] in {"true", "false"}
    assert any(r["ehr_on_file"] == "true" for r in rows)
    assert any(r["previous_names"] for r in rows) and any(r["previous_addresses"] for r in rows)


def test_consents_follow_the_consent_format(tmp_path: Path, config: NetworkConfig) -> None:
    write_roster(config, tmp_path, size=300)
    ids = {r["research_id"] for r in _read(tmp_path / "roster.csv")}
    consents = _read(tmp_path / "consents.csv")
    assert tuple(consents[0]) == CONSENT_COLUMNS

    def instant(text: str) -> dt.datetime:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)

    now = dt.datetime.now(dt.UTC)
    for row in consents:
        assert row["research_id"] in ids
        assert row["type"] in {"ehr", "biospecimen"}
        assert row["status"] in {"active", "withdrawn", "declined"}
        assert instant(row["recorded_at"]) <= now
        if row["status"] == "withdrawn":
            assert instant(row["recorded_at"]) <= instant(row["withdrawn_at"]) <= now
        else:
            assert row["withdrawn_at"] == ""
    statuses = {r["status"] for r in consents if r["type"] == "ehr"}
    assert statuses == {"active", "withdrawn", "declined"}
    assert {r["research_id"] for r in consents if r["type"] == "ehr"} == ids
    assert len({(r["research_id"], r["type"], r["recorded_at"]) for r in consents}) == len(consents)


def test_truth_maps_each_participant_to_each_org(
    tmp_path: Path, config: NetworkConfig, population: Population
) -> None:
    write_roster(config, tmp_path, size=300)
    truth = [json.loads(line) for line in (tmp_path / "truth.ndjson").read_text().splitlines()]
    rows = {r["research_id"]: r for r in _read(tmp_path / "roster.csv")}
    assert {t["research_id"] for t in truth} == set(rows)
    for line in truth:
        assert set(line["known_at"]) == {org.id for org in config.orgs}
        for org_id, patient_id in line["known_at"].items():
            record = population.record(line["person_index"], org_id)
            assert patient_id == (None if record is None else record.patient_id)
        assert line["known_nowhere"] == all(v is None for v in line["known_at"].values())
        assert (rows[line["research_id"]]["ehr_on_file"] == "true") == line["ehr_on_file"]
    assert any(t["known_nowhere"] for t in truth)
    assert any(t["consent"] == "withdrawn" for t in truth)


def test_truth_marks_every_kind_of_hard_case(tmp_path: Path, config: NetworkConfig) -> None:
    summary = write_roster(config, tmp_path, size=300)
    truth = [json.loads(line) for line in (tmp_path / "truth.ndjson").read_text().splitlines()]
    kinds = {t["hard_case"] for t in truth}
    assert {"twin", "junior_senior", "namesake", "household"} <= kinds
    assert summary.hard_cases["twin"] >= 2
    by_id = {t["research_id"]: t for t in truth}
    # Both twins of a pair are usually in the cohort: the truth links them.
    pairs = [
        t
        for t in truth
        if t["hard_case"] == "twin"
        and any(r["relation"] == "twin" and r["research_id"] for r in t["related"])
    ]
    assert pairs
    for twin in pairs:
        other = next(r for r in twin["related"] if r["relation"] == "twin")
        assert by_id[other["research_id"]]["person_id"] == other["person_id"]


def test_roster_is_deterministic(tmp_path: Path, config: NetworkConfig) -> None:
    write_roster(config, tmp_path / "one", size=120)
    write_roster(config, tmp_path / "two", size=120)
    for name in ("roster.csv", "consents.csv", "truth.ndjson"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_roster_command_line(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mock_network",
            "roster",
            "--config",
            str(REPO / "config" / "mock_network.toml"),
            "--out",
            str(out),
            "--size",
            "150",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["participants"] == 150
    assert len(_read(out / "roster.csv")) == 150
    assert (out / "truth.ndjson").read_text().count("\n") == 150
