"""The ``ehrfetch`` command, end to end through its arguments and exit codes."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ehrfetch.cli import app
from ehrfetch.cli_runs import TEMPORARY_SERVER_STARTUP_S, patient_temporary_server
from support import (
    StoreUnderTest,
    require_ccda_examples,
    roster_row,
    write_consents,
    write_roster,
)

PROJECT = Path(__file__).resolve().parents[2]


def run(args: list[str], url: str | None = None, **env: str) -> Result:
    environment = {"COLUMNS": "200", **env}
    if url is not None:
        environment["EHRFETCH__STORE__URL"] = url
    return CliRunner().invoke(app, args, env=environment)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rows = [
        roster_row("R1"),
        roster_row("R2", birth_date="2031-02-02", given="Zebediah"),
        roster_row("R3", phone="(555) 12"),
        roster_row("R4"),
    ]
    return {
        "roster": write_roster(tmp_path / "roster.csv", rows),
        "consents": write_consents(
            tmp_path / "consents.csv",
            [
                ("R1", "ehr", "active", "2024-01-01", ""),
                ("R4", "ehr", "withdrawn", "2024-01-01", "2024-05-05"),
                ("R7", "ehr", "active", "2024-01-01", ""),
            ],
        ),
    }


def test_import_reports_bad_rows_and_exits_1(
    empty_db: StoreUnderTest, files: dict[str, Path], tmp_path: Path
) -> None:
    report = tmp_path / "problems.csv"
    result = run(
        ["participants", "import", str(files["roster"]), "--report", str(report)], empty_db.url
    )
    assert result.exit_code == 1, result.output
    assert "4 rows read, 2 new, 0 updated, 0 unchanged, 2 skipped" in result.stdout
    assert "line 3, birth_date [R2]: birth date is in the future" in result.stderr
    assert "line 4, phone [R3]: not a valid phone number" in result.stderr
    # Privacy: no value of a bad row reaches the terminal.
    for value in ("2031-02-02", "Zebediah", "(555) 12", "Castellano"):
        assert value not in result.output
    with report.open() as fh:
        assert list(csv.reader(fh)) == [
            ["line", "column", "research_id", "reason"],
            ["3", "birth_date", "R2", "birth date is in the future"],
            ["4", "phone", "R3", "not a valid phone number"],
        ]


def test_clean_import_exits_0_and_first_use_creates_the_schema(
    empty_db: StoreUnderTest, tmp_path: Path
) -> None:
    roster = write_roster(tmp_path / "r.csv", [roster_row("R1")])
    result = run(["participants", "import", str(roster)], empty_db.url)
    assert result.exit_code == 0, result.output
    current = run(["db", "current"], empty_db.url)
    assert "(up to date)" in current.stdout


def test_consents_import_and_cohort_counts(
    empty_db: StoreUnderTest, files: dict[str, Path]
) -> None:
    run(["participants", "import", str(files["roster"])], empty_db.url)
    result = run(["consents", "import", str(files["consents"])], empty_db.url)
    assert result.exit_code == 1
    assert "line 4, research_id [R7]: unknown research id" in result.stderr
    counts = run(["cohort", "--json"], empty_db.url)
    assert counts.exit_code == 0, counts.output
    assert json.loads(counts.stdout) == {
        "participants": 2,
        "consented": 1,
        "withdrawn": 1,
        "not_consented": 0,
        "with_ehr": 0,
        "in_flight": 0,
        "waiting": 0,
        "eligible": 1,
    }
    table = run(["cohort"], empty_db.url)
    assert "eligible now" in table.stdout


def test_cohort_select_persists_a_run(empty_db: StoreUnderTest, tmp_path: Path) -> None:
    ids = [f"R{i}" for i in range(5)]
    run(
        [
            "participants",
            "import",
            str(write_roster(tmp_path / "r.csv", [roster_row(i) for i in ids])),
        ],
        empty_db.url,
    )
    consents = write_consents(
        tmp_path / "c.csv", [(i, "ehr", "active", "2024-01-01", "") for i in ids]
    )
    run(["consents", "import", str(consents)], empty_db.url)
    result = run(["cohort", "select", "--batch-size", "2", "--json"], empty_db.url)
    assert result.exit_code == 0, result.output
    selection = json.loads(result.stdout)
    assert selection["participants"] == 5
    assert [b["size"] for b in selection["batches"]] == [2, 2, 1]
    again = run(["cohort", "select"], empty_db.url)
    assert "nobody is eligible now" in again.stdout


def test_config_option_points_at_another_file(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere.db"
    config = tmp_path / "my.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{db}"\n')
    result = run(["--config", str(config), "db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert db.exists()
    assert str(db) in result.stdout


def test_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    missing = run(["participants", "import", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2
    assert "nope.csv: cannot open" in missing.stderr
    assert "Traceback" not in missing.output
    bad_setting = run(["cohort"], EHRFETCH__COHORT__BATCH_SIZE="0")
    assert bad_setting.exit_code == 2
    assert "cohort.batch_size" in bad_setting.stderr


def test_db_downgrade_needs_confirmation(empty_db: StoreUnderTest) -> None:
    run(["db", "upgrade"], empty_db.url)
    refused = CliRunner().invoke(
        app, ["db", "downgrade", "base"], env={"EHRFETCH__STORE__URL": empty_db.url}, input="n\n"
    )
    assert refused.exit_code == 1
    assert "(up to date)" in run(["db", "current"], empty_db.url).stdout
    done = run(["db", "downgrade", "base", "--yes"], empty_db.url)
    assert done.exit_code == 0, done.output
    assert "revision none" in run(["db", "current"], empty_db.url).stdout


def test_demo_runs_the_whole_acquisition(tmp_path: Path) -> None:
    # A copy of the project's mock network settings, so the demo's keys land in tmp_path.
    (tmp_path / "config").mkdir()
    shutil.copy(PROJECT / "config" / "mock_network.toml", tmp_path / "config")
    result = run(["demo", "--workdir", "demo", "--participants", "30", "--batch-size", "10"])
    assert result.exit_code == 0, result.output
    assert "participants: 30 rows read, 30 new" in result.stdout
    assert "retrieved" in result.stdout
    assert "documents stored" in result.stdout
    assert (tmp_path / ".work" / "keys" / "ehrfetch.key.pem").exists()
    # The mock network was stopped: nothing listens on the port any more.
    log = (tmp_path / "demo" / "mock-network.log").read_text()
    assert "Uvicorn running" in log or "Application startup complete" in log


def test_match_check_decides_a_deck_offline(tmp_path: Path) -> None:
    person = {
        "resourceType": "Patient",
        "id": "R1",
        "name": [{"family": "Okafor", "given": ["Grace"]}],
        "gender": "female",
        "birthDate": "1984-11-02",
        "address": [
            {"line": ["4 Cove St"], "city": "Boston", "state": "MA", "postalCode": "02110"}
        ],
        "telecom": [{"system": "phone", "value": "+16175550177"}],
    }
    twin = {**person, "id": "n2", "name": [{"family": "Okafor", "given": ["Ruth"]}]}
    same = {**person, "id": "n1"}
    deck = tmp_path / "deck.ndjson"
    lines = [
        {
            "participant": person,
            "candidates": [{"resource": same, "score": 0.9, "grade": "certain"}],
        },
        {
            "participant": person,
            "candidates": [{"resource": twin, "score": 0.8, "grade": "probable"}],
        },
    ]
    deck.write_text("\n".join(json.dumps(line) for line in lines) + "\n{not json\n")
    result = run(["match-check", str(deck)])
    assert result.exit_code == 1  # one unreadable line
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["id"], d["decision"], d["candidate"]) for d in decisions] == [
        ("R1", "accept", 0),
        ("R1", "reject", None),
    ]
    assert any("twin" in reason for reason in decisions[1]["reasons"])
    assert '"line":3' in result.stderr.replace(" ", "")


def test_bench_import_reports_every_figure(tmp_path: Path) -> None:
    result = run(["bench", "import", "--rows", "300", "--workdir", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["rows"] == 300
    for key in ("first_import_s", "first_rows_per_s", "reimport_s", "peak_rss_mb", "store"):
        assert figures[key], key


def test_bench_match_scores_a_small_roster(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    shutil.copy(PROJECT / "config" / "mock_network.toml", tmp_path / "config")
    result = run(["bench", "match", "--participants", "40", "--workdir", "m", "--json"])
    assert result.exit_code == 0, result.output
    score = json.loads(result.stdout)["score"]
    assert score["participants"] > 0
    assert score["true_accepts"] > 0
    assert score["false_accepts"] == 0
    assert 0 < score["recall"] <= 1


def test_bench_ccda_prints_the_coverage_table() -> None:
    result = run(["bench", "ccda", str(require_ccda_examples())])
    assert result.exit_code == 0, result.output
    assert "| **total** |" in result.stdout
    assert "crashes: 0" in result.stdout


def test_bench_export_reports_flat_memory_fields(tmp_path: Path) -> None:
    result = run(["bench", "export", "--resources", "500", "--workdir", "x", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert (figures["resources"], figures["invalid"]) == (500, 0)
    assert figures["lines"] > 500  # Patients and Provenance too
    assert "rss_growth_during_export_mb" in figures


def test_runs_give_the_temporary_prefect_server_time_to_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prefect's 20 s were too short on a busy machine: the run failed before it began.
    name = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    monkeypatch.delenv(name, raising=False)
    patient_temporary_server()
    assert os.environ[name] == str(TEMPORARY_SERVER_STARTUP_S) and TEMPORARY_SERVER_STARTUP_S > 20
    monkeypatch.setenv(name, "7")  # the operator's own choice stays
    patient_temporary_server()
    assert os.environ[name] == "7"
