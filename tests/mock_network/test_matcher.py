"""The matcher's screen cache: every organization asked about the same Patient gets the
answer it would have got without the cache, and a different query never gets another's."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from mock_network.config import NetworkConfig
from mock_network.fhir import mrn_system
from mock_network.index import BlockingIndex, surname_code
from mock_network.matcher import Matcher, Query, _family_weight, _given_weight, parse_query
from mock_network.population import Population
from mock_network.roster import Participant
from mock_network.testing import roster_patient


@pytest.fixture(scope="module")
def index(population: Population) -> BlockingIndex:
    return BlockingIndex.build(population)


def _answers(matcher: Matcher, org_id: str, query: Query) -> list[tuple[int, str, float, str]]:
    return [
        (c.record.index, c.record.patient_id, c.score, c.grade)
        for c in matcher.match(org_id, mrn_system(org_id), query)
    ]


def test_cached_screen_gives_every_organization_the_uncached_answer(
    config: NetworkConfig,
    population: Population,
    index: BlockingIndex,
    participants: list[Participant],
) -> None:
    """The roster asked at every organization back to back, as a client does, and each
    participant's names swapped with the next one's (a query the blocking index finds the
    same people for, screened differently), against a matcher without the cache."""
    cached = Matcher(population, index, config.match, screen_cache=64)
    uncached = Matcher(population, index, config.match, screen_cache=0)
    orgs = [org.id for org in config.orgs]
    queries = [parse_query(roster_patient(p.row)) for p in participants]
    swapped = [
        dataclasses.replace(q, families=other.families, givens=other.givens)
        for q, other in zip(queries, queries[1:] + queries[:1], strict=True)
    ]
    found = 0
    for query in (q for pair in zip(queries, swapped, strict=True) for q in pair):
        for org_id in orgs:
            answer = _answers(cached, org_id, query)
            assert answer == _answers(uncached, org_id, query)
            found += len(answer)
        assert cached.screened(query) == uncached.screened(query)
    assert found >= len(participants)  # the comparison was not between empty lists
    info = cached._screened.cache_info()
    assert info.misses <= 2 * len(participants)
    assert info.hits >= 2 * len(participants) * (len(orgs) - 1)
    assert uncached._screened.cache_info().currsize == 0


def test_a_query_differing_in_any_screened_field_is_screened_afresh(
    config: NetworkConfig, population: Population, index: BlockingIndex
) -> None:
    """Each variant changes one field the screen reads (birth date, surname, given name)
    and changes whom it lets through, so a cache key without that field would hand the
    variant the first query's people. A field it does not read shares the entry."""
    # Someone an unrelated surname and given name cannot reach, both known somewhere.
    person = next(p for p in population if population.orgs_of(p.index))
    stranger = next(
        p
        for p in population
        if surname_code(p.family) != surname_code(person.family)
        and _family_weight((p.family,), (person.family, person.maiden_name or person.family)) < 0
        and _given_weight((p.given,), person.given) < 0
        and p.given[:1] != person.given[:1]
        and abs(p.birth_date.year - person.birth_date.year) > 2
    )
    base = names_only((stranger.family,), (person.given,), person.birth_date, person.sex)
    nobody = dataclasses.replace(base, givens=(stranger.given,))  # no name of theirs
    pairs = {
        "given name": (base, nobody),
        "surname": (nobody, dataclasses.replace(nobody, families=(person.family,))),
        "second surname": (
            nobody,
            dataclasses.replace(nobody, families=(stranger.family, person.family)),
        ),
        "birth date": (base, dataclasses.replace(base, birth_date=stranger.birth_date)),
    }
    uncached = Matcher(population, index, config.match, screen_cache=0)
    assert person.index in uncached.screened(base)  # through the given name
    org_id = population.orgs_of(person.index)[0]
    for field, (first, second) in pairs.items():
        assert uncached.screened(first) != uncached.screened(second), field
        cached = Matcher(population, index, config.match)
        assert _answers(cached, org_id, first) == _answers(uncached, org_id, first), field
        assert cached.screened(second) == uncached.screened(second), field
        assert _answers(cached, org_id, second) == _answers(uncached, org_id, second), field
        assert cached._screened.cache_info().misses == 2, field

    # Address, telephone, sex and the like are scored per organization, not screened.
    cached = Matcher(population, index, config.match)
    cached.screened(base)
    elsewhere = dataclasses.replace(base, sex="other", zips=("99999",), phones=("5550100",))
    assert cached.screened(elsewhere) == uncached.screened(elsewhere)
    assert cached._screened.cache_info().hits == 1


def test_screen_cache_is_bounded(
    config: NetworkConfig, population: Population, index: BlockingIndex
) -> None:
    matcher = Matcher(population, index, config.match, screen_cache=8)
    start = dt.date(1970, 1, 1)
    for day in range(50):
        query = names_only(("Smith",), ("Ann",), start + dt.timedelta(days=day), "female")
        matcher.match("org-a", mrn_system("org-a"), query)
    assert matcher._screened.cache_info().currsize == 8


def names_only(
    families: tuple[str, ...], givens: tuple[str, ...], birth_date: dt.date, sex: str
) -> Query:
    """A query with names, birth date and sex, and nothing else."""
    return Query(
        families=families,
        givens=givens,
        middles=(),
        suffixes=(),
        birth_date=birth_date,
        sex=sex,
        lines=(),
        zips=(),
        phones=(),
        emails=(),
        ssn_last4="",
        identifiers=(),
    )
