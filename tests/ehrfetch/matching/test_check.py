"""match-check: the NDJSON contract, bad lines included."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from ehrfetch.matching.check import MAX_LINE_BYTES, run_match_check
from ehrfetch.matching.policy import MatchPolicy


def patient(
    pid: str | None, given: str = "Robert", family: str = "Castellano", **extra: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [{"use": "official", "family": family, "given": [given, "Lee"]}],
        "gender": "male",
        "birthDate": "1961-07-04",
        "address": [
            {
                "line": ["12 Harbor View Rd"],
                "city": "Portland",
                "state": "ME",
                "postalCode": "04101",
            }
        ],
        "telecom": [{"system": "phone", "value": "(207) 555-0134"}],
        **extra,
    }
    if pid is not None:
        resource["id"] = pid
    return resource


def line(participant: dict[str, Any], *candidates: Any) -> str:
    return json.dumps({"participant": participant, "candidates": list(candidates)})


def entry(resource: dict[str, Any], score: Any = 0.91, grade: Any = "probable") -> dict[str, Any]:
    return {"resource": resource, "score": score, "grade": grade}


def run(lines: list[Any], **kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
    out = io.StringIO()
    bad = run_match_check(lines, out, **kwargs)
    return bad, [json.loads(x) for x in out.getvalue().splitlines()]


def test_one_line_per_input_in_order() -> None:
    lines = [
        line(patient("RS-1"), entry(patient("p1"))),
        line(patient("RS-2"), entry(patient("p2", given="Michael")), entry(patient("p3"))),
        line(
            patient("RS-3"),
            entry(patient("p4", given="Thi", family="Nguyen", birthDate="1990-01-01")),
        ),
        line(patient("RS-4")),
    ]
    bad, out = run(lines)
    assert bad == 0
    assert [(o["id"], o["decision"], o["candidate"]) for o in out] == [
        ("RS-1", "accept", 0),
        ("RS-2", "accept", 1),
        ("RS-3", "reject", None),
        ("RS-4", "reject", None),
    ]
    assert list(out[0]) == ["id", "decision", "candidate", "reasons"]
    assert "given:exact" in out[0]["reasons"]
    assert out[3]["reasons"] == ["no_candidates"]


def test_twins_and_ambiguity_in_a_deck() -> None:
    twin = entry(patient("p9", given="Michael"))
    _, out = run(
        [
            line(patient("RS-1"), twin),
            line(patient("RS-2"), entry(patient("p1")), entry(patient("p2"))),
        ]
    )
    assert out[0]["decision"] == "reject" and "veto:twin_household" in out[0]["reasons"]
    assert out[1]["decision"] == "review" and "ambiguous:multiple_candidates" in out[1]["reasons"]


def test_bytes_lines_blank_lines_and_missing_score_or_grade() -> None:
    lines = [
        b"\n",
        line(patient("RS-1"), {"resource": patient("p1")}).encode(),
        "   \n",
        line(patient("RS-2"), entry(patient("p2"), score=None, grade=None)),
    ]
    bad, out = run(lines)
    assert bad == 0 and [o["decision"] for o in out] == ["accept", "accept"]


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    (b"\xff\xfe{}", "not valid JSON"),
    (json.dumps({"candidates": []}), "participant is missing"),
    (
        json.dumps({"participant": {"resourceType": "Person", "id": "x"}, "candidates": []}),
        "participant.resourceType",
    ),
    (line(patient(None)), "participant.id"),
    (json.dumps({"participant": patient("RS-1")}), "candidates is missing"),
    (line(patient("RS-1"), "nope"), "candidates[0] is not a JSON object"),
    (line(patient("RS-1"), {"score": 1}), "candidates[0].resource"),
    (
        line(patient("RS-1"), entry(patient("p")), entry(patient("p"), score=1.5)),
        "candidates[1].score",
    ),
    (line(patient("RS-1"), entry(patient("p"), score="high")), "candidates[0].score"),
    (line(patient("RS-1"), entry(patient("p"), score=True)), "candidates[0].score"),
    (line(patient("RS-1"), entry(patient("p"), grade=3)), "candidates[0].grade"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_LINES)
def test_a_bad_line_is_reported_and_the_rest_goes_on(raw: str | bytes, reason: str) -> None:
    good = line(patient("RS-9"), entry(patient("p1")))
    bad, out = run([good, raw, good])
    assert bad == 1
    assert out[0]["id"] == out[2]["id"] == "RS-9"
    assert out[1]["line"] == 2 and reason in out[1]["error"]


def test_error_reasons_carry_no_values() -> None:
    raw = line(patient("RS-1", given="Zebulon"), entry(patient("p", family="Quixote"), score=7))
    _, out = run(['{"participant": "Zebulon Quixote 1961-07-04"', raw])
    for error in out:
        assert not any(value in error["error"] for value in ("Zebulon", "Quixote", "1961"))


def test_errors_to_a_separate_stream() -> None:
    out, err = io.StringIO(), io.StringIO()
    bad = run_match_check(["{", line(patient("RS-1"), entry(patient("p1")))], out, err=err)
    assert bad == 1
    assert json.loads(err.getvalue()) == {"line": 1, "error": "not valid JSON (at character 1)"}
    assert json.loads(out.getvalue())["decision"] == "accept"


def test_oversized_line() -> None:
    bad, out = run(["x" * (MAX_LINE_BYTES + 1)])
    assert bad == 1 and "longer than" in out[0]["error"]


def test_policy_is_passed_through() -> None:
    _, out = run([line(patient("RS-1"), entry(patient("p1")))], policy=MatchPolicy(accept=99))
    assert out[0]["decision"] == "review"
