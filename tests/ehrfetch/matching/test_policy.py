"""The decision: what is accepted, what is vetoed, what goes to review, and why."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from ehrfetch.cohort.records import PersonName, PostalAddress
from ehrfetch.matching.compare import Field, Level
from ehrfetch.matching.person import MatchPerson
from ehrfetch.matching.policy import (
    POLICY_REASONS,
    Candidate,
    MatchPolicy,
    decide,
    evaluate,
)
from ehrfetch.store.tables import LinkDecision, Sex

ACCEPT, REVIEW, REJECT = LinkDecision.ACCEPT, LinkDecision.REVIEW, LinkDecision.REJECT

HOME = PostalAddress("12 Harbor View Rd", None, "Portland", "ME", "04101")
OLD = PostalAddress("77 Quarry Lane", "Apt 3", "Bangor", "ME", "04401")
PARTICIPANT = MatchPerson(
    names=(PersonName("Castellano", "Robert", "Lee"),),
    birth_date=dt.date(1961, 7, 4),
    sex=Sex.MALE,
    addresses=(HOME, OLD),
    phones=("+12075550134",),
    emails=("rcastellano@example.org",),
    ssn_last4="4821",
    id="RS-1",
)
# The same man as a clinic registered him: no SSN, no e-mail, "Road" written out.
RECORD = MatchPerson(
    names=(PersonName("Castellano", "Robert", "L"),),
    birth_date=dt.date(1961, 7, 4),
    sex=Sex.MALE,
    addresses=(PostalAddress("12 Harbor View Road", None, "Portland", "ME", "04101"),),
    phones=("+12075550134",),
    id="0001",
)


def candidate(
    person: MatchPerson = RECORD, *, grade: str | None = "probable", **changes: Any
) -> Candidate:
    return Candidate(dataclasses.replace(person, **changes), 0.8, grade)


def one(
    cand: Candidate, participant: MatchPerson = PARTICIPANT
) -> tuple[LinkDecision, tuple[str, ...]]:
    decision = decide(participant, [cand])
    return decision.decision, decision.candidates[0].reasons


def test_the_same_person_is_accepted() -> None:
    decision = decide(PARTICIPANT, [candidate()])
    assert (decision.decision, decision.index) == (ACCEPT, 0)
    assert "given:exact" in decision.reasons and "address:current" in decision.reasons


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"names": (PersonName("Castellano", "Bob"),)}, "given:nickname"),
        ({"names": (PersonName("Castellano", "Rboert"),)}, "given:typo"),
        ({"names": (PersonName("Robert", "Castellano"),)}, "given:swapped"),
        ({"names": (PersonName("Castelano", "Robert"),)}, "family:typo"),
        ({"birth_date": dt.date(1961, 4, 7)}, "dob:transposed"),
        ({"addresses": (OLD,)}, "address:history"),
        ({"addresses": (), "phones": ("+12075550134",)}, "phone:agree"),
        ({"phones": (), "addresses": (HOME,)}, "address:current"),
    ],
)
def test_noisy_copies_are_accepted(changes: dict[str, Any], reason: str) -> None:
    decision, reasons = one(candidate(**changes))
    assert decision is ACCEPT, reasons
    assert reason in reasons


def test_married_name_on_the_participant_side() -> None:
    participant = dataclasses.replace(
        PARTICIPANT,
        names=(PersonName("Castellano", "Maria"), PersonName("Ortiz", "Maria")),
        sex=Sex.FEMALE,
    )
    maiden = candidate(names=(PersonName("Ortiz", "Maria"),), sex=Sex.FEMALE)
    decision, reasons = one(maiden, participant)
    assert decision is ACCEPT and "family:previous_name" in reasons


def test_compound_surname_either_part() -> None:
    participant = dataclasses.replace(PARTICIPANT, names=(PersonName("Garcia-Lopez", "Ana"),))
    for family in ("Garcia Lopez", "GarciaLopez", "Lopez", "Garcia"):
        decision, reasons = one(candidate(names=(PersonName(family, "Ana"),)), participant)
        assert decision is ACCEPT, (family, reasons)


def test_name_and_birth_date_alone_are_not_enough() -> None:
    # What a namesake in another state shares: everything but where they live.
    namesake = candidate(
        addresses=(PostalAddress("5 Main St", None, "Austin", "TX", "78701"),),
        phones=("+15125550100",),
        grade="certain",
    )
    decision, reasons = one(namesake)
    assert decision is REVIEW
    bare = candidate(addresses=(), phones=(), grade="certain")
    decision, reasons = one(bare)
    assert decision is REVIEW and "gate:locator" in reasons


def test_email_alone_is_not_a_locator() -> None:
    decision, reasons = one(candidate(addresses=(), phones=(), emails=("rcastellano@example.org",)))
    assert decision is REVIEW and "gate:locator" in reasons


# -- vetoes ---------------------------------------------------------------------------------


def test_twin_is_rejected() -> None:
    twin = candidate(names=(PersonName("Castellano", "Michael", "James"),))
    decision, reasons = one(twin)
    assert decision is REJECT
    assert "veto:twin_household" in reasons


def test_twin_with_a_transposed_birth_date_is_rejected() -> None:
    twin = candidate(names=(PersonName("Castellano", "Michael"),), birth_date=dt.date(1961, 4, 7))
    assert one(twin)[0] is REJECT


def test_fuzzy_given_name_in_the_household_with_another_middle_name() -> None:
    # Twins Robert and Roberta... or Robert with a slip: the middle name says sibling.
    sibling = candidate(names=(PersonName("Castellano", "Robrt", "James"),))
    decision, reasons = one(sibling)
    assert decision is not ACCEPT
    assert "veto:household_fuzzy_given" in reasons


def test_household_member_is_rejected() -> None:
    spouse = candidate(
        names=(PersonName("Castellano", "Maria"),), sex=Sex.FEMALE, birth_date=dt.date(1963, 2, 1)
    )
    child = candidate(names=(PersonName("Castellano", "Luca"),), birth_date=dt.date(1995, 9, 9))
    assert one(spouse)[0] is REJECT
    assert one(child)[0] is REJECT


def test_sex_conflict_is_never_accepted() -> None:
    decision, reasons = one(candidate(sex=Sex.FEMALE))
    assert decision is REVIEW and "veto:sex" in reasons


def test_junior_and_senior_are_never_accepted_for_each_other() -> None:
    senior = dataclasses.replace(PARTICIPANT, suffix="SR")
    # The son's record, even with the father's birth date typed into it by mistake.
    junior = candidate(suffix="JR", phones=("+12075550199",))
    decision, reasons = one(junior, senior)
    assert decision is not ACCEPT
    assert "veto:suffix" in reasons
    junior_later = candidate(suffix="JR", birth_date=dt.date(1988, 1, 30))
    assert one(junior_later, senior)[0] is REJECT


def test_one_sided_suffix_needs_a_personal_identifier() -> None:
    senior = dataclasses.replace(PARTICIPANT, suffix="SR")
    decision, reasons = one(candidate(phones=()), senior)
    assert decision is REVIEW and "gate:generation" in reasons
    assert one(candidate(), senior)[0] is ACCEPT  # the phone is his own


def test_someone_elses_phone_at_the_same_address_is_review() -> None:
    decision, reasons = one(candidate(phones=("+12075550199",)))
    assert decision is REVIEW and "gate:phone_conflict" in reasons


def test_ssn_conflict_is_never_accepted() -> None:
    decision, reasons = one(candidate(ssn_last4="1111"))
    assert decision is not ACCEPT and "veto:ssn" in reasons


def test_grade_is_weak_evidence() -> None:
    certain = evaluate(PARTICIPANT, RECORD, "certain")
    unsure = evaluate(PARTICIPANT, RECORD, "certainly-not")
    assert certain.score - unsure.score == pytest.approx(3.0)
    assert unsure.decision is ACCEPT  # the network's "no" does not outvote the evidence
    # ... and its "certain" never lifts a stranger.
    stranger = dataclasses.replace(
        RECORD, names=(PersonName("Nguyen", "Thi"),), birth_date=dt.date(1990, 1, 1), phones=()
    )
    assert evaluate(PARTICIPANT, stranger, "certain").decision is REJECT


# -- several candidates ---------------------------------------------------------------------


def test_two_plausible_patients_at_one_organization_go_to_review() -> None:
    other = candidate(id="0002", phones=())
    decision = decide(PARTICIPANT, [candidate(), other])
    assert decision.decision is REVIEW and decision.index == 0
    assert [c.decision for c in decision.candidates] == [REVIEW, REVIEW]
    assert all("ambiguous:multiple_candidates" in c.reasons for c in decision.candidates)


def test_a_clearly_better_candidate_wins_and_the_rest_are_rejected() -> None:
    weak = candidate(
        id="0002",
        addresses=(PostalAddress("5 Main St", None, "Austin", "TX", "78701"),),
        phones=(),
    )
    twin = candidate(id="0003", names=(PersonName("Castellano", "Michael"),))
    decision = decide(PARTICIPANT, [weak, twin, candidate()])
    assert (decision.decision, decision.index) == (ACCEPT, 2)
    assert [c.decision for c in decision.candidates] == [REJECT, REJECT, ACCEPT]
    assert "other:better_candidate" in decision.candidates[0].reasons


def test_the_same_patient_listed_twice_is_one_patient() -> None:
    decision = decide(PARTICIPANT, [candidate(), candidate()])
    assert (decision.decision, decision.index) == (ACCEPT, 0)
    assert [c.decision for c in decision.candidates] == [ACCEPT, ACCEPT]


def test_no_candidates_is_reject() -> None:
    decision = decide(PARTICIPANT, [])
    assert (decision.decision, decision.index, decision.reasons) == (
        REJECT,
        None,
        ("no_candidates",),
    )


def test_only_strangers_is_reject_with_the_best_ones_reasons() -> None:
    stranger = candidate(
        names=(PersonName("Nguyen", "Thi"),), sex=Sex.FEMALE, birth_date=dt.date(1990, 1, 1)
    )
    decision = decide(PARTICIPANT, [stranger])
    assert decision.decision is REJECT and decision.index is None
    assert "given:conflict" in decision.reasons


# -- reasons ----------------------------------------------------------------------------------

VOCABULARY = {f"{f.value}:{level.value}" for f in Field for level in Level} | POLICY_REASONS


def test_reasons_are_tokens_and_never_demographics() -> None:
    values = ["castellano", "robert", "bob", "1961", "07-04", "harbor", "portland", "04101",
              "2075550134", "example.org", "4821", "maria", "michael"]  # fmt: skip
    cases = [
        candidate(),
        candidate(names=(PersonName("Castellano", "Bob"),)),
        candidate(names=(PersonName("Castellano", "Michael"),)),
        candidate(sex=Sex.FEMALE, ssn_last4="1111"),
        candidate(suffix="JR"),
    ]
    decision = decide(PARTICIPANT, cases)
    reasons = [decision.reasons, *(entry.reasons for entry in decision.candidates)]
    for each in reasons:
        for reason in each:
            assert reason in VOCABULARY
            assert not any(value in reason.lower() for value in values)


def test_policy_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="review threshold"):
        MatchPolicy(accept=10, review=20)
    with pytest.raises(ValueError, match="margin"):
        MatchPolicy(margin=-1)
    strict = MatchPolicy(accept=100)
    assert decide(PARTICIPANT, [candidate()], strict).decision is REVIEW


# A housemate in the cohort (a twin, a father or son with the same name) whose given name
# the candidate carries: a candidate that agrees with the participant only loosely is
# more likely the housemate's record.
def test_candidate_named_like_a_housemate_goes_to_review() -> None:
    loose = candidate(names=(PersonName("Castellano", "Rob"),), emails=())
    assert one(loose)[0] is ACCEPT  # a nickname alone is accepted...
    decision = decide(PARTICIPANT, [loose], housemates=("Rob",))
    assert decision.decision is REVIEW  # ...unless a housemate in the cohort is called that
    assert "veto:housemate_in_cohort" in decision.candidates[0].reasons


def test_housemate_rule_leaves_exact_names_and_own_identifiers_alone() -> None:
    exact = candidate()
    assert decide(PARTICIPANT, [exact], housemates=("Robert",)).decision is ACCEPT
    other_name = candidate(names=(PersonName("Castellano", "Rob"),))
    # The housemate is someone else entirely (no name in common with the candidate).
    assert decide(PARTICIPANT, [other_name], housemates=("Michael",)).decision is ACCEPT
