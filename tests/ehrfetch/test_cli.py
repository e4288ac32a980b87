"""The ``ehrfetch`` command, end to end through its arguments and exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from support import StoreUnderTest, roster_row, write_consents, write_roster
from typer.testing import CliRunner, Result

from ehrfetch.cli import app


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


def test_demo_imports_samples_and_selects(tmp_path: Path) -> None:
    result = run(["demo", "--workdir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert "participants: 40 rows read, 38 new" in result.stdout
    assert "eligible now" in result.stdout
    assert "participants selected" in result.stdout
    # Running it again starts from a fresh store, not on top of the last one.
    again = run(["demo", "--workdir", str(tmp_path / "demo")])
    assert "38 new" in again.stdout
