"""The mock network's ``$match`` by population size: candidates scored and CPU per call.

A throughput run writes its network's TOML and its roster into its work folder; this
takes both, asks the matcher about the roster's participants at every organization, in
the roster's order as a run does, and prints per ``$match``: the people the blocking
index hands the matcher (scored or screened), the candidates it returns (at most the
default count), and the matcher's CPU in each eighth of the stream (people not seen
before cost most: their organizations and core are derived on first sight)::

    .venv/bin/python scripts/bench_mock_match.py .bench/lan10k .bench/lan300k --participants 16000
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from pathlib import Path

from mock_network import fhir
from mock_network.config import load_config
from mock_network.index import BlockingIndex
from mock_network.matcher import Matcher, parse_query
from mock_network.population import Population
from mock_network.testing import roster_patient


def measure(work: Path, participants: int) -> None:
    config = load_config(work / "network" / "mock_network.toml")
    population = Population(config)
    matcher = Matcher(population, BlockingIndex.build(population), config.match)
    with (work / "roster" / "roster.csv").open(newline="") as f:
        rows = [row for _, row in zip(range(participants), csv.DictReader(f), strict=False)]
    if len(rows) < 8:
        raise SystemExit(f"{work}: fewer than 8 participants in its roster")
    orgs = [(org.id, fhir.mrn_system(org.id)) for org in config.orgs]
    blocked: list[int] = []
    returned: list[int] = []
    eighths: list[float] = []
    size = len(rows) // 8
    started = time.process_time()
    for n, row in enumerate(rows[: 8 * size], start=1):
        query = parse_query(roster_patient(row))
        blocked.append(len(matcher.candidates(query)))
        for org_id, mrn_system in orgs:
            found = matcher.match(org_id, mrn_system, query)
            returned.append(min(len(found), config.match.default_count))
        if n % size == 0:
            now = time.process_time()
            eighths.append((now - started) / (size * len(orgs)) * 1000)
            started = now
    print(
        f"{work}: {population.size:,} people, {8 * size:,} participants x {len(orgs)} "
        f"organizations; per $match: {statistics.mean(blocked):.1f} people from the index, "
        f"{statistics.mean(returned):.2f} candidates returned; matcher CPU ms per $match by "
        f"eighth: {' '.join(f'{ms:.3f}' for ms in eighths)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdirs", nargs="+", type=Path, help="throughput runs' --workdir")
    parser.add_argument("--participants", type=int, default=4000)
    args = parser.parse_args()
    for work in args.workdirs:
        measure(work, args.participants)


if __name__ == "__main__":
    main()
