"""Each comparator: the level it answers and the reason token it spells."""

from __future__ import annotations

import datetime as dt

import pytest

from ehrfetch.cohort.records import PersonName, PostalAddress
from ehrfetch.matching import compare as c
from ehrfetch.matching.compare import Comparison, Field, Level
from ehrfetch.matching.person import MatchPerson
from ehrfetch.store.tables import Sex


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("Robert", "ROBERT", Level.EXACT),
        ("José", "Jose", Level.EXACT),
        ("Mary Ann", "Maryann", Level.EXACT),
        ("Robert", "Bob", Level.NICKNAME),
        ("Margaret", "Peggy", Level.NICKNAME),
        ("Robert", "Robrt", Level.TYPO),
        ("Terence", "Terrry", Level.TYPO),  # a slip in the nickname Terry
        ("Mary", "Mary Ann", Level.PARTIAL),
        ("J", "John", Level.INITIAL),
        ("J", "Mary", Level.CONFLICT),
        ("Robert", "William", Level.CONFLICT),
        ("Mary Beth", "Mary Ann", Level.CONFLICT),
        (None, "John", Level.MISSING),
        ("", "John", Level.MISSING),
    ],
)
def test_compare_given(a: str | None, b: str | None, level: Level) -> None:
    assert c.compare_given(a, b) is level
    assert c.compare_given(b, a) is level  # symmetric


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("Garcia-Lopez", "Garcia Lopez", Level.EXACT),
        ("de la Cruz", "DeLaCruz", Level.EXACT),
        ("O'Brien", "OBrien", Level.EXACT),
        ("Garcia-Lopez", "Lopez", Level.COMPOUND),
        ("de la Cruz", "Cruz", Level.COMPOUND),
        ("Castellano", "Castelano", Level.TYPO),
        ("Garcia-Lopez", "Garcia-Lopes", Level.TYPO),
        ("Smith", "Jones", Level.CONFLICT),
        ("Smith", None, Level.MISSING),
    ],
)
def test_compare_family(a: str | None, b: str | None, level: Level) -> None:
    assert c.compare_family(a, b) is level
    assert c.compare_family(b, a) is level


def person(*names: PersonName, **fields: object) -> MatchPerson:
    return MatchPerson(names=names, **fields)  # type: ignore[arg-type]


def test_previous_name_on_either_side() -> None:
    participant = person(PersonName("Smith", "Ann"), PersonName("Jones", "Ann"))
    candidate = person(PersonName("Jones", "Ann"))
    given, family = c.compare_names(participant, candidate)
    assert (given.level, family.level) == (Level.EXACT, Level.PREVIOUS_NAME)
    assert family.reason == "family:previous_name"
    given, family = c.compare_names(candidate, participant)
    assert family.level is Level.PREVIOUS_NAME


def test_first_last_swap() -> None:
    given, family = c.compare_names(
        person(PersonName("Castellano", "Robert")), person(PersonName("Robert", "Castellano"))
    )
    assert (given.reason, family.reason) == ("given:swapped", "family:swapped")


def test_goes_by_middle_name() -> None:
    given, _ = c.compare_names(
        person(PersonName("Smith", "James", "Robert")), person(PersonName("Smith", "Robert"))
    )
    assert given.level is Level.MIDDLE_NAME


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("Lee", "lee", Level.EXACT),
        ("L", "Lee", Level.INITIAL),
        ("L.", "Lee", Level.INITIAL),
        ("K", "Lee", Level.CONFLICT),
        ("Lee", "Ann", Level.CONFLICT),
        (None, "Lee", Level.MISSING),
    ],
)
def test_compare_middle(a: str | None, b: str | None, level: Level) -> None:
    assert c.compare_middle(a, b) is level


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        ("JR", "JR", Level.AGREE),
        ("JR", "SR", Level.CONFLICT),
        ("II", "III", Level.CONFLICT),
        ("JR", None, Level.ONE_SIDED),
        (None, None, Level.MISSING),
    ],
)
def test_compare_suffix(a: str | None, b: str | None, level: Level) -> None:
    assert c.compare_suffix(a, b) is level


@pytest.mark.parametrize(
    ("a", "b", "level"),
    [
        (dt.date(1990, 3, 7), dt.date(1990, 3, 7), Level.EXACT),
        (dt.date(1990, 3, 7), dt.date(1990, 7, 3), Level.TRANSPOSED),
        (dt.date(1990, 3, 7), dt.date(1990, 3, 8), Level.NEAR),
        (dt.date(1990, 3, 7), dt.date(1980, 3, 7), Level.NEAR),  # one digit of the year
        (dt.date(1990, 3, 7), dt.date(1991, 3, 7), Level.NEAR),
        (dt.date(1990, 3, 7), dt.date(1990, 3, 17), Level.NEAR),
        (dt.date(1990, 3, 7), dt.date(1990, 3, 27), Level.NEAR),  # one digit
        (dt.date(1990, 3, 7), dt.date(1990, 3, 25), Level.CONFLICT),
        (dt.date(1990, 3, 7), dt.date(1965, 11, 21), Level.CONFLICT),
        (None, dt.date(1990, 3, 7), Level.MISSING),
    ],
)
def test_compare_birth_date(a: dt.date | None, b: dt.date | None, level: Level) -> None:
    assert c.compare_birth_date(a, b) is level


def test_compare_sex() -> None:
    assert c.compare_sex(Sex.MALE, Sex.MALE) is Level.AGREE
    assert c.compare_sex(Sex.MALE, Sex.FEMALE) is Level.CONFLICT
    assert c.compare_sex(Sex.OTHER, Sex.FEMALE) is Level.MISSING
    assert c.compare_sex(None, Sex.FEMALE) is Level.MISSING


HOME = PostalAddress("12 Harbor View Road", "Apt 4", "Portland", "ME", "04101")


@pytest.mark.parametrize(
    ("other", "level"),
    [
        (PostalAddress("12 Harbor View Rd", "#4", "Portland", "ME", "04101-2222"), Level.CURRENT),
        (PostalAddress("12 Harbor View Rd", None, "Portland", "ME", None), Level.CURRENT),
        (PostalAddress("12 Harbor View Rd", "Apt 9", "Portland", "ME", "04101"), Level.STREET),
        (PostalAddress("12 Harbor View Rd", None, "Bangor", "ME", "04401"), Level.STREET),
        (PostalAddress("7 Elm St", None, "Portland", "ME", "04102"), Level.LOCALITY),
        (PostalAddress("7 Elm St", None, "Augusta", "ME", "04101"), Level.LOCALITY),
        (PostalAddress("7 Elm St", None, "Austin", "TX", "78701"), Level.CONFLICT),
        (PostalAddress(), Level.MISSING),
    ],
)
def test_compare_address(other: PostalAddress, level: Level) -> None:
    assert c.compare_address(HOME, other) is level


def test_address_history() -> None:
    old = PostalAddress("7 Elm St", None, "Austin", "TX", "78701")
    assert c.compare_addresses([HOME], [HOME]) is Level.CURRENT
    assert c.compare_addresses([HOME, old], [old]) is Level.HISTORY
    assert c.compare_addresses([old], [HOME, old]) is Level.HISTORY
    assert c.compare_addresses([], [HOME]) is Level.MISSING


def test_phone_email_ssn() -> None:
    assert c.compare_values(["+12075550134"], ["+12075550199", "+12075550134"]) is Level.AGREE
    assert c.compare_values(["+12075550134"], ["+12075550199"]) is Level.CONFLICT
    assert c.compare_values([], ["+12075550199"]) is Level.MISSING
    assert c.compare_ssn("4821", "4821") is Level.AGREE
    assert c.compare_ssn("4821", "1111") is Level.CONFLICT
    assert c.compare_ssn(None, "1111") is Level.MISSING


def test_compare_grade() -> None:
    assert c.compare_grade("certain") is Level.CERTAIN
    assert c.compare_grade("certainly-not") is Level.CERTAINLY_NOT
    assert c.compare_grade("CERTAINLY-NOT") is Level.CERTAINLY_NOT
    assert c.compare_grade("maybe") is Level.MISSING
    assert c.compare_grade(None) is Level.MISSING
    assert Comparison(Field.GRADE, Level.CERTAINLY_NOT).reason == "grade:certainly_not"


def test_compare_reports_every_field_in_order() -> None:
    a = person(PersonName("Smith", "Ann"))
    fields = [comparison.field for comparison in c.compare(a, a)]
    assert fields == [
        Field.GIVEN,
        Field.FAMILY,
        Field.MIDDLE,
        Field.SUFFIX,
        Field.BIRTH_DATE,
        Field.SEX,
        Field.ADDRESS,
        Field.PHONE,
        Field.EMAIL,
        Field.SSN,
    ]
