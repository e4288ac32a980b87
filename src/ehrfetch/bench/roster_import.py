"""``ehrfetch bench import``: how fast a roster imports.

Writes a synthetic roster of N valid rows (deterministic; a tenth with previous names
or addresses), imports it into a fresh store, then imports it again (nothing changed:
the idempotent path), and reports rows/s and peak memory of this process.
"""

from __future__ import annotations

import csv
import platform
import random
import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.cohort.importing import import_roster
from ehrfetch.cohort.reading import ReadContext

# fmt: off
_GIVEN = [
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Maria",
    "Jose",
    "Wei",
    "Aisha",
]
_FAMILY = [
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Nguyen",
    "Kim",
    "Patel",
    "Okafor",
    "Garcia-Lopez",
]
_PLACES = [
    ("Boston", "MA", "021", "617"),
    ("Chicago", "IL", "606", "312"),
    ("Houston", "TX", "770", "713"),
    ("Phoenix", "AZ", "850", "602"),
    ("Seattle", "WA", "981", "206"),
    ("Atlanta", "GA", "303", "404"),
]
_COLUMNS = [
    "research_id",
    "given",
    "middle",
    "family",
    "suffix",
    "birth_date",
    "sex",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "postal_code",
    "phone",
    "email",
    "ssn_last4",
    "previous_names",
    "previous_addresses",
    "ehr_on_file",
]


def write_synthetic_roster(path: Path, rows: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(_COLUMNS)
        for i in range(rows):
            city, state, zip3, area = rnd.choice(_PLACES)
            given, family = rnd.choice(_GIVEN), rnd.choice(_FAMILY)
            previous = rnd.random() < 0.1
            writer.writerow(
                [
                    f"B{i:07d}", given, rnd.choice(["", "A", "Lee"]), family, "",
                    f"{rnd.randint(1930, 2005)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
                    rnd.choice(["male", "female"]), f"{rnd.randint(1, 9999)} Main St", "",
                    city, state, f"{zip3}{rnd.randint(10, 99)}",
                    # Distinct, valid-looking numbers: phone checks cost the same as real ones.
                    f"({area}) {rnd.randint(200, 999)}-{rnd.randint(0, 9999):04d}",
                    f"{given.lower()}{i}@example.org", f"{rnd.randint(1, 9999):04d}",
                    rnd.choice(_FAMILY) if previous else "",
                    f"1 Old Rd^^{city}^{state}^{zip3}01" if previous else "", "",
                ]
            )  # fmt: skip


@dataclass
class ImportBench:
    rows: int
    first_import_s: float
    first_rows_per_s: float
    reimport_s: float
    reimport_rows_per_s: float
    peak_rss_mb: float
    store: str
    python: str
    machine: str


def run_import_bench(
    sessions: sessionmaker[Session], store: str, rows: int, workdir: Path, ctx: ReadContext
) -> ImportBench:
    path = workdir / f"roster-{rows}.csv"
    write_synthetic_roster(path, rows)
    start = time.perf_counter()
    first = import_roster(path, sessions, ctx)
    first_s = time.perf_counter() - start
    if first.inserted != rows:
        raise RuntimeError(f"expected {rows} new participants, got {first.inserted}")
    start = time.perf_counter()
    again = import_roster(path, sessions, ctx)
    again_s = time.perf_counter() - start
    if again.unchanged != rows:
        raise RuntimeError(f"expected {rows} unchanged on re-import, got {again.unchanged}")
    return ImportBench(
        rows=rows,
        first_import_s=round(first_s, 2),
        first_rows_per_s=round(rows / first_s),
        reimport_s=round(again_s, 2),
        reimport_rows_per_s=round(rows / again_s),
        # ru_maxrss is in KiB on Linux.
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        store=store,
        python=platform.python_version(),
        machine=f"{platform.machine()}, {_cpus()} CPUs",
    )


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def as_dict(result: ImportBench) -> dict[str, object]:
    return asdict(result)
