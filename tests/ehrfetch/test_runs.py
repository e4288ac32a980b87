"""Runs in the store: planning, status, stale batches, re-run selection, summaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from ehrfetch import runs
from ehrfetch.cohort.selection import rules_from
from ehrfetch.errors import ConfigError, StoreError
from ehrfetch.settings import CohortSettings, Settings
from ehrfetch.store.batches import AttemptResult, claim_batch, finish_attempt, finish_batch
from ehrfetch.store.documents import DerivedResource, FetchedDocument, save_document
from ehrfetch.store.tables import Attempt, AttemptOutcome, Batch, BatchStatus, Run, RunStatus
from support import NOW, StoreUnderTest, enroll, roster_row

SETTINGS = Settings(cohort=CohortSettings(batch_size=2))
STALE = timedelta(minutes=15)
PEOPLE = [f"R{i}" for i in range(1, 7)]


@pytest.fixture
def cohort(db: StoreUnderTest, tmp_path: Path) -> StoreUnderTest:
    """Six consented participants without EHR: three batches of two."""
    enroll(db, tmp_path, [roster_row(r) for r in PEOPLE])
    return db


def plan(db: StoreUnderTest, **options: object) -> runs.RunPlan:
    result = runs.plan_run(db.sessions, SETTINGS, now=NOW, **options)  # type: ignore[arg-type]
    assert result.run_id is not None
    return result


def do_batch(
    db: StoreUnderTest,
    batch_id: int,
    outcomes: list[AttemptOutcome | None],
    at: datetime = NOW,
    error: str | None = None,
) -> None:
    """Play a batch: claim it at ``at``, give its members these outcomes (None: not
    reached), and finish it unless some member was not reached (the process died)."""
    with db.sessions.begin() as session:
        members = claim_batch(session, batch_id, at)
        for member, outcome in zip(members, outcomes, strict=True):
            if outcome is None:
                continue
            code = "http_503" if outcome is AttemptOutcome.FAILED else None
            finish_attempt(session, member.attempt_id, AttemptResult(outcome, code), at, at)
        if None not in outcomes:
            finish_batch(session, batch_id, at, error)


def batch(db: StoreUnderTest, batch_id: int) -> Batch:
    with db.sessions() as session:
        found = session.get(Batch, batch_id)
        assert found is not None
        return found


def run_row(db: StoreUnderTest, run_id: int) -> Run:
    with db.sessions() as session:
        found = session.get(Run, run_id)
        assert found is not None
        return found


def attempts(db: StoreUnderTest, batch_id: int) -> list[Attempt]:
    with db.sessions() as session:
        return list(
            session.scalars(
                select(Attempt).where(Attempt.batch_id == batch_id).order_by(Attempt.id)
            )
        )


def provenance(ref: str) -> Callable[[Sequence[tuple[str, str]]], tuple[str, dict[str, Any]]]:
    def build(_targets: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
        return f"prov-{ref}", {"resourceType": "Provenance"}

    return build


def test_plan_records_an_acquire_run_with_its_parameters(cohort: StoreUnderTest) -> None:
    planned = plan(cohort, limit=5, organizations=["org2", "org1", "org2"], dry_run=True)
    assert len(planned.batch_ids) == 3
    assert planned.participants == 5
    run = run_row(cohort, planned.run_id or 0)
    assert (run.kind, run.status) == ("acquire", RunStatus.PENDING)
    assert run.parameters == {
        "limit": 5,
        "batch_size": 2,
        "organizations": ["org1", "org2"],
        "dry_run": True,
    }
    # Everyone eligible is in flight now: a second plan finds nobody.
    assert runs.plan_run(cohort.sessions, SETTINGS, limit=1, now=NOW).participants == 1
    assert runs.plan_run(cohort.sessions, SETTINGS, now=NOW) == runs.RunPlan(None, ())


def test_batch_settings_follow_the_run_parameters() -> None:
    assert runs.batch_settings(SETTINGS, {"dry_run": False}) is SETTINGS
    dry = runs.batch_settings(SETTINGS, {"dry_run": True})
    assert dry.acquire.retrieve_documents is False
    assert SETTINGS.acquire.retrieve_documents is True


def test_batches_in_processes_pace_at_their_share_of_the_rates() -> None:
    settings = Settings.model_validate(
        {
            "network": {"requests_per_second": 30.0, "burst": 9,
                        "org_requests_per_second": {"org-a": 12.0}},
            "orchestration": {"batch_concurrency": 3, "task_runner": "processes"},
        }
    )  # fmt: skip
    share = runs.batch_settings(settings, {}).network
    assert (share.requests_per_second, share.burst) == (10.0, 3)
    assert share.org_requests_per_second == {"org-a": 4.0}
    # Threads share one set of buckets in the process: no split.
    threads = settings.model_copy(
        update={
            "orchestration": settings.orchestration.model_copy(update={"task_runner": "threads"})
        }
    )
    assert runs.batch_settings(threads, {}) is threads
    # Processes that share their pacing through the run's directory take the whole rate.
    assert runs.batch_settings(settings, {}, shared_pacing=True) is settings


def test_run_status_follows_its_batches(cohort: StoreUnderTest) -> None:
    planned = plan(cohort)
    run_id = planned.run_id or 0
    first, second, third = planned.batch_ids
    runs.start_run(cohort.sessions, run_id, NOW, flow_run_id="flow-1")
    assert (run_row(cohort, run_id).status, run_row(cohort, run_id).flow_run_id) == (
        RunStatus.RUNNING,
        "flow-1",
    )
    do_batch(cohort, first, [AttemptOutcome.RETRIEVED, AttemptOutcome.NO_MATCH])
    # A batch still open keeps the run running.
    assert runs.finish_run(cohort.sessions, run_id, NOW) is RunStatus.RUNNING
    assert run_row(cohort, run_id).finished_at is None
    do_batch(cohort, second, [AttemptOutcome.RETRIEVED, AttemptOutcome.RETRIEVED])
    do_batch(cohort, third, [AttemptOutcome.NO_DOCUMENTS, AttemptOutcome.NEEDS_REVIEW])
    assert runs.finish_run(cohort.sessions, run_id, NOW) is RunStatus.SUCCEEDED
    assert run_row(cohort, run_id).finished_at == NOW

    with cohort.sessions.begin() as session:
        session.execute(update(Batch).where(Batch.id == third).values(status=BatchStatus.PARTIAL))
    assert runs.finish_run(cohort.sessions, run_id, NOW) is RunStatus.PARTIAL
    with cohort.sessions.begin() as session:
        session.execute(
            update(Batch).where(Batch.run_id == run_id).values(status=BatchStatus.FAILED)
        )
    assert runs.finish_run(cohort.sessions, run_id, NOW) is RunStatus.FAILED


def test_a_stale_running_batch_is_failed_and_rerun(cohort: StoreUnderTest) -> None:
    planned = plan(cohort)
    run_id = planned.run_id or 0
    dead, alive, done = planned.batch_ids
    runs.start_run(cohort.sessions, run_id, NOW - timedelta(hours=1))
    # The process died after one participant of ``dead``; ``alive`` beat a minute ago.
    do_batch(cohort, dead, [AttemptOutcome.RETRIEVED, None], at=NOW - timedelta(hours=1))
    do_batch(cohort, alive, [AttemptOutcome.RETRIEVED, None], at=NOW - timedelta(minutes=1))
    do_batch(cohort, done, [AttemptOutcome.RETRIEVED] * 2, at=NOW - timedelta(hours=1))

    chosen = runs.batches_to_rerun(cohort.sessions, stale_after=STALE, now=NOW)
    assert chosen == [dead]
    assert batch(cohort, dead).status is BatchStatus.PARTIAL
    assert batch(cohort, alive).status is BatchStatus.RUNNING
    dead_attempts = attempts(cohort, dead)
    assert [a.outcome for a in dead_attempts] == [AttemptOutcome.RETRIEVED, AttemptOutcome.FAILED]
    assert dead_attempts[1].error_code == "batch_failed"
    # A run with a live batch is not finished.
    assert run_row(cohort, run_id).status is RunStatus.RUNNING

    assert runs.prepare_rerun(cohort.sessions, chosen, NOW) == 1
    assert batch(cohort, dead).status is BatchStatus.PENDING
    assert [a.outcome for a in attempts(cohort, dead)] == [AttemptOutcome.RETRIEVED, None]


def test_pending_batches_of_a_dead_run_are_released(cohort: StoreUnderTest) -> None:
    old = NOW - timedelta(hours=2)
    planned = runs.plan_run(cohort.sessions, SETTINGS, limit=4, now=old)
    first, never_started = planned.batch_ids
    do_batch(cohort, first, [AttemptOutcome.NO_MATCH, None], at=old)
    # A fresh run's pending batches are left alone.
    fresh = plan(cohort)

    released = runs.release_stale(cohort.sessions, stale_after=STALE, now=NOW)
    assert released == [first, never_started]
    assert batch(cohort, never_started).status is BatchStatus.FAILED
    assert {a.error_code for a in attempts(cohort, never_started)} == {"batch_failed"}
    assert run_row(cohort, planned.run_id or 0).status is RunStatus.PARTIAL
    assert all(batch(cohort, b).status is BatchStatus.PENDING for b in fresh.batch_ids)
    # Released participants are no longer in flight: the next plan takes them again
    # (not the one found nowhere: they wait as usual).
    assert plan(cohort).participants == 3


def test_rerun_selection_by_run_batch_and_since(cohort: StoreUnderTest) -> None:
    first_plan = runs.plan_run(cohort.sessions, SETTINGS, limit=4, now=NOW)
    a, b = first_plan.batch_ids
    second_plan = plan(cohort)
    [c] = second_plan.batch_ids
    week_ago = NOW - timedelta(days=7)
    do_batch(cohort, a, [AttemptOutcome.FAILED, AttemptOutcome.RETRIEVED], at=week_ago)
    do_batch(cohort, b, [AttemptOutcome.RETRIEVED, AttemptOutcome.RETRIEVED])
    do_batch(cohort, c, [AttemptOutcome.FAILED, AttemptOutcome.FAILED])
    assert (batch(cohort, a).status, batch(cohort, c).status) == (
        BatchStatus.PARTIAL,
        BatchStatus.FAILED,
    )

    def pick(**options: object) -> list[int]:
        return runs.batches_to_rerun(
            cohort.sessions,
            stale_after=STALE,
            now=NOW,
            **options,  # type: ignore[arg-type]
        )

    assert pick() == [a, c]
    assert pick(run_id=first_plan.run_id) == [a]
    assert pick(batch_ids=[c, b]) == [c]
    assert pick(since=NOW - timedelta(days=2)) == [c]
    assert pick(run_id=second_plan.run_id, since=NOW - timedelta(days=30)) == [c]
    with pytest.raises(StoreError, match="no such batch: 999"):
        pick(batch_ids=[999])
    with pytest.raises(StoreError, match="run 999 does not exist"):
        pick(run_id=999)

    # Re-opening touches the failed attempts only: the retrieved one keeps its result.
    before = {x.id: (x.outcome, x.finished_at) for x in attempts(cohort, a)}
    assert runs.prepare_rerun(cohort.sessions, [a], NOW) == 1
    after = {x.id: (x.outcome, x.finished_at) for x in attempts(cohort, a)}
    kept = [i for i, (outcome, _) in before.items() if outcome is AttemptOutcome.RETRIEVED]
    assert [after[i] for i in kept] == [before[i] for i in kept]
    assert run_row(cohort, first_plan.run_id or 0).status is RunStatus.RUNNING


def test_summary_counts_outcomes_documents_resources_and_failures(
    cohort: StoreUnderTest,
) -> None:
    planned = plan(cohort, limit=4)
    run_id = planned.run_id or 0
    a, b = planned.batch_ids
    runs.start_run(cohort.sessions, run_id, NOW)
    with cohort.sessions() as session:
        pid = session.scalars(select(Attempt.participant_id).where(Attempt.batch_id == a)).first()
    assert pid is not None
    later = NOW + timedelta(minutes=1)
    rules = rules_from(SETTINGS.cohort, later)
    with cohort.sessions.begin() as session:
        for org, ref, types in (("org1", "d1", ["Condition", "Observation"]), ("org2", "d2", [])):
            document = FetchedDocument(
                participant_id=pid, organization_id=org, link_id=None, document_reference_id=ref,
                url=f"http://{org}/fhir/Binary/{ref}", content_type="application/fhir+json",
                declared_size=3, declared_sha1="x", computed_sha1="x", sha256="ab" * 32,
                size=3, content=b"{ }",
            )  # fmt: skip
            derived = [DerivedResource(t, f"id-{t}", t, {"resourceType": t}, None) for t in types]
            save_document(session, document, derived, provenance(ref), rules, later)
    do_batch(cohort, a, [AttemptOutcome.RETRIEVED, AttemptOutcome.NO_MATCH], at=later)
    do_batch(cohort, b, [AttemptOutcome.FAILED, AttemptOutcome.FAILED], at=NOW + timedelta(hours=1))
    runs.finish_run(cohort.sessions, run_id, NOW + timedelta(hours=1))

    summary = runs.run_summary(cohort.sessions, run_id)
    assert summary.status == "partial"
    assert summary.participants == {"failed": 2, "retrieved": 1, "no_match": 1}
    assert summary.batches == {"succeeded": 1, "failed": 1}
    assert summary.failures == {"http_503": 2}
    assert summary.duration_s == 3600.0
    assert summary.documents == [
        {"content_type": "application/fhir+json", "organization": o, "status": "stored", "count": 1}
        for o in ("org1", "org2")
    ]
    assert summary.resources == [
        {"type": "Condition", "organization": "org1", "count": 1},
        {"type": "Observation", "organization": "org1", "count": 1},
    ]
    assert summary.has_failures
    markdown = summary.to_markdown()
    assert "| failed | 2 |" in markdown
    assert "| application/fhir+json | org2 | stored | 1 |" in markdown
    assert summary.as_dict()["participants"]["retrieved"] == 1
    assert {"section": "failures", "item": "http_503", "count": 2} in summary.table_rows()

    partial = runs.batches_summary(cohort.sessions, [b], title="re-run")
    assert partial.participants == {"failed": 2}
    assert partial.documents == []


def test_status_reports_latest_outcomes_runs_and_open_batches(cohort: StoreUnderTest) -> None:
    planned = plan(cohort)
    run_id = planned.run_id or 0
    a, b, c = planned.batch_ids
    runs.start_run(cohort.sessions, run_id, NOW)
    do_batch(cohort, a, [AttemptOutcome.FAILED, AttemptOutcome.RETRIEVED])
    do_batch(cohort, b, [AttemptOutcome.RETRIEVED, None], at=NOW - timedelta(hours=1))

    report = runs.status_report(cohort.sessions, stale_after=STALE, now=NOW)
    assert report.participants == {"pending": 3, "retrieved": 2, "failed": 1}
    assert report.failures == {"http_503": 1}
    assert [(r.id, r.status, r.batches, r.participants) for r in report.runs] == [
        (run_id, "running", 3, 6)
    ]
    assert [(o.id, o.status, o.done) for o in report.open_batches] == [
        (b, "running", 1),
        (c, "pending", 0),
    ]
    assert report.stale_batches == [b]
    assert report.as_dict()["open_batches"][0]["stale"] is True
    # Read-only: nothing was released.
    assert batch(cohort, b).status is BatchStatus.RUNNING

    with_run = runs.status_report(cohort.sessions, run_id=run_id, stale_after=STALE, now=NOW)
    assert with_run.run is not None and with_run.run.run_id == run_id
    with pytest.raises(StoreError):
        runs.status_report(cohort.sessions, run_id=999, stale_after=STALE, now=NOW)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2d", NOW - timedelta(days=2)),
        ("12h", NOW - timedelta(hours=12)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2026-05-30", datetime(2026, 5, 30, tzinfo=UTC)),
        ("2026-05-30T08:00:00+02:00", datetime(2026, 5, 30, 6, tzinfo=UTC)),
    ],
)
def test_since_takes_durations_and_iso_dates(text: str, expected: datetime) -> None:
    assert runs.parse_since(text, NOW) == expected


def test_since_refuses_anything_else() -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        runs.parse_since("yesterday", NOW)
