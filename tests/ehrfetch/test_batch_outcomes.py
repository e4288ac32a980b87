"""Outcomes and audit rows of a batch are written in groups (``batch._Outcomes``)."""

from __future__ import annotations

from datetime import timedelta

from ehrfetch.batch import OUTCOMES_AT_MOST, OUTCOMES_EVERY_S, _Outcomes
from ehrfetch.network import CallRecord
from ehrfetch.store.batches import AttemptResult
from ehrfetch.store.tables import AttemptOutcome
from support import NOW


def call(research_id: str) -> CallRecord:
    return CallRecord(
        operation="match",
        organization_id="org1",
        research_id=research_id,
        status=200,
        outcome="ok",
        tries=1,
        duration_ms=3,
        purpose_of_use="TREAT",
        started_at=NOW,
    )


def test_outcomes_wait_for_a_second_then_go_with_every_call_so_far() -> None:
    outcomes = _Outcomes(NOW)
    calls = [call("R1"), call("R2")]
    outcomes.add(1, AttemptResult(AttemptOutcome.NO_MATCH), NOW, NOW, calls)
    assert calls == []  # taken: the next participant's calls start afresh
    assert outcomes.due(NOW + timedelta(seconds=OUTCOMES_EVERY_S / 2)) is None

    later = NOW + timedelta(seconds=OUTCOMES_EVERY_S)
    due = outcomes.due(later)
    assert due is not None
    assert [a[0] for a in due.attempts] == [1]
    assert [c.research_id for c in due.calls] == ["R1", "R2"]
    assert due.at == later
    # Taken once: nothing is written twice, and the clock restarts.
    assert outcomes.take(later) is None
    outcomes.add(2, AttemptResult(AttemptOutcome.NO_MATCH), later, later, [])
    assert outcomes.due(later + timedelta(seconds=OUTCOMES_EVERY_S / 2)) is None


def test_a_full_group_goes_at_once() -> None:
    outcomes = _Outcomes(NOW)
    for attempt_id in range(OUTCOMES_AT_MOST - 1):
        outcomes.add(attempt_id, AttemptResult(AttemptOutcome.NO_MATCH), NOW, NOW, [])
        assert outcomes.due(NOW) is None
    outcomes.add(OUTCOMES_AT_MOST, AttemptResult(AttemptOutcome.NO_MATCH), NOW, NOW, [])
    due = outcomes.due(NOW)
    assert due is not None and len(due.attempts) == OUTCOMES_AT_MOST
