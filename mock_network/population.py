"""The network's people, derived on demand from (seed, index).

Nobody is built up front. People live in blocks of four consecutive indices; a block is
a household or a handful of strangers, and its kind decides the hard cases:

    singles    four unrelated people, each at their own address
    couple     a married couple (she may carry her maiden name somewhere) + two singles
    family     two parents and two children at one address
    twins      twins (same birth date, surname, address and phone, different first
               names) + a parent + a single
    junior     father and son with the same full name, Sr and Jr, at one address,
               + the mother + a single
    namesake   two strangers with the same common name, sex and birth date, in
               different states + two singles

Deriving a block costs tens of microseconds and is cached, so a million-person network
starts in seconds and serves any person by index. Every organization a person is known
at holds its own noisy copy of them (`OrgRecord`), also derived on demand.
"""

from __future__ import annotations

import calendar
import datetime as dt
import functools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from mock_network import names, places
from mock_network.config import NetworkConfig
from mock_network.rand import int_for, rng_for, unit

BLOCK = 4
_PID_MODULUS = 2_147_483_647  # a prime, so index -> patient id is a bijection per org

BLOCK_KINDS: tuple[tuple[str, float], ...] = (
    ("singles", 0.50),
    ("couple", 0.18),
    ("family", 0.13),
    ("twins", 0.06),
    ("junior", 0.07),
    ("namesake", 0.06),
)
_KIND_CUMULATIVE = tuple(sum(w for _, w in BLOCK_KINDS[: i + 1]) for i in range(len(BLOCK_KINDS)))

PARENT_RELATIONS = frozenset({"parent", "father", "mother"})

# Hard-case labels used in the truth file.
TWIN = "twin"
JUNIOR_SENIOR = "junior_senior"
NAMESAKE = "namesake"
HOUSEHOLD = "household"


@dataclass(frozen=True, slots=True)
class Address:
    line1: str
    line2: str
    city: str
    state: str
    postal_code: str


class Core(NamedTuple):
    """What the blocking index needs: cheap to derive for every person at startup (a
    NamedTuple because it is built for everyone and a frozen dataclass costs 5x more)."""

    given: str
    middle: str
    family: str
    suffix: str
    birth_date: dt.date
    sex: str
    maiden: str  # birth surname when it differs from `family`, else ""
    role: str  # single, spouse, parent, child, twin, senior, junior, namesake
    hard_case: str | None
    related: tuple[tuple[int, str], ...]  # (slot, relation) within the block
    household: bool  # lives at the block's shared address


@dataclass(frozen=True, slots=True)
class Person:
    index: int
    person_id: str
    given: str
    middle: str
    family: str
    suffix: str
    birth_date: dt.date
    sex: str
    maiden_name: str
    address: Address
    previous_address: Address | None
    phone: str
    email: str
    ssn_last4: str
    household_id: str
    hard_case: str | None
    related: tuple[tuple[int, str], ...]  # (index, relation)


@dataclass(frozen=True, slots=True)
class OrgRecord:
    """One organization's registration of a person, with its own mistakes."""

    index: int
    org_id: str
    patient_id: str
    mrn: str
    given: str
    middle: str
    family: str
    suffix: str
    birth_date: dt.date
    sex: str
    address: Address
    phone: str
    email: str
    ssn_last4: str
    other_families: tuple[str, ...]  # earlier surnames the org also has on file
    noise: tuple[str, ...] = field(default=())  # which mistakes were made (for tests)


def person_id(index: int) -> str:
    return f"NP{index:07d}"


def soundex(name: str) -> str:
    """American Soundex, the blocking key most MPIs still use for surnames."""
    letters = [c for c in name.upper() if "A" <= c <= "Z"]
    if not letters:
        return "Z000"
    codes = {
        **dict.fromkeys("BFPV", "1"),
        **dict.fromkeys("CGJKQSXZ", "2"),
        **dict.fromkeys("DT", "3"),
        "L": "4",
        **dict.fromkeys("MN", "5"),
        "R": "6",
    }
    out = [letters[0]]
    last = codes.get(letters[0], "")
    for c in letters[1:]:
        code = codes.get(c, "")
        if code and code != last:
            out.append(code)
        if c not in "HW":
            last = code
        if len(out) == 4:
            break
    return "".join(out).ljust(4, "0")


def _ri(rng: random.Random, low: int, high: int) -> int:
    """randint without its argument checks: a quarter of the cost, same job here."""
    return low + int(rng.random() * (high - low + 1))


_YEAR_START = {year: dt.date(year, 1, 1).toordinal() for year in range(1850, 2101)}


def _dob(rng: random.Random, reference: dt.date, age: int) -> dt.date:
    year = reference.year - age - 1
    days = 366 if calendar.isleap(year) else 365
    return dt.date.fromordinal(_YEAR_START[year] + int(rng.random() * days))


def _adult_age(rng: random.Random, low: int = 18, high: int = 95) -> int:
    # Rough US adult age structure: fewer people at each older band.
    band = rng.random()
    if band < 0.30:
        age = _ri(rng, 18, 34)
    elif band < 0.63:
        age = _ri(rng, 35, 54)
    elif band < 0.90:
        age = _ri(rng, 55, 74)
    else:
        age = _ri(rng, 75, 95)
    return max(low, min(high, age))


def _any_age(rng: random.Random) -> int:
    return _ri(rng, 0, 17) if rng.random() < 0.22 else _adult_age(rng)


def _sex(rng: random.Random) -> str:
    u = rng.random()
    return "female" if u < 0.505 else ("male" if u < 0.998 else "other")


def _given(rng: random.Random, sex: str) -> str:
    return names.given_names("female" if sex == "female" else "male").draw(rng)


def _middle(rng: random.Random, sex: str) -> str:
    return _given(rng, sex) if rng.random() < 0.7 else ""


def _compound(rng: random.Random, family: str) -> str:
    """Some people carry two surnames: hyphenated or Hispanic double surnames."""
    if rng.random() < 0.035:
        other = names.surnames().draw(rng)
        if other != family:
            return f"{family}-{other}" if rng.random() < 0.6 else f"{family} {other}"
    return family


class Population:
    """The people of one network, by index. Thread-unsafe caches are fine: the app runs
    on one event loop."""

    def __init__(self, config: NetworkConfig, *, cache_blocks: int = 65_536) -> None:
        self.config = config
        self.seed = config.population.seed
        self.size = config.population.size
        self.reference = dt.date.fromisoformat(config.population.reference_date)
        self.org_ids: tuple[str, ...] = tuple(org.id for org in config.orgs)
        self._org_states = {org.id: org.state for org in config.orgs}
        self._org_noise = {org.id: org.noise for org in config.orgs}
        weights = config.population.orgs_per_person
        self._count_cumulative = tuple(sum(weights[: i + 1]) for i in range(len(weights)))
        self._pid_keys = {
            org: (
                1 + int_for(self.seed, "pid-a", org) % (_PID_MODULUS - 1),
                int_for(self.seed, "pid-b", org) % _PID_MODULUS,
            )
            for org in self.org_ids
        }
        self._pid_inverse = {
            org: pow(a, -1, _PID_MODULUS) for org, (a, _) in self._pid_keys.items()
        }
        self._block_people = functools.lru_cache(maxsize=cache_blocks)(self._make_block)
        self.record = functools.lru_cache(maxsize=cache_blocks * 2)(self._record)
        # Every $match asks which organizations know each of its candidates, and a large
        # cohort's candidates spread over the whole population: an LRU cache smaller than
        # the population thrashed (40 % of the network's CPU at 240,000 participants of a
        # 300,000 cohort on a 600,000-person network), so each person's organizations are
        # derived once, kept in a slot of their own (8 bytes a person; each combination
        # of organizations stored once).
        self._orgs_known: list[tuple[str, ...] | None] = [None] * self.size
        self._org_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
        # The same for each block's cores, which $match's screen reads for everyone
        # blocking finds: ~36 people a query at 600,000 people (6 at 80,000, as blocking
        # keys crowd with size), so an LRU of 65,536 blocks re-derived cores all run
        # long at that size. Building the index derives every block once anyway; kept,
        # they cost ~200 bytes a person (121 MB at 600,000).
        self._cores: list[tuple[Core, ...] | None] = [None] * ((self.size + BLOCK - 1) // BLOCK)

    # -- people ---------------------------------------------------------------------

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Person]:
        for index in range(self.size):
            yield self.person(index)

    def core(self, index: int) -> Core:
        return self.block_core(index // BLOCK)[index % BLOCK]

    def block_core(self, block: int) -> tuple[Core, ...]:
        """The cores of ``block``'s people, derived the first time they are asked for."""
        if not 0 <= block < len(self._cores):
            raise IndexError(block)  # a negative one would wrap to another block
        cores = self._cores[block]
        if cores is None:
            cores = self._cores[block] = self._block_core(block)
        return cores

    def person(self, index: int) -> Person:
        if not 0 <= index < self.size:
            raise IndexError(index)
        return self._block_people(index // BLOCK)[index % BLOCK]

    def block_kind(self, block: int) -> str:
        return self._kind(rng_for(self.seed, "core", block).random())

    @staticmethod
    def _kind(u: float) -> str:
        for (kind, _), bound in zip(BLOCK_KINDS, _KIND_CUMULATIVE, strict=True):
            if u < bound:
                return kind
        return BLOCK_KINDS[-1][0]

    def _block_core(self, block: int) -> tuple[Core, ...]:
        rng = rng_for(self.seed, "core", block)
        kind = self._kind(rng.random())
        ref = self.reference
        surnames = names.surnames()

        def single(role: str = "single", age: int | None = None) -> Core:
            sex = _sex(rng)
            family = _compound(rng, surnames.draw(rng))
            return Core(
                _given(rng, sex),
                _middle(rng, sex),
                family,
                "II" if rng.random() < 0.004 else ("III" if rng.random() < 0.002 else ""),
                _dob(rng, ref, _any_age(rng) if age is None else age),
                sex,
                "",
                role,
                None,
                (),
                False,
            )

        def spouse_pair(family: str, age: int) -> tuple[Core, Core]:
            """A married couple; she took his surname (or hyphenated) most of the time."""
            husband = Core(
                _given(rng, "male"),
                _middle(rng, "male"),
                family,
                "",
                _dob(rng, ref, age),
                "male",
                "",
                "spouse",
                HOUSEHOLD,
                ((1, "spouse"),),
                True,
            )
            maiden = surnames.draw(rng)
            choice = rng.random()
            if choice < 0.70:
                wife_family, wife_maiden = family, maiden
            elif choice < 0.82:
                wife_family, wife_maiden = f"{maiden}-{family}", maiden
            else:
                wife_family, wife_maiden = maiden, ""
            wife_age = max(18, age + _ri(rng, -6, 4))
            wife = Core(
                _given(rng, "female"),
                _middle(rng, "female"),
                wife_family,
                "",
                _dob(rng, ref, wife_age),
                "female",
                wife_maiden,
                "spouse",
                HOUSEHOLD,
                ((0, "spouse"),),
                True,
            )
            return husband, wife

        if kind == "singles":
            return tuple(single() for _ in range(BLOCK))
        if kind == "couple":
            husband, wife = spouse_pair(surnames.draw(rng), _adult_age(rng, 22, 90))
            return (husband, wife, single(), single())
        if kind == "family":
            family = surnames.draw(rng)
            parent_age = _ri(rng, 28, 58)
            husband, wife = spouse_pair(family, parent_age)
            kids = []
            for slot in (2, 3):
                sex = _sex(rng)
                kid_age = max(0, parent_age - _ri(rng, 20, 40))
                kids.append(
                    Core(
                        _given(rng, sex),
                        _middle(rng, sex),
                        family,
                        "",
                        _dob(rng, ref, kid_age),
                        sex,
                        "",
                        "child",
                        HOUSEHOLD,
                        ((0, "parent"), (1, "parent"), (5 - slot, "sibling")),
                        True,
                    )
                )
            husband = _with(husband, related=((1, "spouse"), (2, "child"), (3, "child")))
            wife = _with(wife, related=((0, "spouse"), (2, "child"), (3, "child")))
            return (husband, wife, kids[0], kids[1])
        if kind == "twins":
            family = surnames.draw(rng)
            parent_sex = _sex(rng) if rng.random() < 0.5 else "female"
            parent_age = _ri(rng, 24, 60)
            parent = Core(
                _given(rng, parent_sex),
                _middle(rng, parent_sex),
                family,
                "",
                _dob(rng, ref, parent_age),
                parent_sex,
                "",
                "parent",
                HOUSEHOLD,
                ((0, "child"), (1, "child")),
                True,
            )
            twin_age = max(0, parent_age - _ri(rng, 18, 40))
            dob = _dob(rng, ref, twin_age)
            first_sex = _sex(rng) if rng.random() < 0.5 else "female"
            second_sex = (
                first_sex if rng.random() < 0.6 else ("male" if first_sex == "female" else "female")
            )
            first = _given(rng, first_sex)
            second = _given(rng, second_sex)
            for _ in range(8):  # twins never share a first name
                if second != first:
                    break
                second = _given(rng, second_sex)
            twins = (
                Core(
                    first,
                    _middle(rng, first_sex),
                    family,
                    "",
                    dob,
                    first_sex,
                    "",
                    "twin",
                    TWIN,
                    ((1, "twin"), (2, "parent")),
                    True,
                ),
                Core(
                    second,
                    _middle(rng, second_sex),
                    family,
                    "",
                    dob,
                    second_sex,
                    "",
                    "twin",
                    TWIN,
                    ((0, "twin"), (2, "parent")),
                    True,
                ),
            )
            return (twins[0], twins[1], parent, single())
        if kind == "junior":
            family = surnames.draw(rng)
            given = _given(rng, "male")
            middle = _given(rng, "male") if rng.random() < 0.85 else ""
            senior_age = _ri(rng, 42, 88)
            junior_age = senior_age - _ri(rng, 20, 40)
            senior = Core(
                given,
                middle,
                family,
                "Sr",
                _dob(rng, ref, senior_age),
                "male",
                "",
                "senior",
                JUNIOR_SENIOR,
                ((1, "son"), (2, "spouse")),
                True,
            )
            junior = Core(
                given,
                middle,
                family,
                "Jr",
                _dob(rng, ref, junior_age),
                "male",
                "",
                "junior",
                JUNIOR_SENIOR,
                ((0, "father"), (2, "mother")),
                True,
            )
            mother_age = max(senior_age - 10, min(senior_age + 5, junior_age + _ri(rng, 20, 40)))
            maiden = surnames.draw(rng)
            mother = Core(
                _given(rng, "female"),
                _middle(rng, "female"),
                family,
                "",
                _dob(rng, ref, mother_age),
                "female",
                maiden,
                "spouse",
                HOUSEHOLD,
                ((0, "spouse"), (1, "son")),
                True,
            )
            return (senior, junior, mother, single())
        # namesake: the commonest names collide; different states, different lives.
        sex = "male" if rng.random() < 0.5 else "female"
        given = names.given_names(sex).draw_common(rng, 40)
        family = surnames.draw_common(rng, 25)
        dob = _dob(rng, ref, _adult_age(rng))
        one = Core(
            given,
            _middle(rng, sex),
            family,
            "",
            dob,
            sex,
            "",
            "namesake",
            NAMESAKE,
            ((1, "namesake"),),
            False,
        )
        two = Core(
            given,
            _middle(rng, sex),
            family,
            "",
            dob,
            sex,
            "",
            "namesake",
            NAMESAKE,
            ((0, "namesake"),),
            False,
        )
        return (one, two, single(), single())

    def _make_block(self, block: int) -> tuple[Person, ...]:
        cores = self.block_core(block)
        rng = rng_for(self.seed, "detail", block)
        home_city = places.CITIES[places.city_index(rng.random())]
        home = self._address(rng, home_city)
        home_phone = places.draw_phone(rng, home_city)
        moved_together = self._previous(rng, home_city) if rng.random() < 0.35 else None
        namesake_state = ""
        people = []
        base = block * BLOCK
        for slot, core in enumerate(cores):
            index = base + slot
            if core.household:
                address, previous, city = home, moved_together, home_city
            else:
                city = places.CITIES[places.city_index(rng.random())]
                if core.role == "namesake":
                    # The two namesakes must live in different states.
                    for _ in range(32):
                        if city.state != namesake_state:
                            break
                        city = places.CITIES[places.city_index(rng.random())]
                    namesake_state = city.state
                address = self._address(rng, city)
                previous = self._previous(rng, city) if rng.random() < 0.4 else None
            age = (self.reference - core.birth_date).days // 365
            if core.household and (age < 18 or core.role == "twin"):
                phone = home_phone  # children are reached at the family number
            elif rng.random() < 0.9:
                phone = places.draw_phone(rng, city)
            else:
                phone = ""
            email = self._email(rng, core) if age >= 14 and rng.random() < 0.65 else ""
            related = tuple(
                (base + other, relation)
                for other, relation in core.related
                if base + other < self.size
            )
            people.append(
                Person(
                    index=index,
                    person_id=person_id(index),
                    given=core.given,
                    middle=core.middle,
                    family=core.family,
                    suffix=core.suffix,
                    birth_date=core.birth_date,
                    sex=core.sex,
                    maiden_name=core.maiden,
                    address=address,
                    previous_address=previous,
                    phone=phone,
                    email=email,
                    ssn_last4=f"{_ri(rng, 1, 9999):04d}",
                    household_id=f"HH{block:06d}" if core.household else f"HH{block:06d}-{slot}",
                    hard_case=core.hard_case if related else None,
                    related=related,
                )
            )
        return tuple(people)

    @staticmethod
    def _address(rng: random.Random, city: places.City) -> Address:
        line2 = places.draw_unit(rng) if rng.random() < 0.22 else ""
        return Address(
            places.draw_street_line(rng), line2, city.name, city.state, places.draw_zip(rng, city)
        )

    def _previous(self, rng: random.Random, city: places.City) -> Address:
        if rng.random() < 0.7:
            return self._address(rng, city)  # moved across town
        other = places.CITIES[places.city_index(rng.random())]
        return self._address(rng, other)

    @staticmethod
    def _email(rng: random.Random, core: Core) -> str:
        def clean(text: str) -> str:
            return "".join(c for c in text.lower() if c.isalnum())

        local = rng.choice(
            (
                f"{clean(core.given)}.{clean(core.family)}",
                f"{clean(core.given)[:1]}{clean(core.family)}{_ri(rng, 1, 99)}",
                f"{clean(core.given)}{core.birth_date.year % 100:02d}",
            )
        )
        return f"{local}@{rng.choice(places.EMAIL_DOMAINS)}"

    # -- organizations --------------------------------------------------------------

    def orgs_of(self, index: int) -> tuple[str, ...]:
        """The organizations that know this person, in the network's order."""
        known = self._orgs_known[index]
        if known is None:
            orgs = self._orgs_of(index)
            known = self._orgs_known[index] = self._org_sets.setdefault(orgs, orgs)
        return known

    def _orgs_of(self, index: int) -> tuple[str, ...]:
        """Organizations that know this person. Household members and namesakes often
        share the first member's organizations: that is where the mix-ups happen."""
        core = self.core(index)
        anchor = index
        slot = index % BLOCK
        if slot != 0 and (core.household or core.role == "namesake"):
            share = rng_for(self.seed, "share", index).random()
            first = self.core(index - slot)
            if (first.household or first.role == "namesake") and share < 0.7:
                anchor = index - slot
        rng = rng_for(self.seed, "orgs", anchor)
        u = rng.random() * self._count_cumulative[-1]
        count = 0
        while count < len(self._count_cumulative) - 1 and u >= self._count_cumulative[count]:
            count += 1
        count = min(count, len(self.org_ids))
        if count == 0:
            return ()
        home = self.person(anchor).address.state
        out_of_state = self.config.population.out_of_state
        chosen: list[str] = []
        pool = list(self.org_ids)
        weights = [
            1.0 if self._org_states[org] == home else out_of_state / max(1, len(pool))
            for org in pool
        ]
        if not any(self._org_states[org] == home for org in pool):
            weights = [1.0] * len(pool)  # nobody near home: any organization will do
        for _ in range(count):
            pick = rng.choices(range(len(pool)), weights=weights)[0]
            chosen.append(pool.pop(pick))
            weights.pop(pick)
        return tuple(sorted(chosen, key=self.org_ids.index))

    def patient_id(self, index: int, org_id: str) -> str:
        a, b = self._pid_keys[org_id]
        return f"{(index * a + b) % _PID_MODULUS:010d}"

    def index_of(self, org_id: str, patient_id: str) -> int | None:
        """The person an organization's patient id stands for, if that org knows them."""
        if org_id not in self._pid_keys or len(patient_id) != 10 or not patient_id.isdigit():
            return None
        offset = self._pid_keys[org_id][1]
        index = ((int(patient_id) - offset) * self._pid_inverse[org_id]) % _PID_MODULUS
        if index >= self.size or org_id not in self.orgs_of(index):
            return None
        return index

    def mrn(self, index: int, org_id: str) -> str:
        a, b = self._pid_keys[org_id]
        return f"{(index * b + a) % _PID_MODULUS:010d}"

    def index_of_mrn(self, org_id: str, mrn: str) -> int | None:
        if org_id not in self._pid_keys or len(mrn) != 10 or not mrn.isdigit():
            return None
        a, b = self._pid_keys[org_id]
        index = ((int(mrn) - a) * pow(b, -1, _PID_MODULUS)) % _PID_MODULUS
        if index >= self.size or org_id not in self.orgs_of(index):
            return None
        return index

    def _record(self, index: int, org_id: str) -> OrgRecord | None:
        if org_id not in self.orgs_of(index):
            return None
        person = self.person(index)
        rng = rng_for(self.seed, "record", index, org_id)
        scale = self._org_noise[org_id]
        noise: list[str] = []

        def chance(p: float) -> bool:
            return rng.random() < p * scale

        given, middle, family, suffix = person.given, person.middle, person.family, person.suffix
        birth_date, address, phone = person.birth_date, person.address, person.phone
        other_families: tuple[str, ...] = ()
        if person.maiden_name and person.maiden_name != family:
            if chance(0.3):
                family = person.maiden_name  # registered before the marriage
                noise.append("maiden_name")
                if person.previous_address is not None:
                    address = person.previous_address
            elif chance(0.3):
                other_families = (person.maiden_name,)
        if ("-" in family or " " in family) and chance(0.4):
            parts = family.replace("-", " ").split()
            family = rng.choice((parts[0], " ".join(parts), "".join(parts), parts[-1]))
            noise.append("compound_surname")
        nicks = names.nicknames_of(given)
        if nicks and chance(0.08):
            given = rng.choice(nicks)
            noise.append("nickname")
        if chance(0.03):
            given = typo(rng, given)
            noise.append("given_typo")
        if chance(0.03):
            family = typo(rng, family)
            noise.append("family_typo")
        if middle and chance(0.35):
            middle = middle[0] if rng.random() < 0.6 else ""
            noise.append("middle_shortened")
        if suffix and chance(0.35):
            suffix = ""
            noise.append("suffix_dropped")
        if birth_date.day <= 12 and birth_date.day != birth_date.month and chance(0.03):
            birth_date = dt.date(birth_date.year, birth_date.day, birth_date.month)
            noise.append("dob_transposed")
        elif chance(0.008):
            birth_date = dob_typo(rng, birth_date, self.reference)
            noise.append("dob_typo")
        parents = [i for i, rel in person.related if rel in PARENT_RELATIONS]
        if parents and unit(self.seed, "dob-of-parent", index, org_id) < 0.04 * scale:
            # A classic registration error: the parent's (guarantor's) birth date typed
            # into the child's record, so the index confuses the two.
            birth_date = self.person(parents[0]).birth_date
            noise.append("dob_of_parent")
        if person.previous_address is not None and address == person.address and chance(0.3):
            address = person.previous_address
            noise.append("old_address")
        if chance(0.4):
            address = Address(
                places.abbreviate_street(address.line1),
                address.line2,
                address.city,
                address.state,
                address.postal_code,
            )
        if address.line2 and chance(0.3):
            address = Address(address.line1, "", address.city, address.state, address.postal_code)
            noise.append("unit_dropped")
        if phone and chance(0.15):
            phone = ""
            noise.append("missing_phone")
        email = person.email if not chance(0.5) else ""
        ssn = person.ssn_last4 if rng.random() < 0.5 else ""
        return OrgRecord(
            index=index,
            org_id=org_id,
            patient_id=self.patient_id(index, org_id),
            mrn=self.mrn(index, org_id),
            given=given,
            middle=middle,
            family=family,
            suffix=suffix,
            birth_date=birth_date,
            sex=person.sex,
            address=address,
            phone=phone,
            email=email,
            ssn_last4=ssn,
            other_families=other_families,
            noise=tuple(noise),
        )


def _with(core: Core, related: tuple[tuple[int, str], ...]) -> Core:
    return core._replace(related=related)


_KEYBOARD_NEIGHBOURS = {
    "a": "sq",
    "e": "wr",
    "i": "uo",
    "o": "ip",
    "n": "bm",
    "r": "et",
    "s": "ad",
    "t": "ry",
    "l": "k",
    "m": "n",
    "c": "xv",
    "d": "sf",
    "h": "gj",
    "y": "tu",
    "u": "yi",
}


def typo(rng: random.Random, text: str) -> str:
    """One keying slip: transposed, dropped, doubled or neighbouring letter."""
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == 1:
        return text[:i] + text[i + 1 :]
    if kind == 2:
        return text[:i] + text[i] + text[i:]
    neighbours = _KEYBOARD_NEIGHBOURS.get(text[i].lower())
    if not neighbours:
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text[:i] + rng.choice(neighbours) + text[i + 1 :]


def dob_typo(rng: random.Random, value: dt.date, latest: dt.date) -> dt.date:
    """A single-digit slip in the day or the year, never past ``latest`` (the network's
    "today": registration systems refuse a birth date in the future, and documents built
    for such a record failed) and never onto the same date. A slip that would land
    past ``latest``, or off the month, goes the other way; the draws are the same, so
    every other record stays as it was."""
    if rng.random() < 0.5:
        step = rng.choice((-1, 1))
        last = calendar.monthrange(value.year, value.month)[1]
        for day in (value.day + step, value.day - step):
            if 1 <= day <= last and value.replace(day=day) <= latest:
                return value.replace(day=day)
        # Born on latest itself, the 1st of its month: no day either way; a year earlier.
        return _on_year(value, value.year - 1)
    delta = rng.choice((-1, 1, -10, 10))
    if value.year + delta > latest.year:
        delta = -delta
    slipped = _on_year(value, value.year + delta)
    # In latest's own year but later in it: the slip the other way.
    return slipped if slipped <= latest else _on_year(value, value.year - abs(delta))


def _on_year(value: dt.date, year: int) -> dt.date:
    """The same month and day in another year (the 28th for the 29th of February)."""
    return dt.date(year, value.month, min(value.day, calendar.monthrange(year, value.month)[1]))
