"""Property-style check: many generated participant/candidate pairs of known truth.

The generator mimics what the mock network does to demographics (org-local typos,
nicknames, maiden names, old addresses, missing phones, transposed birth dates, compound
surnames) and builds its hard cases: twins, junior/senior, namesakes in other states and
household members. Same-person pairs measure recall; everything else must never be
accepted. Measured figures are printed (``pytest -s``); the bounds asserted are
conservative so that a change of weights shows up as a failure only when it matters.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from nicknames import NickNamer

from ehrfetch.cohort.records import PersonName, PostalAddress
from ehrfetch.matching.compare import Level, compare_given
from ehrfetch.matching.person import MatchPerson
from ehrfetch.matching.policy import Candidate, decide
from ehrfetch.store.tables import LinkDecision, Sex

# fmt: off
MALE = ("James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph",
        "Thomas", "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Donald",
        "Steven", "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George",
        "Edward", "Ronald", "Timothy", "Jason", "Jeffrey", "Ryan", "Jacob", "Gary",
        "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott", "Frank")
FEMALE = ("Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan",
          "Jessica", "Sarah", "Karen", "Nancy", "Lisa", "Betty", "Margaret", "Sandra",
          "Ashley", "Kimberly", "Emily", "Donna", "Michelle", "Dorothy", "Carol", "Amanda",
          "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia",
          "Kathleen", "Amy", "Shirley", "Angela", "Helen", "Anna", "Brenda", "Pamela")
FAMILIES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
            "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson",
            "Thomas", "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson",
            "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker",
            "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
            "O'Connor", "de la Cruz", "Castellano", "Van Buren", "McAllister", "Okafor")
STREETS = ("Oak", "Maple", "Cedar", "Pine", "Elm", "Harbor View", "Washington", "Lake",
           "Hill", "Park", "Main", "Church", "Willow", "Sunset", "Highland", "Mill")
KINDS = (("Street", "St"), ("Avenue", "Ave"), ("Road", "Rd"), ("Drive", "Dr"),
         ("Lane", "Ln"), ("Court", "Ct"), ("Boulevard", "Blvd"), ("Place", "Pl"))
CITIES = (("Portland", "ME", "041", "207"), ("Austin", "TX", "787", "512"),
          ("Denver", "CO", "802", "303"), ("Boston", "MA", "021", "617"),
          ("Tampa", "FL", "336", "813"), ("Seattle", "WA", "981", "206"),
          ("Chicago", "IL", "606", "312"), ("Phoenix", "AZ", "850", "602"))
# fmt: on
EMAIL_DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "example.org")

_NICKNAMES = NickNamer()


@dataclasses.dataclass(frozen=True)
class Truth:
    """A real person, before anybody typed them anywhere."""

    given: str
    middle: str
    family: str
    suffix: str | None
    birth_date: dt.date
    sex: Sex
    address: PostalAddress
    previous_address: PostalAddress | None
    phone: str | None
    email: str | None
    ssn: str
    maiden: str | None = None


def _address(rng: random.Random, city: tuple[str, str, str, str] | None = None) -> PostalAddress:
    name, state, zip3, _ = city or rng.choice(CITIES)
    unit = f"Apt {rng.randint(1, 40)}" if rng.random() < 0.2 else None
    street = f"{rng.randint(1, 29999)} {rng.choice(STREETS)} {rng.choice(KINDS)[0]}"
    return PostalAddress(street, unit, name, state, f"{zip3}{rng.randint(1, 99):02d}")


def _phone(rng: random.Random, city: tuple[str, str, str, str]) -> str:
    return f"+1{city[3]}{rng.randint(200, 999)}{rng.randint(0, 9999):04d}"


def _person(rng: random.Random, sex: Sex | None = None, **fixed: Any) -> Truth:
    sex = sex or (Sex.FEMALE if rng.random() < 0.5 else Sex.MALE)
    given = rng.choice(FEMALE if sex is Sex.FEMALE else MALE)
    city = rng.choice(CITIES)
    family = rng.choice(FAMILIES)
    if rng.random() < 0.04:
        family = f"{family}-{rng.choice(FAMILIES)}"
    born = dt.date(rng.randint(1930, 2015), rng.randint(1, 12), rng.randint(1, 28))
    truth = Truth(
        given=given,
        middle=rng.choice(MALE + FEMALE) if rng.random() < 0.7 else "",
        family=family,
        suffix=None,
        birth_date=born,
        sex=sex,
        address=_address(rng, city),
        previous_address=_address(rng, city if rng.random() < 0.7 else None)
        if rng.random() < 0.4
        else None,
        phone=_phone(rng, city) if rng.random() < 0.9 else None,
        email=f"{given.lower()}.{rng.randint(1, 9999)}@{rng.choice(EMAIL_DOMAINS)}"
        if rng.random() < 0.65
        else None,
        ssn=f"{rng.randint(1, 9999):04d}",
    )
    return dataclasses.replace(truth, **fixed)


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 2)
    kind = rng.randrange(3)
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def _nickname(rng: random.Random, given: str) -> str:
    found = sorted(n for n in _NICKNAMES.nicknames_of(given) if len(n) > 2)
    return rng.choice(found).capitalize() if found else given


def _transposable(born: dt.date) -> bool:
    return born.day <= 12 and born.day != born.month


def _abbreviate(address: PostalAddress) -> PostalAddress:
    line = address.line1 or ""
    for full, short in KINDS:
        if line.endswith(" " + full):
            line = line[: -len(full)] + short
    return dataclasses.replace(address, line1=line)


def enrolled(rng: random.Random, t: Truth, rid: str = "RS") -> MatchPerson:
    """What the participant typed at enrollment."""
    given = _nickname(rng, t.given) if rng.random() < 0.10 else t.given
    given = _typo(rng, given) if rng.random() < 0.02 else given
    family = _typo(rng, t.family) if rng.random() < 0.02 else t.family
    born = t.birth_date
    if _transposable(born) and rng.random() < 0.015:
        born = dt.date(born.year, born.day, born.month)
    address, previous = t.address, t.previous_address
    if previous is not None and rng.random() < 0.1:
        address, previous = previous, None
    suffix = t.suffix if rng.random() < 0.7 else None
    names = [PersonName(family, given, t.middle if rng.random() < 0.75 else None, suffix)]
    if t.maiden and rng.random() < 0.6:
        names.append(PersonName(t.maiden, t.given))
    addresses = [_abbreviate(address) if rng.random() < 0.5 else address]
    if previous is not None and rng.random() < 0.5:
        addresses.append(previous)
    return MatchPerson(
        names=tuple(names),
        birth_date=born,
        sex=t.sex,
        addresses=tuple(addresses),
        phones=(t.phone,) if t.phone and rng.random() < 0.85 else (),
        emails=(t.email,) if t.email and rng.random() < 0.7 else (),
        ssn_last4=t.ssn if rng.random() < 0.4 else None,
        suffix=suffix,
        id=rid,
    )


def registered(rng: random.Random, t: Truth, pid: str = "P1") -> MatchPerson:
    """One clinic's record of the person, with the clinic's own mistakes."""
    family, address = t.family, t.address
    if t.maiden and rng.random() < 0.3:
        family = t.maiden
        address = t.previous_address or address
    if "-" in family and rng.random() < 0.4:
        parts = family.split("-")
        family = rng.choice((parts[0], parts[-1], " ".join(parts), "".join(parts)))
    given = _nickname(rng, t.given) if rng.random() < 0.08 else t.given
    given = _typo(rng, given) if rng.random() < 0.03 else given
    family = _typo(rng, family) if rng.random() < 0.03 else family
    middle = t.middle
    if middle and rng.random() < 0.35:
        middle = middle[0] if rng.random() < 0.6 else ""
    suffix = t.suffix if rng.random() < 0.65 else None
    born = t.birth_date
    if _transposable(born) and rng.random() < 0.03:
        born = dt.date(born.year, born.day, born.month)
    elif rng.random() < 0.008:
        born = born.replace(day=born.day % 28 + 1)
    if t.previous_address is not None and address == t.address and rng.random() < 0.3:
        address = t.previous_address
    if rng.random() < 0.4:
        address = _abbreviate(address)
    if address.line2 and rng.random() < 0.3:
        address = dataclasses.replace(address, line2=None)
    return MatchPerson(
        names=(PersonName(family, given, middle or None, suffix),),
        birth_date=born,
        sex=t.sex,
        addresses=(address,),
        phones=(t.phone,) if t.phone and rng.random() < 0.85 else (),
        emails=(t.email,) if t.email and rng.random() < 0.5 else (),
        suffix=suffix,
        id=pid,
    )


# -- the cases: (truth 'same' or a hard-case label, participant truth, candidate truth) -----


def same_person(rng: random.Random) -> tuple[Truth, Truth]:
    t = _person(rng)
    if t.sex is Sex.FEMALE and rng.random() < 0.3:
        t = dataclasses.replace(t, maiden=rng.choice(FAMILIES))
    return t, t


def twins(rng: random.Random) -> tuple[Truth, Truth]:
    one = _person(rng)
    sex = one.sex if rng.random() < 0.6 else (Sex.MALE if one.sex is Sex.FEMALE else Sex.FEMALE)
    while True:
        # The veto's definition: a first name that is no nickname, typo or initial of the
        # other. (Twins named Jerry and Gerald are indistinguishable by name; the
        # household veto catches them only when a middle name, sex or e-mail differs.)
        given = rng.choice(FEMALE if sex is Sex.FEMALE else MALE)
        if compare_given(given, one.given) is Level.CONFLICT:
            break
    other = _person(
        rng,
        sex=sex,
        given=given,
        family=one.family,
        birth_date=one.birth_date,
        address=one.address,
        previous_address=one.previous_address,
        phone=one.phone,
    )
    return one, other


def junior_senior(rng: random.Random) -> tuple[Truth, Truth]:
    senior = _person(rng, sex=Sex.MALE, suffix="SR")
    born = senior.birth_date
    junior = _person(
        rng,
        sex=Sex.MALE,
        given=senior.given,
        middle=senior.middle,
        family=senior.family,
        suffix="JR",
        birth_date=born + dt.timedelta(days=rng.randint(20 * 365, 40 * 365)),
        address=senior.address,
        previous_address=senior.previous_address,
    )
    return (senior, junior) if rng.random() < 0.5 else (junior, senior)


def namesake(rng: random.Random) -> tuple[Truth, Truth]:
    one = _person(rng)
    city = next(c for c in rng.sample(CITIES, len(CITIES)) if c[1] != one.address.state)
    other = _person(
        rng,
        sex=one.sex,
        given=one.given,
        family=one.family,
        birth_date=one.birth_date,
        address=_address(rng, city),
        previous_address=None,
        phone=_phone(rng, city),
    )
    return one, other


def household(rng: random.Random) -> tuple[Truth, Truth]:
    one = _person(rng)
    while True:
        other = _person(rng, family=one.family, address=one.address, phone=one.phone)
        if compare_given(other.given, one.given) is Level.CONFLICT:
            return one, other


HARD_CASES: dict[str, Callable[[random.Random], tuple[Truth, Truth]]] = {
    "twin": twins,
    "junior_senior": junior_senior,
    "namesake": namesake,
    "household": household,
}


def _decide(
    rng: random.Random, participant: Truth, *records: MatchPerson
) -> tuple[LinkDecision, int | None]:
    decision = decide(enrolled(rng, participant), [Candidate(r, 0.9, "probable") for r in records])
    return decision.decision, decision.index


def test_generated_pairs_precision_recall_and_hard_cases() -> None:
    rng = random.Random(20240601)
    counts: Counter[str] = Counter()
    for _ in range(6000):
        truth, _ = same_person(rng)
        decision, _ = _decide(rng, truth, registered(rng, truth))
        counts["same"] += 1
        counts[f"same_{decision.value}"] += 1
    for label, make in HARD_CASES.items():
        for _ in range(1500):
            participant, other = make(rng)
            # The other person's record alone: the hardest deck, nobody to compare with.
            decision, _ = _decide(rng, participant, registered(rng, other, "P2"))
            counts[label] += 1
            counts[f"{label}_{decision.value}"] += 1
            # Both records at one organization: the right one or review, never the other.
            records = [registered(rng, participant, "P1"), registered(rng, other, "P2")]
            rng.shuffle(records)
            decision, index = _decide(rng, participant, *records)
            if decision is LinkDecision.ACCEPT and index is not None:
                counts[f"{label}_pair_{'right' if records[index].id == 'P1' else 'wrong'}"] += 1
    for _ in range(3000):
        one, other = _person(rng), _person(rng)
        decision, _ = _decide(rng, one, registered(rng, other, "P2"))
        counts["stranger"] += 1
        counts[f"stranger_{decision.value}"] += 1

    true_accepts = counts["same_accept"]
    false_accepts = sum(counts[f"{label}_accept"] for label in (*HARD_CASES, "stranger"))
    false_accepts += sum(counts[f"{label}_pair_wrong"] for label in HARD_CASES)
    precision = true_accepts / (true_accepts + false_accepts)
    recall = true_accepts / counts["same"]
    print(
        f"\ngenerated: recall {recall:.4f} (review {counts['same_review'] / counts['same']:.4f})"
        f" precision {precision:.5f}; "
        + ", ".join(
            f"{label} accepted {counts[f'{label}_accept']}/{counts[label]}"
            f" pair right {counts[f'{label}_pair_right']} wrong {counts[f'{label}_pair_wrong']}"
            for label in HARD_CASES
        )
    )
    for label in HARD_CASES:
        assert counts[f"{label}_accept"] == 0, label
        assert counts[f"{label}_pair_wrong"] == 0, label
    assert counts["stranger_accept"] == 0
    assert precision == 1.0
    assert recall >= 0.93


def test_fuzzy_named_twins_with_a_telling_difference_are_not_accepted() -> None:
    """Twins whose names the nickname table links (Jerry / Gerald) are told apart only by
    what twins do not share: then they must not be accepted."""
    rng = random.Random(7)
    for _ in range(300):
        one = _person(rng, sex=Sex.MALE, given="Gerald", middle="Alan")
        other = dataclasses.replace(one, given="Jerry", middle="Paul", ssn="9999", email=None)
        record = registered(rng, other)
        record = dataclasses.replace(record, names=(PersonName(one.family, "Jerry", "Paul"),))
        participant = dataclasses.replace(
            enrolled(rng, one), names=(PersonName(one.family, "Gerald", "Alan"),)
        )
        decision = decide(participant, [Candidate(record, 0.9, "certain")])
        assert decision.decision is not LinkDecision.ACCEPT
