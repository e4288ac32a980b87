"""``ehrfetch bench match``: match quality against the mock network's truth.

Runs ehrfetch's own discover-and-decide path (documents are not fetched) for a roster
the mock network wrote, through the network on 127.0.0.1 with faults off, then scores
every (participant, organization) pair against the truth file:

* true accept: the accepted patient is the participant's record there;
* false accept: an accepted patient who is not (a privacy breach: the number that must
  be zero);
* missed: the participant has a record there and it was not accepted (rejected, or
  left for review — review is safe, but it is not recall);
* precision = true / (true + false), recall = true / (true + missed).

False accepts are also counted for the roster's hard cases (twins, Jr/Sr, household
members, namesakes) on their own.
"""

from __future__ import annotations

import asyncio
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import store
from ehrfetch.batch import run_batch
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.selection import select_cohort
from ehrfetch.mocknet import running_network, write_roster
from ehrfetch.settings import Settings
from ehrfetch.store.engine import remove_sqlite_store
from ehrfetch.store.tables import Attempt, LinkDecision, Participant, PatientLink


@dataclass
class MatchScore:
    participants: int = 0
    pairs_with_record: int = 0
    true_accepts: int = 0
    false_accepts: int = 0
    missed: int = 0
    missed_in_review: int = 0
    precision: float = 1.0
    recall: float = 0.0
    hard_case_participants: dict[str, int] = field(default_factory=dict)
    hard_case_false_accepts: dict[str, int] = field(default_factory=dict)


@dataclass
class MatchBench:
    score: MatchScore
    roster_size: int
    seconds: float
    command: str
    machine: str
    date: str


def score_links(sessions: sessionmaker[Session], truth: dict[str, dict[str, Any]]) -> MatchScore:
    score = MatchScore()
    with sessions() as session:
        rid = dict(session.execute(select(Participant.id, Participant.research_id)).all())
        tried = {rid[p] for p in session.scalars(select(Attempt.participant_id).distinct())}
        decided: dict[tuple[str, str], dict[LinkDecision, set[str]]] = {}
        for link in session.scalars(select(PatientLink)):
            key = (rid[link.participant_id], link.organization_id)
            decided.setdefault(key, {}).setdefault(link.decision, set()).add(
                link.network_patient_id
            )
    for research_id in sorted(tried):
        row = truth[research_id]
        score.participants += 1
        case = row.get("hard_case")
        if case:
            score.hard_case_participants[case] = score.hard_case_participants.get(case, 0) + 1
        for org, real in row["known_at"].items():
            verdicts = decided.get((research_id, org), {})
            accepted = verdicts.get(LinkDecision.ACCEPT, set())
            wrong = len(accepted - {real})
            score.false_accepts += wrong
            if case:
                score.hard_case_false_accepts[case] = (
                    score.hard_case_false_accepts.get(case, 0) + wrong
                )
            if real is None:
                continue
            score.pairs_with_record += 1
            if real in accepted:
                score.true_accepts += 1
            else:
                score.missed += 1
                if real in verdicts.get(LinkDecision.REVIEW, set()):
                    score.missed_in_review += 1
    decided_total = score.true_accepts + score.false_accepts
    score.precision = score.true_accepts / decided_total if decided_total else 1.0
    found = score.true_accepts + score.missed
    score.recall = score.true_accepts / found if found else 0.0
    return score


def run_match_bench(
    settings: Settings, workdir: Path, participants: int, network_config: Path, command: str
) -> MatchBench:
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "match.db"
    remove_sqlite_store(db)
    roster = workdir / "roster"
    write_roster(network_config, roster, participants)
    with running_network(
        network_config, workdir / "mock-network.log", extra=("--no-faults",)
    ) as net:
        bench_settings = net.settings(settings)
        bench_settings = bench_settings.model_copy(
            update={
                "store": settings.store.model_copy(update={"url": f"sqlite:///{db}"}),
                "acquire": settings.acquire.model_copy(update={"retrieve_documents": False}),
                # Faults are off and nobody else uses this network: no need to pace.
                "network": bench_settings.network.model_copy(
                    update={"requests_per_second": 1000.0, "burst": 100}
                ),
            }
        )
        engine = store.create_store_engine(bench_settings.store)
        try:
            store.ensure_schema(engine)
            sessions = store.session_factory(engine)
            ctx = ReadContext.from_settings(bench_settings.roster)
            import_roster(roster / "roster.csv", sessions, ctx)
            import_consents(roster / "consents.csv", sessions, ctx)
            selection = select_cohort(sessions, bench_settings.cohort, datetime.now(UTC))
            for batch in selection.batches:
                asyncio.run(run_batch(batch.id, bench_settings, sessions))
            with (roster / "truth.ndjson").open() as fh:
                truth = {row["research_id"]: row for row in map(json.loads, fh)}
            score = score_links(sessions, truth)
        finally:
            engine.dispose()
    return MatchBench(
        score=score,
        roster_size=participants,
        seconds=round(time.monotonic() - started, 1),
        command=command,
        machine=f"{platform.machine()}, Python {platform.python_version()}",
        date=datetime.now(UTC).date().isoformat(),
    )


def as_dict(result: MatchBench) -> dict[str, Any]:
    return asdict(result)
