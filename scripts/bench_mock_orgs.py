"""The mock network's ``Population.orgs_of`` late in a long run: CPU per lookup.

Each ``$match`` asks it of every candidate, and a large cohort's candidates spread over
the whole population. This derives it for everyone once (a long run has asked about
nearly everyone), then times random lookups::

    .venv/bin/python scripts/bench_mock_orgs.py .bench/lan300k/network/mock_network.toml
"""

from __future__ import annotations

import argparse
import random
import time

from mock_network.config import load_config
from mock_network.population import Population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="the network's TOML (the bench writes one per run)")
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()
    population = Population(load_config(args.config))
    for index in range(population.size):
        population.orgs_of(index)
    rng = random.Random(1)
    sample = [rng.randrange(population.size) for _ in range(args.lookups)]
    started = time.process_time()
    for index in sample:
        population.orgs_of(index)
    spent = time.process_time() - started
    print(
        f"{population.size:,} people: {spent / len(sample) * 1e6:.2f} us CPU per orgs_of "
        f"lookup at steady state ({len(sample):,} random lookups)"
    )


if __name__ == "__main__":
    main()
