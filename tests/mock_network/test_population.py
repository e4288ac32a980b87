"""The population: deterministic, lean, realistic, noisy per organization, with hard cases."""

from __future__ import annotations

import collections
import datetime as dt
import random
import time

import phonenumbers
import pytest

from mock_network.config import NetworkConfig, OrgConfig, PopulationConfig
from mock_network.index import BlockingIndex
from mock_network.population import JUNIOR_SENIOR, NAMESAKE, TWIN, Core, Population, dob_typo


def _config(seed: int = 11, size: int = 2000) -> NetworkConfig:
    return NetworkConfig(
        population=PopulationConfig(seed=seed, size=size),
        orgs=(
            OrgConfig(id="org-a", name="A", state="NY"),
            OrgConfig(id="org-b", name="B", state="CA"),
            OrgConfig(id="org-c", name="C", state="TX"),
        ),
    )


def test_same_seed_same_people_and_records() -> None:
    first, second = Population(_config()), Population(_config())
    for index in (0, 1, 77, 1999):
        assert first.person(index) == second.person(index)
        assert first.orgs_of(index) == second.orgs_of(index)
        for org in first.org_ids:
            assert first.record(index, org) == second.record(index, org)


def test_order_of_access_does_not_matter() -> None:
    forward, backward = Population(_config()), Population(_config())
    people = [forward.person(i) for i in range(40)]
    assert [backward.person(i) for i in reversed(range(40))] == list(reversed(people))


def test_other_seed_other_people() -> None:
    first, other = Population(_config(seed=11)), Population(_config(seed=12))
    assert sum(first.person(i) != other.person(i) for i in range(50)) > 45


def test_a_million_people_are_not_built_up_front() -> None:
    began = time.perf_counter()
    population = Population(_config(size=1_000_000))
    last = population.person(999_999)
    assert last.person_id == "NP0999999"
    # Built up front, a million people take minutes; 5 s leaves room for a busy machine.
    assert time.perf_counter() - began < 5.0


def test_names_follow_real_frequencies(population: Population) -> None:
    surnames = collections.Counter(population.person(i).family for i in range(2000))
    common = {"Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis"}
    # Smith alone is ~1% of the US; the seven commonest are ~4%: far above a uniform draw.
    assert sum(surnames[name] for name in common) >= 40
    assert len(surnames) > 800


def test_demographics_look_real(population: Population) -> None:
    people = [population.person(i) for i in range(500)]
    sexes = collections.Counter(p.sex for p in people)
    assert 0.4 < sexes["female"] / 500 < 0.6
    assert any(p.birth_date.year < 1950 for p in people) and any(
        p.birth_date.year > 2010 for p in people
    )
    for person in people:
        if person.phone:
            assert phonenumbers.is_valid_number(phonenumbers.parse(person.phone)), person.person_id
        assert len(person.ssn_last4) == 4 and person.ssn_last4 != "0000"
        assert len(person.address.state) == 2 and len(person.address.postal_code) == 5
    assert sum(bool(p.email) for p in people) > 150
    assert any("-" in p.family or " " in p.family for p in people)


def test_known_at_zero_to_four_orgs(population: Population) -> None:
    counts = collections.Counter(len(population.orgs_of(i)) for i in range(2000))
    assert set(counts) <= {0, 1, 2, 3}  # three organizations in this network
    assert 0.08 < counts[0] / 2000 < 0.3  # a realistic share known nowhere


def test_each_blocks_cores_are_derived_once_however_many_are_visited() -> None:
    population = Population(_config(size=2000), cache_blocks=4)  # caches far smaller
    expected = [population.core(i) for i in range(2000)]
    derived: list[int] = []
    derive = population._block_core

    def counted(block: int) -> tuple[Core, ...]:
        derived.append(block)
        return derive(block)

    population._block_core = counted  # type: ignore[method-assign]
    for _ in range(2):
        assert [population.core(i) for i in reversed(range(2000))] == expected[::-1]
    assert derived == []  # $match's screen at 300,000 participants kept re-deriving them
    with pytest.raises(IndexError):
        population.block_core(-1)
    with pytest.raises(IndexError):
        population.block_core(500)


def test_each_persons_organizations_are_derived_once_however_many_are_visited() -> None:
    population = Population(_config(size=2000), cache_blocks=4)  # caches far smaller
    expected = [population.orgs_of(i) for i in range(2000)]
    derived: list[int] = []
    derive = population._orgs_of

    def counted(index: int) -> tuple[str, ...]:
        derived.append(index)
        return derive(index)

    population._orgs_of = counted  # type: ignore[method-assign]
    for _ in range(2):
        assert [population.orgs_of(i) for i in reversed(range(2000))] == expected[::-1]
    assert derived == []  # a large cohort's $match kept re-deriving them (LRU thrash)
    assert len({id(orgs) for orgs in expected}) <= 2**3  # one tuple per combination


def test_patient_ids_map_back_to_people(population: Population) -> None:
    for index in range(200):
        for org in population.orgs_of(index):
            patient_id = population.patient_id(index, org)
            assert population.index_of(org, patient_id) == index
            assert population.index_of_mrn(org, population.mrn(index, org)) == index
        for org in set(population.org_ids) - set(population.orgs_of(index)):
            assert population.record(index, org) is None
            assert population.index_of(org, population.patient_id(index, org)) is None


def test_each_org_holds_its_own_noisy_version(population: Population) -> None:
    noise: collections.Counter[str] = collections.Counter()
    for index in range(2000):
        for org in population.orgs_of(index):
            record = population.record(index, org)
            assert record is not None
            noise.update(record.noise)
    for kind in (
        "nickname",
        "given_typo",
        "family_typo",
        "maiden_name",
        "old_address",
        "missing_phone",
        "dob_transposed",
        "middle_shortened",
        "compound_surname",
        "dob_of_parent",
    ):
        assert noise[kind] > 0, kind


def test_twins_share_birth_surname_address_but_not_first_name(population: Population) -> None:
    twins = [p for p in population if p.hard_case == TWIN]
    assert len(twins) >= 20
    for twin in twins:
        other = population.person(next(i for i, rel in twin.related if rel == "twin"))
        assert (other.birth_date, other.family, other.address) == (
            twin.birth_date,
            twin.family,
            twin.address,
        )
        assert other.given != twin.given


def test_junior_and_senior_share_a_full_name(population: Population) -> None:
    seniors = [p for p in population if p.hard_case == JUNIOR_SENIOR and p.suffix == "Sr"]
    assert seniors
    for senior in seniors:
        junior = population.person(next(i for i, rel in senior.related if rel == "son"))
        assert junior.suffix == "Jr"
        assert (junior.given, junior.middle, junior.family) == (
            senior.given,
            senior.middle,
            senior.family,
        )
        assert junior.address == senior.address and junior.birth_date > senior.birth_date


def test_namesakes_share_name_and_birth_date_in_different_states(population: Population) -> None:
    namesakes = [p for p in population if p.hard_case == NAMESAKE]
    assert namesakes
    for person in namesakes:
        other = population.person(person.related[0][0])
        assert (other.given, other.family, other.birth_date, other.sex) == (
            person.given,
            person.family,
            person.birth_date,
            person.sex,
        )
        assert other.address.state != person.address.state


def test_household_members_share_an_address(population: Population) -> None:
    households = collections.defaultdict(list)
    for person in population:
        households[person.household_id].append(person)
    shared = [members for members in households.values() if len(members) > 1]
    assert len(shared) > 100
    for members in shared:
        assert len({m.address for m in members}) == 1


def test_index_finds_every_person_by_birth_date(population: Population) -> None:
    from mock_network.index import dob_key

    index = BlockingIndex.build(population)
    for i in range(0, 2000, 97):
        assert i in index.lookup([dob_key(population.person(i).birth_date)])


def test_a_birth_date_slip_never_lands_in_the_future() -> None:
    # A +10-year slip on a child's birth date used to give a birth year past the
    # network's "today": the documents built for that record then failed with a 500.
    latest = dt.date(2025, 1, 1)
    draws = 0
    for born in (dt.date(2024, 12, 31), dt.date(2024, 6, 15), dt.date(2019, 3, 31), latest):
        for seed in range(400):
            slipped = dob_typo(random.Random(seed), born, latest)
            assert slipped <= latest, (born, seed, slipped)
            assert slipped != born  # still a slip
            draws += 1
    # Far from the limit the slip is what it always was: the same draws, the same dates.
    old = dt.date(1961, 5, 31)
    years = {dob_typo(random.Random(seed), old, latest).year for seed in range(400)}
    assert years == {1951, 1960, 1961, 1962, 1971}
    assert draws == 1600
