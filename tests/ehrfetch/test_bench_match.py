"""The match benchmark's scoring: what counts as a true accept, a false one, a miss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ehrfetch.bench.match import score_links
from ehrfetch.cohort.importing import import_roster
from ehrfetch.store.links import LinkRow, OrganizationRow, save_links, upsert_organizations
from ehrfetch.store.participants import participant_ids
from ehrfetch.store.tables import Attempt, Batch, BatchStatus, LinkDecision, Run, RunStatus
from support import CTX, NOW, StoreUnderTest, roster_row, write_roster

A, R, V = LinkDecision.ACCEPT, LinkDecision.REJECT, LinkDecision.REVIEW


def test_scoring_counts_each_pair_against_the_truth(db: StoreUnderTest, tmp_path: Path) -> None:
    ids = ["P1", "P2", "P3", "P4"]
    import_roster(write_roster(tmp_path / "r.csv", [roster_row(i) for i in ids]), db.sessions, CTX)
    links = {
        "P1": [("o1", "a", A), ("o2", "x", R)],  # true accept at o1; nothing at o2 is right
        "P2": [("o1", "b", A)],  # false accept: P2's record at o1 is "c"
        "P3": [("o1", "d", V)],  # the right record, left for review: a miss
        "P4": [],  # known nowhere, nothing accepted: nothing to count
    }
    with db.sessions.begin() as session:
        for org in ("o1", "o2"):
            upsert_organizations(session, [OrganizationRow(org, org, f"http://{org}", org)], NOW)
        pids = participant_ids(session, ids)
        run = Run(kind="t", status=RunStatus.SUCCEEDED, parameters={}, started_at=NOW)
        session.add(run)
        session.flush()
        batch = Batch(run_id=run.id, seq=1, status=BatchStatus.SUCCEEDED, size=4, created_at=NOW)
        session.add(batch)
        session.flush()
        for rid, rows in links.items():
            session.add(Attempt(batch_id=batch.id, participant_id=pids[rid]))
            save_links(
                session,
                pids[rid],
                [LinkRow(org, pid, None, None, 0.0, d, ()) for org, pid, d in rows],
                NOW,
            )
    truth: dict[str, dict[str, Any]] = {
        "P1": {"known_at": {"o1": "a", "o2": None}, "hard_case": None},
        "P2": {"known_at": {"o1": "c", "o2": None}, "hard_case": "twin"},
        "P3": {"known_at": {"o1": "d", "o2": None}, "hard_case": None},
        "P4": {"known_at": {"o1": None, "o2": None}, "hard_case": None},
    }
    score = score_links(db.sessions, truth)
    assert (score.participants, score.pairs_with_record) == (4, 3)
    assert (score.true_accepts, score.false_accepts, score.missed) == (1, 1, 2)
    assert score.missed_in_review == 1
    assert score.precision == 0.5
    assert score.recall == 1 / 3
    assert score.hard_case_false_accepts == {"twin": 1}
