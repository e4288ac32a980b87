"""The review queue: list, show, accept, reject — and an accept is final."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ehrfetch.cli import app
from ehrfetch.cohort.importing import import_roster
from ehrfetch.store.links import LinkRow, OrganizationRow, save_links, upsert_organizations
from ehrfetch.store.participants import participant_ids
from ehrfetch.store.tables import LinkDecision
from support import CTX, NOW, StoreUnderTest, roster_row, write_roster


def run(db: StoreUnderTest, *args: str) -> Result:
    return CliRunner().invoke(
        app, list(args), env={"EHRFETCH__STORE__URL": db.url, "COLUMNS": "200"}
    )


@pytest.fixture
def queue(db: StoreUnderTest, tmp_path: Path) -> dict[str, int]:
    import_roster(write_roster(tmp_path / "r.csv", [roster_row("R1")]), db.sessions, CTX)
    with db.sessions.begin() as session:
        upsert_organizations(session, [OrganizationRow("org1", "Org", "http://o/fhir", "o")], NOW)
        pid = participant_ids(session, ["R1"])["R1"]
        links = save_links(
            session,
            pid,
            [
                LinkRow(
                    "org1", "p1", "probable", 0.8, 20.0, LinkDecision.REVIEW, ("given:nickname",)
                ),
                LinkRow(
                    "org1", "p2", "possible", 0.6, 18.0, LinkDecision.REVIEW, ("dob:transposed",)
                ),
            ],
            NOW,
        )
        return {key[1]: link.id for key, link in links.items()}


def test_list_and_show_carry_research_ids_and_reasons_only(
    db: StoreUnderTest, queue: dict[str, int]
) -> None:
    listed = run(db, "review", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["link"], r["research_id"], r["reasons"]) for r in rows] == [
        (queue["p1"], "R1", ["given:nickname"]),
        (queue["p2"], "R1", ["dob:transposed"]),
    ]
    shown = run(db, "review", "show", str(queue["p1"]))
    assert "given:nickname" in shown.stdout
    assert "Castellano" not in shown.stdout  # the participant's name never shows


def test_accept_is_final_and_one_patient_per_organization(
    db: StoreUnderTest, queue: dict[str, int]
) -> None:
    accepted = run(db, "review", "accept", str(queue["p1"]))
    assert accepted.exit_code == 0, accepted.output
    assert "retrieved on the next run" in accepted.stdout
    # A second patient at the same organization cannot also be this participant.
    second = run(db, "review", "accept", str(queue["p2"]))
    assert second.exit_code == 2
    assert "reject it first" in second.stderr
    assert run(db, "review", "reject", str(queue["p2"])).exit_code == 0
    assert json.loads(run(db, "review", "list", "--json").stdout) == []
    # A later run that scores p1 as a reject does not overturn the operator.
    with db.sessions.begin() as session:
        pid = participant_ids(session, ["R1"])["R1"]
        links = save_links(
            session,
            pid,
            [LinkRow("org1", "p1", "possible", 0.5, 2.0, LinkDecision.REJECT, ("dob:conflict",))],
            NOW,
        )
        assert links[("org1", "p1")].decision is LinkDecision.ACCEPT


def test_unknown_link_is_a_clear_error(db: StoreUnderTest, queue: dict[str, int]) -> None:
    missing = run(db, "review", "accept", "999999")
    assert missing.exit_code == 2
    assert "link 999999 does not exist" in missing.stderr
