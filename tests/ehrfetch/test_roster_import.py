"""Roster import: every bad-row case, the good-row normalizations, upsert and history."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from ehrfetch.cohort.importing import import_roster
from ehrfetch.errors import InputFileError
from ehrfetch.store.tables import Participant, ParticipantAddress, ParticipantName, Sex
from support import CTX, ROSTER_COLUMNS, StoreUnderTest, roster_row, write_roster

# (case, overrides of the middle row, column reported, words of the reason)
BAD_ROWS = [
    ("missing research id", {"research_id": ""}, "research_id", "missing"),
    ("malformed research id", {"research_id": "R 1/x"}, "research_id", "1-64 characters"),
    ("impossible birth date", {"birth_date": "1990-02-30"}, "birth_date", "real calendar"),
    ("future birth date", {"birth_date": "2031-01-15"}, "birth_date", "future"),
    ("birth date format", {"birth_date": "07/04/1961"}, "birth_date", "YYYY-MM-DD"),
    ("implausibly old", {"birth_date": "1851-03-03"}, "birth_date", "before 1880"),
    ("missing birth date", {"birth_date": ""}, "birth_date", "missing"),
    ("unknown sex code", {"sex": "X"}, "sex", "unknown sex code"),
    ("missing given name", {"given": " "}, "given", "missing"),
    ("malformed postal code", {"postal_code": "0410"}, "postal_code", "ZIP"),
    ("malformed phone", {"phone": "555-12"}, "phone", "phone number"),
    ("invalid phone", {"phone": "(800) 123-4567"}, "phone", "not a valid phone"),
    ("malformed email", {"email": "rc at example"}, "email", "email"),
    ("malformed ssn", {"ssn_last4": "48a1"}, "ssn_last4", "four digits"),
    ("unknown state", {"state": "XX"}, "state", "USPS"),
    ("previous name without surname", {"previous_names": "^Mary"}, "previous_names", "entry 1"),
    (
        "previous address bad zip",
        {"previous_addresses": "1 Elm St^^Salem^MA^019"},
        "previous_addresses",
        "ZIP",
    ),
    ("ehr flag", {"ehr_on_file": "perhaps"}, "ehr_on_file", "true or false"),
]


def participants(db: StoreUnderTest) -> dict[str, Participant]:
    with db.sessions() as session:
        return {p.research_id: p for p in session.scalars(select(Participant))}


@pytest.mark.parametrize(
    ("overrides", "column", "reason"),
    [pytest.param(o, c, r, id=case) for case, o, c, r in BAD_ROWS],
)
def test_bad_row_is_reported_and_skipped_the_rest_imported(
    db: StoreUnderTest, tmp_path: Path, overrides: dict[str, str], column: str, reason: str
) -> None:
    path = write_roster(
        tmp_path / "roster.csv",
        [roster_row("R1"), roster_row("R2", **overrides), roster_row("R3")],
    )
    report = import_roster(path, db.sessions, CTX)

    assert (report.rows, report.inserted, report.skipped) == (3, 2, 1)
    assert not report.ok
    [problem] = report.problems
    assert problem.line == 3
    assert problem.column == column
    assert reason in problem.reason
    # The value itself is never part of the message: it is a demographic.
    for value in overrides.values():
        if value.strip() and column != "research_id":
            assert value not in str(problem)
    assert set(participants(db)) == {"R1", "R3"}


def test_all_problems_of_a_row_are_reported_together(db: StoreUnderTest, tmp_path: Path) -> None:
    path = write_roster(
        tmp_path / "r.csv", [roster_row("R1", sex="?", phone="1", birth_date="2099-01-01")]
    )
    report = import_roster(path, db.sessions, CTX)
    assert report.skipped == 1
    assert {p.column for p in report.problems} == {"sex", "phone", "birth_date"}
    assert all(p.research_id == "R1" for p in report.problems)


def test_duplicate_research_id_skips_every_copy(db: StoreUnderTest, tmp_path: Path) -> None:
    path = write_roster(
        tmp_path / "r.csv",
        [roster_row("R1"), roster_row("R2"), roster_row("R1", given="Bob"), roster_row("R3")],
    )
    report = import_roster(path, db.sessions, CTX)
    assert (report.inserted, report.skipped) == (2, 2)
    assert sorted((p.line, p.column) for p in report.problems) == [
        (2, "research_id"),
        (4, "research_id"),
    ]
    assert "also on line(s) 4" in report.problems[0].reason
    assert set(participants(db)) == {"R2", "R3"}


def raw_roster(tmp_path: Path, middle: bytes) -> Path:
    header = ",".join(ROSTER_COLUMNS).encode()
    good = write_roster(tmp_path / "good.csv", [roster_row("R1"), roster_row("R3")])
    lines = good.read_bytes().splitlines(keepends=True)
    path = tmp_path / "raw.csv"
    path.write_bytes(header + b"\r\n" + lines[1] + middle + b"\r\n" + lines[2])
    return path


def test_wrong_column_count(db: StoreUnderTest, tmp_path: Path) -> None:
    path = raw_roster(tmp_path, b"R2,Ann,,Lee,,1970-01-01,female")
    report = import_roster(path, db.sessions, CTX)
    assert (report.inserted, report.skipped) == (2, 1)
    [problem] = report.problems
    assert (problem.line, problem.research_id) == (3, "R2")
    assert "has 7 fields, the header has 18" in problem.reason


def test_invalid_utf8_names_the_column(db: StoreUnderTest, tmp_path: Path) -> None:
    fields = [v.encode() for v in roster_row("R2").values()]
    fields[3] = b"Mu\xffller"  # family, in Latin-1 instead of UTF-8
    report = import_roster(raw_roster(tmp_path, b",".join(fields)), db.sessions, CTX)
    assert (report.inserted, report.skipped) == (2, 1)
    [problem] = report.problems
    assert (problem.line, problem.column) == (3, "family")
    assert "not valid UTF-8" in problem.reason


def test_line_numbers_count_physical_lines_of_multiline_records(
    db: StoreUnderTest, tmp_path: Path
) -> None:
    path = write_roster(
        tmp_path / "r.csv",
        [
            roster_row("R1", address_line2="Building 4\nSuite 2"),
            roster_row("R2", sex="?"),
        ],
    )
    report = import_roster(path, db.sessions, CTX)
    assert [p.line for p in report.problems] == [4]


def test_missing_required_column_is_a_file_error(db: StoreUnderTest, tmp_path: Path) -> None:
    columns = [c for c in ROSTER_COLUMNS if c != "birth_date"]
    rows = [{k: v for k, v in roster_row("R1").items() if k != "birth_date"}]
    path = write_roster(tmp_path / "r.csv", rows, columns)
    with pytest.raises(InputFileError, match=r"r\.csv, line 1: missing required column"):
        import_roster(path, db.sessions, CTX)


def test_unknown_columns_warn_and_header_is_case_insensitive(
    db: StoreUnderTest, tmp_path: Path
) -> None:
    columns = [c.upper() for c in ROSTER_COLUMNS] + ["FAVOURITE_COLOUR"]
    row = {k.upper(): v for k, v in roster_row("R1").items()} | {"FAVOURITE_COLOUR": "blue"}
    report = import_roster(write_roster(tmp_path / "r.csv", [row], columns), db.sessions, CTX)
    assert report.inserted == 1
    assert report.ok
    assert any("favourite_colour" in w for w in report.warnings)


def test_byte_order_mark_and_blank_lines_are_accepted(db: StoreUnderTest, tmp_path: Path) -> None:
    path = write_roster(tmp_path / "r.csv", [roster_row("R1"), roster_row("R2")])
    content = path.read_bytes().replace(b"\r\n", b"\r\n\r\n", 1)
    path.write_bytes(b"\xef\xbb\xbf" + content)
    report = import_roster(path, db.sessions, CTX)
    assert (report.inserted, report.skipped) == (2, 0)


def test_values_are_normalized(db: StoreUnderTest, tmp_path: Path) -> None:
    path = write_roster(
        tmp_path / "r.csv",
        [
            roster_row(
                "R1",
                sex="F",
                suffix="jr.",
                phone="207.555.0134",
                postal_code="041011234",
                state="me",
                email="Ann@EXAMPLE.org",
                given="  Mary   Ann ",
                previous_names="Smith|Jones^Mary^^",
                previous_addresses="1 Elm St^^Salem^MA^01970",
                ehr_on_file="yes",
            )
        ],
    )
    assert import_roster(path, db.sessions, CTX).ok
    with db.sessions() as session:
        p = session.scalars(select(Participant)).one()
        assert p.sex is Sex.FEMALE
        assert p.phone == "+12075550134"
        assert p.email == "Ann@example.org"
        assert p.ehr_on_file is True
        names = [(n.current, n.given, n.family, n.suffix) for n in p.names]
        assert names == [
            (True, "Mary Ann", "Castellano", "Jr"),
            (False, None, "Smith", None),
            (False, "Mary", "Jones", None),
        ]
        addresses = [(a.current, a.city, a.state, a.postal_code) for a in p.addresses]
        assert addresses == [
            (True, "Portland", "ME", "04101-1234"),
            (False, "Salem", "MA", "01970"),
        ]


def test_reimport_is_idempotent(db: StoreUnderTest, tmp_path: Path) -> None:
    path = write_roster(tmp_path / "r.csv", [roster_row("R1"), roster_row("R2")])
    first = import_roster(path, db.sessions, CTX)
    before = snapshot(db)
    second = import_roster(path, db.sessions, CTX)
    assert (first.inserted, second.inserted, second.updated, second.unchanged) == (2, 0, 0, 2)
    assert snapshot(db) == before


def test_changed_row_updates_and_keeps_history(db: StoreUnderTest, tmp_path: Path) -> None:
    import_roster(write_roster(tmp_path / "a.csv", [roster_row("R1")]), db.sessions, CTX)
    moved = roster_row(
        "R1", family="Castellano-Reyes", address_line1="9 Pine St", city="Bangor",
        postal_code="04401", phone="",
    )  # fmt: skip
    report = import_roster(write_roster(tmp_path / "b.csv", [moved]), db.sessions, CTX)
    assert (report.updated, report.inserted) == (1, 0)
    with db.sessions() as session:
        p = session.scalars(select(Participant)).one()
        assert p.phone is None
        assert [(n.current, n.family) for n in p.names] == [
            (True, "Castellano-Reyes"),
            (False, "Castellano"),
        ]
        assert [(a.current, a.city) for a in p.addresses] == [(True, "Bangor"), (False, "Portland")]
    # Importing the first file again swaps them back without duplicating history.
    import_roster(write_roster(tmp_path / "c.csv", [roster_row("R1")]), db.sessions, CTX)
    with db.sessions() as session:
        p = session.scalars(select(Participant)).one()
        assert [(n.current, n.family) for n in p.names] == [
            (True, "Castellano"),
            (False, "Castellano-Reyes"),
        ]


def snapshot(db: StoreUnderTest) -> tuple[object, ...]:
    with db.sessions() as session:
        return (
            sorted(
                (p.research_id, p.birth_date, p.sex, p.phone, p.record_hash, p.updated_at)
                for p in session.scalars(select(Participant))
            ),
            sorted(
                (n.participant_id, n.position, n.family)
                for n in session.scalars(select(ParticipantName))
            ),
            sorted(
                (a.participant_id, a.position, a.line1)
                for a in session.scalars(select(ParticipantAddress))
            ),
        )


def test_large_file_is_written_in_several_chunks(
    db: StoreUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ehrfetch.cohort.importing.CHUNK", 7)
    rows = [roster_row(f"R{i}") for i in range(50)]
    rows[23]["sex"] = "?"
    report = import_roster(write_roster(tmp_path / "r.csv", rows), db.sessions, CTX)
    assert (report.inserted, report.skipped) == (49, 1)
    assert len(participants(db)) == 49
