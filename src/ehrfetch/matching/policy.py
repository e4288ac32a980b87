"""Accept, reject or review: the decision on one organization's candidates for one
participant.

**Evidence.** Every field comparison (`compare.py`) gives a level, and each level a
weight in bits, in the spirit of Fellegi-Sunter's log2(m/u) (m: how often the level is
seen for the same person, u: for two different people), but with u taken from the
people who get confused in practice (namesakes, twins, household members) rather than
from random pairs, which is why a birth date weighs 10 bits here and not 15. The weights
are summed into the candidate's score. Defaults (``DEFAULT_WEIGHTS``; levels not listed,
"missing" among them, weigh 0):

    given     exact +7   nickname +5   typo +4   partial +3   initial +1
              middle_name +1   swapped +5   conflict -8
    family    exact +6   previous_name +5   compound +4.5   typo +4   swapped +4
              conflict -4  (surnames change at marriage: a weaker no than a given name's)
    middle    exact +1.5   initial +0.5   conflict -2.5
    suffix    agree +1   conflict -6
    dob       exact +10   transposed +7   near +4.5   conflict -12
    sex       agree +0.5   conflict -6
    address   current +6   history +5   street +2   locality +1.5   conflict -2
    phone     agree +6   conflict -3
    email     agree +4   conflict -0.5
    ssn       agree +7   conflict -10
    grade     certain +1   probable +0.5   possible 0   certainly_not -2

The network's grade is advice from an index with its own blind spots (it grades a twin
"probable"), so it weighs no more than a sex agreement and never passes a gate; its
numeric score is not used at all.

**Thresholds** (`MatchPolicy`): a score >= ``accept`` (24) may accept, >= ``review`` (10)
is review, below is reject. A full name, an exact birth date and sex make 23.5: never
enough alone, because namesakes share exactly that. An accept must also pass the gates;
a failed gate turns it into review, with ``gate:<name>`` among the reasons:

* ``gate:given``, ``gate:dob``, ``gate:family``: the given name agrees (exact, nickname,
  typo or swapped); the birth date agrees (exact, transposed or near); the surname agrees
  in some form, unless the phone or the SSN's last four do (a married name nobody told
  the program about).
* ``gate:locator``: the address (current or history), the phone or the SSN agrees, or
  the address is in the same town (locality) and the middle name or the e-mail agrees
  too. E-mail alone is not enough: families share addresses and people recycle them.
* ``gate:phone_conflict``: both sides have phones and none agrees, and neither the SSN
  nor the e-mail does. At a shared address that is the father or the son.

**Vetoes** (never accept):

* ``veto:twin_household`` (reject): same surname, birth date and address or phone, but a
  given name that is no nickname, typo or initial of the participant's: the twin, the
  sibling or the parent, never the participant.
* ``veto:household_fuzzy_given`` (review at most): the same household pattern with a
  given name that agrees only loosely, and a disagreement in something a household does
  not share (middle name, sex, SSN, e-mail).
* ``veto:sex``, ``veto:suffix`` (Jr vs Sr), ``veto:ssn``: a conflict there caps the
  candidate at review, whatever the rest says (the weights also pull it down).
* ``gate:generation`` (review at most): a generational suffix on one side only and no
  phone, e-mail or SSN agreeing: a Jr and a Sr share everything else.

**Several candidates at one organization.** Only one network patient can be the
participant. If more than one candidate would be accepted, or another candidate scores
within ``margin`` (6 bits) of the one that would, all of them go to review
(``ambiguous:multiple_candidates``). A twin-vetoed candidate is explained, not a rival.
When one is accepted, candidates that would have gone to review are rejected
(``other:better_candidate``). Entries with the same patient id are one patient and get
the decision of the best of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from ehrfetch.matching.compare import (
    ADDRESS_AGREES,
    DATE_AGREES,
    FAMILY_AGREES,
    NAME_AGREES,
    Comparison,
    Field,
    Level,
    compare,
    compare_given,
    compare_grade,
)
from ehrfetch.matching.person import MatchPerson
from ehrfetch.store.tables import LinkDecision

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "given:exact": 7.0,
        "given:nickname": 5.0,
        "given:typo": 4.0,
        "given:partial": 3.0,
        "given:initial": 1.0,
        "given:middle_name": 1.0,
        "given:swapped": 5.0,
        "given:conflict": -8.0,
        "family:exact": 6.0,
        "family:previous_name": 5.0,
        "family:compound": 4.5,
        "family:typo": 4.0,
        "family:swapped": 4.0,
        "family:conflict": -4.0,
        "middle:exact": 1.5,
        "middle:initial": 0.5,
        "middle:conflict": -2.5,
        "suffix:agree": 1.0,
        "suffix:conflict": -6.0,
        "dob:exact": 10.0,
        "dob:transposed": 7.0,
        "dob:near": 4.5,
        "dob:conflict": -12.0,
        "sex:agree": 0.5,
        "sex:conflict": -6.0,
        "address:current": 6.0,
        "address:history": 5.0,
        "address:street": 2.0,
        "address:locality": 1.5,
        "address:conflict": -2.0,
        "phone:agree": 6.0,
        "phone:conflict": -3.0,
        "email:agree": 4.0,
        "email:conflict": -0.5,
        "ssn:agree": 7.0,
        "ssn:conflict": -10.0,
        "grade:certain": 1.0,
        "grade:probable": 0.5,
        "grade:certainly_not": -2.0,
    }
)

# Reason tokens the policy adds to the comparisons' own.
VETO_TWIN_HOUSEHOLD = "veto:twin_household"
VETO_HOUSEHOLD_FUZZY_GIVEN = "veto:household_fuzzy_given"
VETO_SEX = "veto:sex"
VETO_SUFFIX = "veto:suffix"
VETO_SSN = "veto:ssn"
VETO_HOUSEMATE = "veto:housemate_in_cohort"
GATE_GIVEN = "gate:given"
GATE_FAMILY = "gate:family"
GATE_BIRTH_DATE = "gate:dob"
GATE_LOCATOR = "gate:locator"
GATE_GENERATION = "gate:generation"
GATE_PHONE = "gate:phone_conflict"
AMBIGUOUS = "ambiguous:multiple_candidates"
BEATEN = "other:better_candidate"
NO_CANDIDATES = "no_candidates"
POLICY_REASONS = frozenset(
    {
        VETO_TWIN_HOUSEHOLD,
        VETO_HOUSEHOLD_FUZZY_GIVEN,
        VETO_HOUSEMATE,
        VETO_SEX,
        VETO_SUFFIX,
        VETO_SSN,
        GATE_GIVEN,
        GATE_FAMILY,
        GATE_BIRTH_DATE,
        GATE_LOCATOR,
        GATE_GENERATION,
        GATE_PHONE,
        AMBIGUOUS,
        BEATEN,
        NO_CANDIDATES,
    }
)

_FUZZY_GIVEN = frozenset(
    {Level.NICKNAME, Level.TYPO, Level.PARTIAL, Level.INITIAL, Level.MIDDLE_NAME}
)


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """Thresholds and weights; the defaults are documented in this module's docstring."""

    accept: float = 24.0
    review: float = 10.0
    margin: float = 6.0
    weights: Mapping[str, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)

    def __post_init__(self) -> None:
        if not self.review <= self.accept:
            raise ValueError("the review threshold must not exceed the accept threshold")
        if self.margin < 0:
            raise ValueError("the ambiguity margin must not be negative")


class CandidateLike(Protocol):
    """What `decide` reads of a candidate: the person, and the network's score and grade
    (either may be None)."""

    @property
    def person(self) -> MatchPerson: ...

    @property
    def score(self) -> float | None: ...

    @property
    def grade(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """One $match entry: the candidate, its network score (0..1) and match-grade code."""

    person: MatchPerson
    score: float | None = None
    grade: str | None = None


@dataclass(frozen=True, slots=True)
class CandidateDecision:
    index: int
    decision: LinkDecision
    score: float
    """Our evidence in bits (not the network's score)."""
    reasons: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class MatchDecision:
    """The decision for one participant at one organization.

    ``index`` is the accepted candidate for accept, the best candidate to look at for
    review, and None for reject. ``reasons`` are that candidate's (plus the policy's).
    """

    decision: LinkDecision
    index: int | None
    reasons: tuple[str, ...]
    candidates: tuple[CandidateDecision, ...]


def evaluate(
    participant: MatchPerson,
    candidate: MatchPerson,
    grade: str | None = None,
    policy: MatchPolicy | None = None,
    *,
    index: int = 0,
    housemates: Sequence[str] = (),
) -> CandidateDecision:
    """One candidate on its own: score, vetoes, gates and the decision they lead to.

    ``housemates``: given names of other participants of the program who share this
    one's surname and address or phone (a twin, a parent or child). Their records at a
    site look like this participant's; when the candidate's given name agrees with a
    housemate's at least as well as with the participant's (which agrees only loosely),
    the candidate is more likely the housemate, and it is not accepted without an
    identifier of the person's own (e-mail, SSN, full middle name).
    """
    policy = policy or DEFAULT_POLICY
    comparisons = (*compare(participant, candidate), Comparison(Field.GRADE, compare_grade(grade)))
    level = {c.field: c.level for c in comparisons}
    score = round(sum(policy.weights.get(c.reason, 0.0) for c in comparisons), 3)
    reject, caps = _vetoes(level)
    if housemates and _housemate_doubt(level, candidate, housemates):
        caps += (VETO_HOUSEMATE,)
    gates = _gates(level)
    reasons = tuple(c.reason for c in comparisons) + reject + caps
    if reject or score < policy.review:
        decision = LinkDecision.REJECT
    elif score >= policy.accept and not caps and not gates:
        decision = LinkDecision.ACCEPT
    else:
        decision = LinkDecision.REVIEW
        if score >= policy.accept:
            reasons += gates  # say what stood between this candidate and an accept
    return CandidateDecision(index, decision, score, reasons)


def _vetoes(level: Mapping[Field, Level]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(reject vetoes, review caps)."""
    given = level[Field.GIVEN]
    household = (
        level[Field.FAMILY] in FAMILY_AGREES
        and level[Field.BIRTH_DATE] in DATE_AGREES
        and (level[Field.ADDRESS] in ADDRESS_AGREES or level[Field.PHONE] is Level.AGREE)
    )
    if household and given is Level.CONFLICT:
        return (VETO_TWIN_HOUSEHOLD,), ()
    caps: list[str] = []
    individual_conflict = any(
        level[f] is Level.CONFLICT for f in (Field.MIDDLE, Field.SEX, Field.SSN, Field.EMAIL)
    )
    if household and given in _FUZZY_GIVEN and individual_conflict:
        caps.append(VETO_HOUSEHOLD_FUZZY_GIVEN)
    if level[Field.SEX] is Level.CONFLICT:
        caps.append(VETO_SEX)
    if level[Field.SUFFIX] is Level.CONFLICT:
        caps.append(VETO_SUFFIX)
    if level[Field.SSN] is Level.CONFLICT:
        caps.append(VETO_SSN)
    if level[Field.SUFFIX] is Level.ONE_SIDED and not any(
        level[f] is Level.AGREE for f in (Field.PHONE, Field.EMAIL, Field.SSN)
    ):
        caps.append(GATE_GENERATION)
    return (), tuple(caps)


_GIVEN_RANK = (Level.EXACT, Level.NICKNAME, Level.TYPO, Level.PARTIAL, Level.INITIAL)


def _housemate_doubt(
    level: Mapping[Field, Level], candidate: MatchPerson, housemates: Sequence[str]
) -> bool:
    ours = level[Field.GIVEN]
    if ours not in _FUZZY_GIVEN or ours not in _GIVEN_RANK:
        return False
    if (
        level[Field.EMAIL] is Level.AGREE
        or level[Field.SSN] is Level.AGREE
        or level[Field.MIDDLE] is Level.EXACT
    ):
        return False
    given = candidate.name.given if candidate.name else None
    for other in housemates:
        theirs = compare_given(other, given)
        if theirs in _GIVEN_RANK and _GIVEN_RANK.index(theirs) <= _GIVEN_RANK.index(ours):
            return True
    return False


def _gates(level: Mapping[Field, Level]) -> tuple[str, ...]:
    ssn_agrees = level[Field.SSN] is Level.AGREE
    phone_agrees = level[Field.PHONE] is Level.AGREE
    failed: list[str] = []
    if level[Field.GIVEN] not in NAME_AGREES:
        failed.append(GATE_GIVEN)
    if level[Field.FAMILY] not in FAMILY_AGREES and not (ssn_agrees or phone_agrees):
        failed.append(GATE_FAMILY)
    if level[Field.BIRTH_DATE] not in DATE_AGREES:
        failed.append(GATE_BIRTH_DATE)
    # Same town, other street: a move one side has not heard of, or a namesake who lives
    # in the town the participant gave. Only a locator when the middle name or the e-mail
    # agrees too (namesakes share name and birth date, rarely those).
    locality = level[Field.ADDRESS] is Level.LOCALITY and (
        level[Field.MIDDLE] in (Level.EXACT, Level.INITIAL) or level[Field.EMAIL] is Level.AGREE
    )
    if not (level[Field.ADDRESS] in ADDRESS_AGREES or phone_agrees or ssn_agrees or locality):
        failed.append(GATE_LOCATOR)
    if level[Field.PHONE] is Level.CONFLICT and not (
        ssn_agrees or level[Field.EMAIL] is Level.AGREE
    ):
        # Someone else's number at the same address is the father or the son with the
        # same name (and a birth date mixed up by the clinic), until an identifier of the
        # person's own says otherwise.
        failed.append(GATE_PHONE)
    return tuple(failed)


def decide(
    participant: MatchPerson,
    candidates: Sequence[CandidateLike],
    policy: MatchPolicy | None = None,
    *,
    housemates: Sequence[str] = (),
) -> MatchDecision:
    """Decide one organization's candidates for one participant (see ``evaluate``)."""
    policy = policy or DEFAULT_POLICY
    if not candidates:
        return MatchDecision(LinkDecision.REJECT, None, (NO_CANDIDATES,), ())
    evaluated = [
        evaluate(participant, c.person, c.grade, policy, index=i, housemates=housemates)
        for i, c in enumerate(candidates)
    ]
    # One network patient listed twice is still one patient: keep the best entry per id.
    keep: dict[str, CandidateDecision] = {}
    same_as: dict[int, str] = {}
    for entry, candidate in zip(evaluated, candidates, strict=True):
        key = candidate.person.id or f"#{entry.index}"
        same_as[entry.index] = key
        held = keep.get(key)
        if held is None or entry.score > held.score:
            keep[key] = entry
    distinct = sorted(keep.values(), key=lambda e: (-e.score, e.index))
    final = {e.index: e for e in distinct}
    chosen, overall = _choose(distinct, policy, final)
    for entry in evaluated:
        if entry.index not in final:
            best = final[keep[same_as[entry.index]].index]
            final[entry.index] = CandidateDecision(
                entry.index, best.decision, entry.score, best.reasons
            )
    if chosen is None:
        # Nobody to accept or review; the best candidate's reasons say why.
        return MatchDecision(LinkDecision.REJECT, None, distinct[0].reasons, _ordered(final))
    return MatchDecision(overall, chosen.index, final[chosen.index].reasons, _ordered(final))


def _choose(
    distinct: list[CandidateDecision],
    policy: MatchPolicy,
    final: dict[int, CandidateDecision],
) -> tuple[CandidateDecision | None, LinkDecision]:
    """Pick the overall outcome; rewrites ``final`` for ambiguous and beaten candidates."""
    accepts = [e for e in distinct if e.decision is LinkDecision.ACCEPT]
    if not accepts:
        reviews = [e for e in distinct if e.decision is LinkDecision.REVIEW]
        if reviews:
            return reviews[0], LinkDecision.REVIEW
        return None, LinkDecision.REJECT
    best = accepts[0]
    rivals = [
        e
        for e in distinct
        if e is not best
        and (
            e.decision is LinkDecision.ACCEPT
            or (e.decision is LinkDecision.REVIEW and e.score >= best.score - policy.margin)
        )
    ]
    if rivals:
        for entry in (best, *rivals):
            final[entry.index] = CandidateDecision(
                entry.index, LinkDecision.REVIEW, entry.score, (*entry.reasons, AMBIGUOUS)
            )
        return best, LinkDecision.REVIEW
    for entry in distinct:
        if entry is not best and entry.decision is LinkDecision.REVIEW:
            final[entry.index] = CandidateDecision(
                entry.index, LinkDecision.REJECT, entry.score, (*entry.reasons, BEATEN)
            )
    return best, LinkDecision.ACCEPT


def _ordered(final: dict[int, CandidateDecision]) -> tuple[CandidateDecision, ...]:
    return tuple(final[i] for i in sorted(final))


DEFAULT_POLICY = MatchPolicy()
