"""``ehrfetch match-check FILE``: the match decision offline, NDJSON in and out.

Each input line is one participant at one organization::

    {"participant": <FHIR Patient, research id in "id">,
     "candidates": [{"resource": <FHIR Patient>, "score": <0..1>, "grade": <code>}, ...]}

and gives one output line::

    {"id": <research id>, "decision": "accept"|"review"|"reject",
     "candidate": <index into candidates, or null>, "reasons": [<token>, ...]}

``candidate`` is the accepted candidate, or the one to look at first for review; null
for reject. A line that cannot be read gives ``{"line": n, "error": "<reason>"}``
instead (on ``err`` when given, else on ``out``) and the rest goes on. Error reasons name
what is wrong, never the values: a deck is full of demographics.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import orjson

from ehrfetch.matching.person import MatchPerson
from ehrfetch.matching.policy import Candidate, MatchDecision, MatchPolicy, decide

# A deck line holds a participant and a handful of candidates; anything far larger is not
# a deck line, and parsing it would only cost memory.
MAX_LINE_BYTES = 1024 * 1024


class DeckLineError(ValueError):
    """A deck line that cannot be decided; the message is safe to print."""


def run_match_check(
    lines: Iterable[bytes | str],
    out: TextIO,
    policy: MatchPolicy | None = None,
    *,
    err: TextIO | None = None,
) -> int:
    """Decide every line of a deck; returns the number of lines that could not be read.
    Blank lines are skipped (and counted in line numbers, as an editor counts them)."""
    bad = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            participant, candidates = parse_line(raw)
            decision = decide(participant, candidates, policy)
        except DeckLineError as exc:
            bad += 1
            (err or out).write(_dumps({"line": number, "error": str(exc)}))
            continue
        out.write(_dumps(decision_line(participant.id, decision)))
    return bad


def decision_line(research_id: str | None, decision: MatchDecision) -> dict[str, Any]:
    return {
        "id": research_id,
        "decision": decision.decision.value,
        "candidate": decision.index,
        "reasons": list(decision.reasons),
    }


def parse_line(raw: bytes | str) -> tuple[MatchPerson, list[Candidate]]:
    """One deck line as the participant and its candidates; raises DeckLineError."""
    if len(raw) > MAX_LINE_BYTES:
        raise DeckLineError(f"line is longer than {MAX_LINE_BYTES} bytes")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # orjson's message quotes the input; say where instead.
        raise DeckLineError(f"not valid JSON (at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise DeckLineError("not a JSON object")
    participant = _patient(value.get("participant"), "participant")
    research_id = participant.get("id")
    if not isinstance(research_id, str) or not research_id.strip():
        raise DeckLineError("participant.id (the research id) is missing")
    raw_candidates = value.get("candidates")
    if not isinstance(raw_candidates, list):
        raise DeckLineError("candidates is missing or not a list")
    candidates = [_candidate(entry, i) for i, entry in enumerate(raw_candidates)]
    person = MatchPerson.from_fhir_patient(participant)
    return person, candidates


def _patient(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise DeckLineError(f"{where} is missing or not a JSON object")
    if value.get("resourceType") != "Patient":
        raise DeckLineError(f"{where}.resourceType is not Patient")
    return value


def _candidate(entry: object, index: int) -> Candidate:
    where = f"candidates[{index}]"
    if not isinstance(entry, dict):
        raise DeckLineError(f"{where} is not a JSON object")
    resource = _patient(entry.get("resource"), f"{where}.resource")
    score = entry.get("score")
    if score is not None and (
        isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1
    ):
        raise DeckLineError(f"{where}.score is not a number from 0 to 1")
    grade = entry.get("grade")
    if grade is not None and not isinstance(grade, str):
        raise DeckLineError(f"{where}.grade is not a string")
    return Candidate(
        MatchPerson.from_fhir_patient(resource),
        None if score is None else float(score),
        grade,
    )


def _dumps(value: Mapping[str, Any]) -> str:
    return orjson.dumps(value).decode() + "\n"
