"""What finding one batch's housemates costs, against a populated store.

A batch looks up, once, which of its participants share a surname and an address or
phone with other participants of the program (``store.participants.housemates``). This
runs that lookup for slices of the store's participants (by id) and prints, for each,
the client CPU, the wall time (the database's share included), the growth of this
process's peak RSS (the first slice shows what a lookup holds at once; later ones reuse
that memory), and a digest of the answer, so two versions of the code can be
compared on the same store. Point it at the store a ``bench throughput`` run left:

    .venv/bin/python scripts/bench_housemates.py \
        --store-url postgresql+psycopg://postgres@127.0.0.1:55433/ehrfetch_bench
    .venv/bin/python scripts/bench_housemates.py \
        --store-url sqlite:///.bench/throughput/ehrfetch.db --size 1000 --starts 1 50001

It imports ehrfetch as installed; ``PYTHONPATH=<checkout>/src`` runs another version.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import time

from sqlalchemy import create_engine, func, select
from sqlalchemy.orm import sessionmaker

from ehrfetch.store.participants import housemates
from ehrfetch.store.tables import Participant


def main() -> None:
    parser = argparse.ArgumentParser(description="What finding one batch's housemates costs.")
    parser.add_argument("--store-url", required=True)
    parser.add_argument("--size", type=int, default=1000, help="participants per batch")
    parser.add_argument("--starts", type=int, nargs="*", help="first participant id of each")
    args = parser.parse_args()

    engine = create_engine(args.store_url)
    sessions = sessionmaker(engine)
    with sessions() as session:
        cohort = session.scalar(select(func.count()).select_from(Participant)) or 0
        last = session.scalar(select(func.max(Participant.id))) or 0
    starts = args.starts or [1, last // 2, max(1, last - args.size + 1)]
    print(f"store: {cohort:,} participants; batches of {args.size:,}")
    for start in starts:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        with sessions() as session:
            cpu, wall = time.process_time(), time.perf_counter()
            found = housemates(session, range(start, start + args.size))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        digest = hashlib.sha256(repr(sorted(found.items())).encode()).hexdigest()[:12]
        print(
            f"ids {start:>7,}+: {len(found):4d} with housemates, client CPU {cpu * 1000:6.0f} ms,"
            f" wall {wall * 1000:6.0f} ms, peak RSS +{grown:4.0f} MB, answer {digest}"
        )
    engine.dispose()


if __name__ == "__main__":
    main()
