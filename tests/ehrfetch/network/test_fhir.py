"""The searchset shortcut of _fhir: the same verdict as validating the whole Bundle.

``searchset`` validates a plain searchset's own elements by hand and only its entry
resources with their models; anything it does not recognize goes to the whole-Bundle
validation. Each case below compares the two on one answer: both accept it, or both
refuse it with the same message (or, for what fhir.resources itself fails on, the
same exception).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from ehrfetch.errors import InvalidResponse
from ehrfetch.network import _fhir

GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
BASE = "http://127.0.0.1:8000/orgs/org-1/fhir"

PATIENT = {
    "resourceType": "Patient",
    "id": "1177406763",
    "identifier": [{"system": "urn:mock:mrn", "value": "1113200674"}],
    "name": [{"use": "official", "family": "Castellano", "given": ["Robert"]}],
    "gender": "male",
    "birthDate": "1961-07-04",
}
DOCUMENT = {
    "resourceType": "DocumentReference",
    "id": "org-1.1177406763.0",
    "status": "current",
    "subject": {"reference": "Patient/1177406763"},
    "date": "2015-05-02T16:35:00Z",
    "content": [
        {"attachment": {"contentType": "text/plain", "url": f"{BASE}/Binary/1", "size": 5}}
    ],
}
MATCH: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "searchset",
    "total": 1,
    "link": [{"relation": "self", "url": f"{BASE}/Patient/$match"}],
    "entry": [
        {
            "fullUrl": f"{BASE}/Patient/1177406763",
            "resource": PATIENT,
            "search": {
                "extension": [{"url": GRADE_URL, "valueCode": "certain"}],
                "mode": "match",
                "score": 0.9375,
            },
        },
        {
            "resource": {"resourceType": "OperationOutcome", "issue": []},
            "search": {"mode": "outcome"},
        },
    ],
}
PAGE: dict[str, Any] = {
    "resourceType": "Bundle",
    "type": "searchset",
    "total": 3,
    "link": [
        {"relation": "self", "url": f"{BASE}/DocumentReference?patient=1&_offset=0"},
        {"relation": "next", "url": f"{BASE}/DocumentReference?patient=1&_offset=2"},
    ],
    "entry": [
        {
            "fullUrl": f"{BASE}/DocumentReference/d",
            "resource": DOCUMENT,
            "search": {"mode": "match"},
        }
    ],
}


def changed(bundle: dict[str, Any], change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    out = copy.deepcopy(bundle)
    change(out)
    return out


def invalid(message: str) -> InvalidResponse:
    return InvalidResponse(message, organization_id="alpha", url=f"{BASE}/x")


def verdict(check: Callable[[dict[str, Any]], object], data: dict[str, Any]) -> str:
    try:
        check(copy.deepcopy(data))
    except InvalidResponse as error:
        return f"refused: {error}"
    except Exception as error:  # fhir.resources' own failures must stay what they were
        return f"raised {type(error).__name__}"
    return "accepted"


def whole_bundle(data: dict[str, Any]) -> None:
    """What ``searchset`` did before the shortcut: the Bundle model over everything."""
    _fhir.validate(data, "Bundle", invalid)
    if data.get("type") != "searchset":
        raise invalid("expected a searchset Bundle")


def with_shortcut(data: dict[str, Any]) -> None:
    _fhir.searchset(orjson.dumps(data), invalid)


def entry(n: int, **changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda b: b["entry"][n].update(changes)


def search(**changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda b: b["entry"][0]["search"].update(changes)


def grade(**changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda b: b["entry"][0]["search"]["extension"][0].update(changes)


def link(**changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda b: b["link"][0].update(changes)


def resource(**changes: Any) -> Callable[[dict[str, Any]], object]:
    return lambda b: b["entry"][0]["resource"].update(changes)


CASES: dict[str, tuple[dict[str, Any], Callable[[dict[str, Any]], object]]] = {
    "match": (MATCH, lambda b: None),
    "page": (PAGE, lambda b: None),
    "empty": (MATCH, lambda b: (b.pop("entry"), b.pop("link"), b.pop("total"))),
    "id": (MATCH, lambda b: b.update(id="b1")),
    "bad-id": (MATCH, lambda b: b.update(id="b 1")),
    "meta": (MATCH, lambda b: b.update(meta={"lastUpdated": "2025-01-01T00:00:00Z"})),
    "unknown-element": (MATCH, lambda b: b.update(color="red")),
    "primitive-extension": (MATCH, lambda b: b.update(_total={"extension": []})),
    "collection": (MATCH, lambda b: b.update(type="collection")),
    "no-type": (MATCH, lambda b: b.pop("type")),
    "type-list": (MATCH, lambda b: b.update(type=["searchset"])),
    "total-negative": (MATCH, lambda b: b.update(total=-1)),
    "total-huge": (MATCH, lambda b: b.update(total=2**31)),
    "total-bool": (MATCH, lambda b: b.update(total=True)),
    "total-text": (MATCH, lambda b: b.update(total="several")),
    "total-float": (MATCH, lambda b: b.update(total=1.0)),
    "total-null": (MATCH, lambda b: b.update(total=None)),
    "link-empty": (MATCH, lambda b: b.update(link=[])),
    "link-null": (MATCH, lambda b: b.update(link=[None])),
    "link-object": (MATCH, lambda b: b.update(link={"relation": "self", "url": "x"})),
    "link-no-url": (MATCH, lambda b: b["link"][0].pop("url")),
    "link-relation-odd": (MATCH, link(relation="alternate")),
    "link-relation-blank": (MATCH, link(relation=" ")),
    "link-relation-list": (MATCH, link(relation=["self"])),
    "link-url-space": (MATCH, link(url="http://a.test/a b")),
    "link-url-empty": (MATCH, link(url="")),
    "link-url-number": (MATCH, link(url=7)),
    "link-url-unicode": (MATCH, link(url="http://a.test/é")),
    "link-extra": (MATCH, link(id="l1")),
    "entry-empty": (MATCH, lambda b: b.update(entry=[])),
    "entry-null": (MATCH, lambda b: b.update(entry=[None])),
    "entry-object": (MATCH, lambda b: b.update(entry={})),
    "entry-empty-object": (MATCH, lambda b: b.update(entry=[{}])),
    "entry-extra": (MATCH, entry(0, request={"method": "GET", "url": "x"})),
    "entry-no-resource": (MATCH, lambda b: b["entry"][0].pop("resource")),
    "full-url-space": (MATCH, entry(0, fullUrl="a b")),
    "full-url-number": (MATCH, entry(0, fullUrl=1)),
    "search-empty": (MATCH, entry(0, search={})),
    "search-null": (MATCH, entry(0, search=None)),
    "search-extra": (MATCH, search(id="s")),
    "mode-odd": (MATCH, search(mode="best")),
    "mode-list": (MATCH, search(mode=["match"])),
    "score-int": (MATCH, search(score=1)),
    "score-negative": (MATCH, search(score=-0.5)),
    "score-tiny": (MATCH, search(score=1e-7)),
    "score-huge": (MATCH, search(score=1e300)),
    "score-bool": (MATCH, search(score=True)),
    "score-text": (MATCH, search(score="0.5")),
    "score-null": (MATCH, search(score=None)),
    "extension-empty": (MATCH, search(extension=[])),
    "extension-null": (MATCH, search(extension=[None])),
    "extension-other-url": (MATCH, grade(url="http://example.org/x")),
    "extension-no-url": (MATCH, lambda b: b["entry"][0]["search"]["extension"][0].pop("url")),
    "grade-odd": (MATCH, grade(valueCode="maybe")),
    "grade-space": (MATCH, grade(valueCode="certain ")),
    "grade-list": (MATCH, grade(valueCode=["certain"])),
    "grade-two-values": (MATCH, grade(valueString="certain")),
    "resource-list": (MATCH, entry(0, resource=[PATIENT])),
    "resource-null": (MATCH, entry(0, resource=None)),
    "resource-basic": (MATCH, entry(0, resource={"resourceType": "Basic", "code": {}})),
    "resource-type-list": (MATCH, resource(resourceType=["Patient"])),
    "resource-type-unknown": (MATCH, resource(resourceType="Nonsense")),
    "resource-birth-date": (MATCH, resource(birthDate="1961-13-45")),
    "resource-gender": (MATCH, resource(gender=["male"])),
    "resource-unknown-element": (MATCH, resource(color="red")),
    "resource-name-null": (MATCH, resource(name=[None])),
    "outcome-bad": (MATCH, entry(1, resource={"resourceType": "OperationOutcome"})),
    "two-problems": (
        MATCH,
        lambda b: (b.update(total=-1), b["entry"][0]["resource"].update(birthDate="x")),
    ),
    "document-status": (PAGE, lambda b: b["entry"][0]["resource"].update(status="gone")),
    "document-size": (
        PAGE,
        lambda b: b["entry"][0]["resource"]["content"][0]["attachment"].update(size=-1),
    ),
}


@pytest.mark.parametrize(("bundle", "change"), CASES.values(), ids=CASES.keys())
def test_the_shortcut_gives_the_whole_bundle_verdict(
    bundle: dict[str, Any], change: Callable[[dict[str, Any]], object]
) -> None:
    data = changed(bundle, change)
    assert verdict(with_shortcut, data) == verdict(whole_bundle, data)


@pytest.mark.parametrize(("bundle", "change"), CASES.values(), ids=CASES.keys())
def test_what_the_shortcut_accepts_the_bundle_model_accepts(
    bundle: dict[str, Any], change: Callable[[dict[str, Any]], object]
) -> None:
    data = changed(bundle, change)
    if _fhir._valid_plain_searchset(copy.deepcopy(data)):
        assert verdict(whole_bundle, data) == "accepted"


@pytest.mark.parametrize("bundle", [MATCH, PAGE], ids=["match", "page"])
def test_plain_answers_take_the_shortcut(bundle: dict[str, Any]) -> None:
    assert _fhir._valid_plain_searchset(copy.deepcopy(bundle))


def test_the_bundle_is_not_changed() -> None:
    data = copy.deepcopy(MATCH)
    assert _fhir._valid_plain_searchset(data)
    assert data == MATCH


def test_an_entry_of_an_unknown_resource_type_is_a_bad_answer_not_a_crash() -> None:
    # fhir.resources raises KeyError for a resourceType it does not know: the answer is
    # refused like any invalid one (the organization fails, the lookup goes on), and the
    # message does not quote what the site sent.
    data = changed(MATCH, resource(resourceType="Nonsense"))
    with pytest.raises(InvalidResponse) as caught:
        _fhir.searchset(orjson.dumps(data), invalid)
    assert "KeyError" in str(caught.value)
    assert "Nonsense" not in str(caught.value)
