"""The decide stage: is this network patient really the participant?

Public API::

    MatchPerson.from_record(record) / MatchPerson.from_fhir_patient(resource)
    decide(participant, candidates, policy=MatchPolicy()) -> MatchDecision
    run_match_check(lines, out, policy=MatchPolicy(), err=None) -> int

Modules: ``normalize`` (names, nicknames, typos, addresses, phones), ``compare`` (one
comparator per field, each giving a level and a reason token), ``policy`` (weights,
thresholds, vetoes, the decision), ``check`` (the offline NDJSON contract). See
docs/matching.md.
"""

from ehrfetch.matching.check import run_match_check
from ehrfetch.matching.person import MatchPerson
from ehrfetch.matching.policy import (
    Candidate,
    CandidateDecision,
    CandidateLike,
    MatchDecision,
    MatchPolicy,
    decide,
)

__all__ = [
    "Candidate",
    "CandidateDecision",
    "CandidateLike",
    "MatchDecision",
    "MatchPerson",
    "MatchPolicy",
    "decide",
    "run_match_check",
]
