"""The validation cache: the same verdicts and bodies as validating every time, bounded."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from ehrfetch.bench.normalize import RESEARCH_ID, ccda_inputs, synthetic_bundles
from ehrfetch.normalize import validation
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.fhir_bundle import NormalizedDocument, normalize_bundle
from ehrfetch.normalize.validation import (
    clear_validation_cache,
    validate_resource,
    validation_cache_size,
)
from support import require_ccda_examples

CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "id": "c1",
    "subject": {"reference": "Patient/P1"},
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
    "onsetDateTime": "2020-01-02",
}


@pytest.fixture(autouse=True)
def _cold_cache() -> Iterator[None]:
    clear_validation_cache()
    yield
    clear_validation_cache()


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every resource actually validated (not answered by the cache)."""
    seen: list[dict[str, Any]] = []
    real: Callable[[dict[str, Any]], str | None] = validation._validate_uncached

    def counting(resource: dict[str, Any]) -> str | None:
        seen.append(resource)
        return real(resource)

    monkeypatch.setattr(validation, "_validate_uncached", counting)
    return seen


def _as_data(document: NormalizedDocument) -> bytes:
    return orjson.dumps(
        [
            [
                [r.resource_type, r.fhir_id, r.dedup_key, r.body, r.source_id]
                for r in document.resources
            ],
            [[s.index, s.resource_type, s.reason] for s in document.skipped],
        ]
    )


def test_identical_resource_is_validated_once(validations: list[dict[str, Any]]) -> None:
    assert validate_resource(CONDITION) is None
    assert validate_resource(copy.deepcopy(CONDITION)) is None
    assert len(validations) == 1
    assert validation_cache_size() == 1


def test_cache_does_not_change_what_bundles_yield(validations: list[dict[str, Any]]) -> None:
    bundles = synthetic_bundles(6)
    cold = [
        _as_data(normalize_bundle(b.body, research_id=RESEARCH_ID, patient_id=b.patient_id))
        for b in bundles
    ]
    validated_cold = len(validations)
    assert validated_cold > 6 * 10
    warm = [
        _as_data(normalize_bundle(b.body, research_id=RESEARCH_ID, patient_id=b.patient_id))
        for b in bundles
    ]
    assert warm == cold
    assert len(validations) == validated_cold  # the second time, every verdict was cached


def test_cache_does_not_change_what_ccda_yields(validations: list[dict[str, Any]]) -> None:
    documents, sections = ccda_inputs(require_ccda_examples())
    clear_validation_cache()  # ccda_inputs normalizes each input once to sort them
    del validations[:]
    items = documents[:3] + sections[:10]
    cold = [
        _as_data(normalize_ccda(i.body, research_id=RESEARCH_ID, patient_id=i.patient_id))
        for i in items
    ]
    assert validations
    validated_cold = len(validations)
    warm = [
        _as_data(normalize_ccda(i.body, research_id=RESEARCH_ID, patient_id=i.patient_id))
        for i in items
    ]
    assert warm == cold
    assert len(validations) == validated_cold


def test_another_participants_same_fact_is_validated_for_them(
    validations: list[dict[str, Any]],
) -> None:
    bundle = synthetic_bundles(1)[0]
    first = normalize_bundle(bundle.body, research_id="R1", patient_id=bundle.patient_id)
    validated = len(validations)
    second = normalize_bundle(bundle.body, research_id="R2", patient_id=bundle.patient_id)
    # Ids and subjects differ by participant: different content, different digests.
    assert len(validations) == 2 * validated
    assert len(first.resources) == len(second.resources)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.update(status=12),
        lambda r: r.update(bogusField="x"),
        lambda r: r.pop("subject"),
        lambda r: r.update(onsetDateTime="2020-13-45"),
        lambda r: r["code"]["coding"][0].update(code=7.5),
    ],
)
def test_invalid_resource_is_refused_after_a_valid_one_was_cached(
    change: Callable[[dict[str, Any]], object],
) -> None:
    assert validate_resource(CONDITION) is None
    invalid = copy.deepcopy(CONDITION)
    change(invalid)
    problem = validate_resource(invalid)
    assert problem is not None and problem.startswith("invalid FHIR at ")
    assert validate_resource(invalid) == problem  # refused every time, not cached
    assert validation_cache_size() == 1


def test_invalid_entry_in_a_bundle_is_skipped_after_its_valid_twin() -> None:
    bundle = orjson.loads(synthetic_bundles(1)[0].body)
    patient_id = synthetic_bundles(1)[0].patient_id
    valid = normalize_bundle(orjson.dumps(bundle), research_id=RESEARCH_ID, patient_id=patient_id)
    assert valid.resources and not valid.skipped
    for entry in bundle["entry"]:
        entry["resource"]["bogusField"] = "x"  # Patient too: harmless, it is not kept
    broken = normalize_bundle(orjson.dumps(bundle), research_id=RESEARCH_ID, patient_id=patient_id)
    assert not broken.resources
    assert len(broken.skipped) == len(valid.resources)
    assert all("bogusField" in s.reason for s in broken.skipped)


def test_values_json_cannot_tell_apart_are_not_cached(validations: list[dict[str, Any]]) -> None:
    # orjson writes NaN as null: a NaN-valued body must not share a digest with anything.
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "x"},
        "valueQuantity": {"value": float("nan")},
    }
    first = validate_resource(observation)
    assert validate_resource(observation) == first
    assert len(validations) == 2
    assert validation_cache_size() == 0
    # Neither are bodies orjson cannot write as plain JSON (here an int beyond 64 bits).
    big = copy.deepcopy(CONDITION) | {"extension": [{"url": "u", "valueInteger": 2**70}]}
    verdict = validate_resource(big)
    assert validate_resource(big) == verdict
    assert len(validations) == 4
    assert validation_cache_size() == 0


def test_cache_is_bounded_and_forgets_the_least_recently_used(
    monkeypatch: pytest.MonkeyPatch, validations: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(validation, "CACHE_SIZE", 3)
    resources = [copy.deepcopy(CONDITION) | {"id": f"c{n}"} for n in range(5)]
    for resource in resources[:3]:
        assert validate_resource(resource) is None
    assert validate_resource(resources[0]) is None  # a hit: c0 is now the most recent
    assert len(validations) == 3
    for resource in resources[3:]:
        assert validate_resource(resource) is None
    assert validation_cache_size() == 3
    del validations[:]
    assert validate_resource(resources[0]) is None  # kept: used recently
    assert validations == []
    assert validate_resource(resources[1]) is None  # evicted: validated again
    assert validations == [resources[1]]
    assert validation.CACHE_SIZE == 3 and validation_cache_size() == 3


def test_default_bound() -> None:
    assert validation.CACHE_SIZE == 50_000


def test_threads_share_the_cache_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "CACHE_SIZE", 50)
    resources = [copy.deepcopy(CONDITION) | {"id": f"c{n}"} for n in range(80)]
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for n in range(200):
                assert validate_resource(resources[(n * 7 + offset) % len(resources)]) is None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert validation_cache_size() == 50
