"""Field comparators: how well one field of a participant agrees with a candidate's.

Each comparator answers a :class:`Level` (exact, nickname, typo, transposed, history,
conflict, missing, ...); :class:`Comparison` pairs it with its field and spells the
reason token stored on the link, ``"<field>:<level>"`` (``given:nickname``,
``dob:transposed``, ``address:history``). Tokens come from these two enums only, so a
reason can never carry a name, a date, an address or a number.

Comparators see every name and address a person has had and report the best agreement;
what an agreement is worth is the policy's business (`policy.py`), not theirs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ehrfetch.cohort.records import PersonName, PostalAddress
from ehrfetch.matching.normalize import (
    are_nicknames,
    fold,
    is_known_name,
    is_typo,
    joined,
    name_forms,
    name_words,
    normal_address,
    osa_distance,
    surname_parts,
)
from ehrfetch.matching.person import MatchPerson
from ehrfetch.store.tables import Sex


class Field(StrEnum):
    GIVEN = "given"
    FAMILY = "family"
    MIDDLE = "middle"
    SUFFIX = "suffix"
    BIRTH_DATE = "dob"
    SEX = "sex"
    ADDRESS = "address"
    PHONE = "phone"
    EMAIL = "email"
    SSN = "ssn"
    GRADE = "grade"


class Level(StrEnum):
    EXACT = "exact"
    AGREE = "agree"
    NICKNAME = "nickname"
    TYPO = "typo"
    PARTIAL = "partial"  # "Mary" vs "Mary Ann"
    INITIAL = "initial"
    MIDDLE_NAME = "middle_name"  # the given name of one is the middle name of the other
    SWAPPED = "swapped"  # given and family written the other way round
    PREVIOUS_NAME = "previous_name"
    COMPOUND = "compound"  # one part of a compound surname
    TRANSPOSED = "transposed"  # day and month swapped
    NEAR = "near"  # one slip in one part of the date
    CURRENT = "current"  # same address, the current one of both
    HISTORY = "history"  # same address, an earlier one of either
    STREET = "street"  # same street line, other town or other unit
    LOCALITY = "locality"  # same ZIP5, or same city and state; other street
    ONE_SIDED = "one_sided"  # only one side has a generational suffix
    CONFLICT = "conflict"
    MISSING = "missing"
    # Network match grades, as reported.
    CERTAIN = "certain"
    PROBABLE = "probable"
    POSSIBLE = "possible"
    CERTAINLY_NOT = "certainly_not"


@dataclass(frozen=True, slots=True)
class Comparison:
    field: Field
    level: Level

    @property
    def reason(self) -> str:
        return f"{self.field.value}:{self.level.value}"


# Which agreement wins when a person has several names: stronger first. Missing loses to
# everything, conflict included: one name that disagrees is evidence, an absent one is not.
_GIVEN_RANK = (
    Level.EXACT,
    Level.NICKNAME,
    Level.TYPO,
    Level.PARTIAL,
    Level.INITIAL,
    Level.MIDDLE_NAME,
    Level.CONFLICT,
    Level.MISSING,
)
_FAMILY_RANK = (
    Level.EXACT,
    Level.PREVIOUS_NAME,
    Level.COMPOUND,
    Level.TYPO,
    Level.CONFLICT,
    Level.MISSING,
)
NAME_AGREES = frozenset({Level.EXACT, Level.NICKNAME, Level.TYPO, Level.SWAPPED})
FAMILY_AGREES = frozenset(
    {Level.EXACT, Level.PREVIOUS_NAME, Level.COMPOUND, Level.TYPO, Level.SWAPPED}
)
DATE_AGREES = frozenset({Level.EXACT, Level.TRANSPOSED, Level.NEAR})
ADDRESS_AGREES = frozenset({Level.CURRENT, Level.HISTORY})

# -- names --------------------------------------------------------------------------------


def compare_given(a: str | None, b: str | None) -> Level:
    """Two given names: exact, nickname (Bob/Robert), typo, partial (Mary/Mary Ann),
    initial (J/John), conflict, or missing."""
    words_a, words_b = name_words(a or ""), name_words(b or "")
    if not words_a or not words_b:
        return Level.MISSING
    joined_a, joined_b = "".join(words_a), "".join(words_b)
    if joined_a == joined_b:
        return Level.EXACT
    first_a, first_b = words_a[0], words_b[0]
    if len(first_a) == 1 or len(first_b) == 1:
        return Level.INITIAL if first_a[0] == first_b[0] else Level.CONFLICT
    if are_nicknames(first_a, first_b) or are_nicknames(joined_a, joined_b):
        return Level.NICKNAME
    if is_typo(joined_a, joined_b) or _nickname_slip(first_a, first_b):
        return Level.TYPO
    shorter, longer = sorted((words_a, words_b), key=len)
    if len(shorter) < len(longer) and longer[: len(shorter)] == shorter:
        return Level.PARTIAL
    return Level.CONFLICT


def _nickname_slip(a: str, b: str) -> bool:
    """A slip in a nickname: 'Terrry' for Terence (Terry), 'Stehp' for Stephen (Steph).
    Only a word the nickname table does not know can be a slip: 'Mary' is a name of its
    own, not a slip of 'Margy', and twins are often given names that are close."""
    return (not is_known_name(a) and any(is_typo(a, form) for form in name_forms(b))) or (
        not is_known_name(b) and any(is_typo(form, b) for form in name_forms(a))
    )


def compare_family(a: str | None, b: str | None) -> Level:
    """Two surnames: exact (spacing, hyphens, particles and accents aside), compound (one
    shares a part with the other: Garcia / Garcia-Lopez), typo, conflict, or missing."""
    joined_a, joined_b = joined(a or ""), joined(b or "")
    if not joined_a or not joined_b:
        return Level.MISSING
    if joined_a == joined_b:
        return Level.EXACT
    if is_typo(joined_a, joined_b):
        return Level.TYPO
    parts_a, parts_b = surname_parts(a or ""), surname_parts(b or "")
    if parts_a & parts_b:
        return Level.COMPOUND
    if len(parts_a) + len(parts_b) > 2 and any(
        len(x) >= 4 and is_typo(x, y) for x in parts_a for y in parts_b
    ):
        return Level.TYPO  # a slip in one part of a compound surname
    return Level.CONFLICT


def _best(levels: Sequence[Level], rank: Sequence[Level]) -> Level:
    return min(levels, key=rank.index, default=Level.MISSING)


def compare_names(a: MatchPerson, b: MatchPerson) -> tuple[Comparison, Comparison]:
    """Given and family names over every name each person has had, with first/last swaps
    and given-vs-middle names considered. Returns (given, family)."""
    given = _best([compare_given(x.given, y.given) for x in a.names for y in b.names], _GIVEN_RANK)
    family = _family_over_history(a.names, b.names)
    if given not in NAME_AGREES and a.name is not None and b.name is not None:
        if _swapped(a.name, b.name):
            return Comparison(Field.GIVEN, Level.SWAPPED), Comparison(Field.FAMILY, Level.SWAPPED)
        if given is Level.CONFLICT and _goes_by_middle(a.name, b.name):
            given = Level.MIDDLE_NAME
    return Comparison(Field.GIVEN, given), Comparison(Field.FAMILY, family)


def _family_over_history(a: Sequence[PersonName], b: Sequence[PersonName]) -> Level:
    levels: list[Level] = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            level = compare_family(x.family, y.family)
            if level in (Level.EXACT, Level.COMPOUND) and (i or j):
                # A maiden or earlier surname on either side: "previous_name" whether it
                # matches whole or by one part.
                level = Level.PREVIOUS_NAME if level is Level.EXACT else Level.COMPOUND
            levels.append(level)
    return _best(levels, _FAMILY_RANK)


_SWAP_AGREES = frozenset({Level.EXACT, Level.NICKNAME, Level.TYPO})


def _swapped(a: PersonName, b: PersonName) -> bool:
    return (
        compare_given(a.given, b.family) in _SWAP_AGREES
        and compare_given(a.family, b.given) in _SWAP_AGREES
    )


def _goes_by_middle(a: PersonName, b: PersonName) -> bool:
    return compare_given(a.given, b.middle) is Level.EXACT or (
        compare_given(a.middle, b.given) is Level.EXACT
    )


def compare_middle(a: str | None, b: str | None) -> Level:
    """Middle names: exact (or a slip), initial (one side only has the initial, and it
    agrees), conflict, or missing."""
    words_a, words_b = name_words(a or ""), name_words(b or "")
    if not words_a or not words_b:
        return Level.MISSING
    joined_a, joined_b = "".join(words_a), "".join(words_b)
    if joined_a == joined_b or is_typo(joined_a, joined_b):
        return Level.EXACT
    if len(words_a[0]) == 1 or len(words_b[0]) == 1:
        return Level.INITIAL if joined_a[0] == joined_b[0] else Level.CONFLICT
    return Level.CONFLICT


def compare_suffix(a: str | None, b: str | None) -> Level:
    """Generational suffixes (normalized: JR, SR, II, ...). One side without a suffix is
    common (it is dropped at registration) and reported as one_sided, not as agreement:
    the policy treats a family with Jr and Sr with care."""
    if a is None and b is None:
        return Level.MISSING
    if a is None or b is None:
        return Level.ONE_SIDED
    return Level.AGREE if a == b else Level.CONFLICT


# -- birth date and sex -------------------------------------------------------------------


def compare_birth_date(a: dt.date | None, b: dt.date | None) -> Level:
    """Exact, transposed (day and month swapped: 1990-03-07 / 1990-07-03), near (two of
    year, month and day agree and the third is one keying slip away), conflict, missing."""
    if a is None or b is None:
        return Level.MISSING
    if a == b:
        return Level.EXACT
    if a.year == b.year and a.month == b.day and a.day == b.month:
        return Level.TRANSPOSED
    same = (a.year == b.year) + (a.month == b.month) + (a.day == b.day)
    if same == 2 and (
        abs(a.day - b.day) == 1
        or abs(a.year - b.year) in (1, 10)
        or osa_distance(a.strftime("%Y%m%d"), b.strftime("%Y%m%d"), limit=1) <= 1
    ):
        return Level.NEAR
    return Level.CONFLICT


_BINARY_SEX = frozenset({Sex.MALE, Sex.FEMALE})


def compare_sex(a: Sex | None, b: Sex | None) -> Level:
    """Agree or conflict only between male and female; other and unknown are no
    evidence either way."""
    if a not in _BINARY_SEX or b not in _BINARY_SEX:
        return Level.MISSING
    return Level.AGREE if a == b else Level.CONFLICT


# -- locators -----------------------------------------------------------------------------

_ADDRESS_RANK = (
    Level.CURRENT,
    Level.HISTORY,
    Level.STREET,
    Level.LOCALITY,
    Level.CONFLICT,
    Level.MISSING,
)


def compare_address(a: PostalAddress, b: PostalAddress) -> Level:
    """One address against another: same (street, locality and unit compatible; reported
    as current), street (same street line, other town or other unit), locality (same ZIP5
    or city, other street), conflict or missing."""
    x, y = normal_address(a), normal_address(b)
    if x.is_empty or y.is_empty:
        return Level.MISSING
    same_street = bool(x.street and y.street) and (
        x.street == y.street or (x.street_core == y.street_core and " " in x.street_core)
    )
    if same_street:
        locality = (
            (x.zip5 and x.zip5 == y.zip5)
            or (x.city and x.city == y.city and x.state == y.state)
            or not ((x.zip5 or x.city) and (y.zip5 or y.city))
        )
        units_differ = bool(x.unit and y.unit and x.unit != y.unit)
        if locality and not units_differ:
            return Level.CURRENT
        return Level.STREET
    if (x.zip5 and x.zip5 == y.zip5) or (x.city and x.city == y.city and x.state == y.state):
        return Level.LOCALITY
    return Level.CONFLICT


def compare_addresses(a: Sequence[PostalAddress], b: Sequence[PostalAddress]) -> Level:
    """Address histories: current when both current addresses agree, history when any
    other pair does (a move one side has not heard of), else the best partial level."""
    levels: list[Level] = []
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            level = compare_address(x, y)
            if level is Level.CURRENT and (i or j):
                level = Level.HISTORY
            levels.append(level)
    return _best(levels, _ADDRESS_RANK)


def compare_values(a: Sequence[str], b: Sequence[str]) -> Level:
    """Already-normalized identifiers (E.164 phones, emails): agree on any shared value."""
    if not a or not b:
        return Level.MISSING
    return Level.AGREE if set(a) & set(b) else Level.CONFLICT


def compare_ssn(a: str | None, b: str | None) -> Level:
    if not a or not b:
        return Level.MISSING
    return Level.AGREE if a == b else Level.CONFLICT


_GRADES = {
    "certain": Level.CERTAIN,
    "probable": Level.PROBABLE,
    "possible": Level.POSSIBLE,
    "certainly-not": Level.CERTAINLY_NOT,
}


def compare_grade(grade: str | None) -> Level:
    """The network's match-grade code as a level (missing for none or an unknown code)."""
    return _GRADES.get(fold(grade).replace(" ", "-") if grade else "", Level.MISSING)


# -- all fields ---------------------------------------------------------------------------


def compare(participant: MatchPerson, candidate: MatchPerson) -> tuple[Comparison, ...]:
    """Every field, in a fixed order (the order reasons are stored in)."""
    given, family = compare_names(participant, candidate)
    p_name, c_name = participant.name, candidate.name
    return (
        given,
        family,
        Comparison(
            Field.MIDDLE,
            compare_middle(p_name.middle if p_name else None, c_name.middle if c_name else None),
        ),
        Comparison(Field.SUFFIX, compare_suffix(participant.suffix, candidate.suffix)),
        Comparison(
            Field.BIRTH_DATE, compare_birth_date(participant.birth_date, candidate.birth_date)
        ),
        Comparison(Field.SEX, compare_sex(participant.sex, candidate.sex)),
        Comparison(Field.ADDRESS, compare_addresses(participant.addresses, candidate.addresses)),
        Comparison(Field.PHONE, compare_values(participant.phones, candidate.phones)),
        Comparison(Field.EMAIL, compare_values(participant.emails, candidate.emails)),
        Comparison(Field.SSN, compare_ssn(participant.ssn_last4, candidate.ssn_last4)),
    )
