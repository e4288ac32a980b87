"""Normal forms: names, nicknames, typos, addresses, phones, emails, SSN."""

from __future__ import annotations

import pytest

from ehrfetch.matching import normalize as n


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("José  García-Núñez", "jose garcia nunez"),
        ("O'Brien", "obrien"),
        ("ZOË", "zoe"),
        ("St. John", "st john"),
        ("  ", ""),
    ],
)
def test_fold(raw: str, folded: str) -> None:
    assert n.fold(raw) == folded


def test_compound_surname_spellings_join_to_one() -> None:
    assert n.joined("Garcia-Lopez") == n.joined("Garcia Lopez") == n.joined("GarciaLopez")
    assert n.joined("de la Cruz") == n.joined("DeLaCruz") == "delacruz"
    assert n.joined("St. John") == n.joined("Saint John")


def test_surname_parts_leave_particles_out() -> None:
    assert n.surname_parts("de la Cruz-Ortiz") == {"cruz", "ortiz"}
    assert n.surname_parts("van der Berg") == {"berg"}


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("bob", "robert", True),
        ("robert", "bob", True),
        ("bob", "rob", True),  # two nicknames of one name
        ("peggy", "margaret", True),
        ("jim", "jimmy", True),
        ("robert", "william", False),  # the table links both to Bill; still not one name
        ("john", "james", False),
        ("bob", "bob", False),  # equal is not a nickname
        ("", "robert", False),
    ],
)
def test_are_nicknames(a: str, b: str, expected: bool) -> None:
    assert n.are_nicknames(a, b) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("jonh", "john", True),  # transposition
        ("jon", "john", True),  # dropped letter
        ("jim", "jm", True),  # two-letter name, one letter dropped
        ("christopher", "christohper", True),
        ("joyyce", "jocye", True),  # two slips in a longer name
        ("harry", "larry", False),  # first letter differs
        ("al", "ed", False),
        ("mary", "mark", True),
        ("ann", "anne", True),
        ("kim", "tim", False),
    ],
)
def test_is_typo(a: str, b: str, expected: bool) -> None:
    assert n.is_typo(a, b) is expected


def test_osa_distance() -> None:
    assert n.osa_distance("kitten", "sitting") == 3
    assert n.osa_distance("abcd", "abdc") == 1  # adjacent transposition is one edit
    assert n.osa_distance("same", "same") == 0
    assert n.osa_distance("a", "abcdefgh", limit=3) == 4  # capped


def test_jaro_winkler_reference_values() -> None:
    # The textbook examples (Winkler 1990).
    assert n.jaro_winkler("martha", "marhta") == pytest.approx(0.961, abs=1e-3)
    assert n.jaro_winkler("dwayne", "duane") == pytest.approx(0.84, abs=1e-3)
    assert n.jaro_winkler("dixon", "dicksonx") == pytest.approx(0.813, abs=1e-3)
    assert n.jaro_winkler("abc", "xyz") == 0.0
    assert n.jaro_winkler("", "abc") == 0.0


def test_generational_suffix() -> None:
    assert n.generational_suffix("Jr.") == "JR"
    assert n.generational_suffix("junior") == "JR"
    assert n.generational_suffix("SR") == "SR"
    assert n.generational_suffix("3rd") == "III"
    assert n.generational_suffix("MD") is None
    assert n.generational_suffix(None) is None


def test_address_suffixes_units_and_zip_are_normalized() -> None:
    a = n.normalize_address("12 Harbor View Road, Apt. 4B", None, "Portland", "ME", "04101-1234")
    b = n.normalize_address("12 Harbor View Rd", "# 4b", "PORTLAND", "me", "04101")
    c = n.normalize_address("12 Harbor View Rd", "Unit 4B", "Portland", "ME", "04101")
    assert a == b == c
    assert a.street == "12 hbr vw rd" and a.unit == "4b" and a.zip5 == "04101"


def test_address_directionals_and_missing_suffix_share_a_core() -> None:
    a = n.normalize_address("100 North Park Avenue", None, None, None, None)
    b = n.normalize_address("100 N Park Ave", None, None, None, None)
    c = n.normalize_address("100 Park", None, None, None, None)
    assert a.street == b.street == "100 n park ave"
    assert a.street_core == c.street_core == "100 park"


def test_a_street_named_like_a_designator_has_no_unit() -> None:
    assert n.normalize_address("12 Pier Ave", None, None, None, None).unit == ""
    assert n.normalize_address("12 Lot Rd", None, None, None, None).unit == ""


def test_phone_to_e164() -> None:
    assert n.normalize_phone("(207) 555-0134") == "+12075550134"
    assert n.normalize_phone("207.555.0134") == "+12075550134"
    assert n.normalize_phone("+1 207 555 0134") == "+12075550134"
    assert n.normalize_phone("12") is None
    assert n.normalize_phone("not a number") is None


def test_email_and_ssn() -> None:
    assert n.normalize_email(" R.Castellano@Example.ORG ") == "r.castellano@example.org"
    assert n.normalize_email("no-at-sign") is None
    assert n.normalize_email("a@localhost") is None
    assert n.ssn_last4("123-45-6789") == "6789"
    assert n.ssn_last4("6789") == "6789"
    assert n.ssn_last4("789") is None
    assert n.ssn_last4("123-45-0000") is None
