"""Client CPU per request of ``NetworkClient``'s call path, by kind of call.

Starts the mock network (LAN profile: no delay, no rate limit, no faults) in its own
process on 127.0.0.1, then drives ``NetworkClient.match``, ``documents`` and
``fetch_attachment`` through ehrfetch's production path (the aiohttp transport, the
retry policy, the rate limiters, the token cache, FHIR validation, one CallRecord per
call) at a fixed concurrency, and prints this process's CPU (``time.process_time``:
the server is not counted) per request for each kind, the median of the rounds.

    .venv/bin/python scripts/bench_client_path.py
    .venv/bin/python scripts/bench_client_path.py --calls 3000 --concurrency 24 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ehrfetch.bench.throughput import PROFILES, network_config  # noqa: E402
from ehrfetch.mocknet import running_network, write_roster  # noqa: E402
from ehrfetch.network import (  # noqa: E402
    AttachmentRef,
    CallRecord,
    NetworkClient,
    Organization,
    TokenSource,
)
from ehrfetch.settings import NetworkSettings, Settings  # noqa: E402

ORGANIZATIONS = 4
PEOPLE = 600


def query(row: dict[str, str]) -> dict[str, Any]:
    """The Patient sent to $match for one roster row (like ``acquire.match_query``)."""
    given = [part for part in (row["given"], row["middle"]) if part]
    name: dict[str, Any] = {"use": "official", "family": row["family"]}
    if given:
        name["given"] = given
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": [name],
        "gender": row["sex"],
        "birthDate": row["birth_date"],
    }
    if row["address_line1"]:
        resource["address"] = [
            {
                "use": "home",
                "line": [row["address_line1"]],
                "city": row["city"],
                "state": row["state"],
                "postalCode": row["postal_code"],
            }
        ]
    if row["phone"]:
        resource["telecom"] = [{"system": "phone", "value": row["phone"]}]
    return resource


async def drive(
    jobs: Sequence[Callable[[], Awaitable[Any]]], concurrency: int
) -> tuple[float, float]:
    """(client CPU ms per call, wall ms per call) of running every job."""
    todo = iter(jobs)

    async def worker() -> None:
        for job in todo:
            await job()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu * 1000 / len(jobs), wall * 1000 / len(jobs)


async def measure(
    settings: NetworkSettings, people: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, list[tuple[float, float]]]:
    records: list[CallRecord] = []
    tokens = TokenSource(settings)
    async with NetworkClient(settings, tokens, on_call=records.append) as network:
        orgs = await network.directory()
        # Who is known where, and their documents: the inputs of the measured calls.
        found: list[tuple[Organization, str]] = []
        gate = asyncio.Semaphore(args.concurrency)

        async def look(person: dict[str, Any]) -> None:
            async with gate:
                found.extend(
                    (match.organization, match.candidates[0].network_patient_id)
                    for match in await network.match_everywhere(orgs, person)
                    if match.candidates
                )

        await asyncio.gather(*(look(p) for p in people))
        refs: list[tuple[Organization, AttachmentRef]] = []
        for org, pid in found:
            async for entry in network.documents(org, pid):
                refs.extend((org, ref) for ref in entry.attachments[:1])
        if not found or not refs:
            raise SystemExit("the mock network found nobody: nothing to measure")

        async def documents(org: Organization, pid: str) -> None:
            async for _ in network.documents(org, pid):
                pass

        def cycle(items: Sequence[Any], n: int) -> list[Any]:
            return [items[i % len(items)] for i in range(n)]

        kinds: dict[str, list[Callable[[], Awaitable[Any]]]] = {
            "match": [
                partial(network.match, o, p)
                for o, p in cycle([(o, p) for p in people for o in orgs], args.calls)
            ],
            "documents": [partial(documents, o, p) for o, p in cycle(found, args.calls)],
            "fetch_attachment": [
                partial(network.fetch_attachment, o, r) for o, r in cycle(refs, args.calls)
            ],
        }
        results: dict[str, list[tuple[float, float]]] = {kind: [] for kind in kinds}
        for _ in range(args.rounds):
            for kind, jobs in kinds.items():
                before = len(records)
                results[kind].append(await drive(jobs, args.concurrency))
                calls = records[before:]
                failed = [r for r in calls if r.outcome != "ok"]
                if failed or len(calls) != len(jobs):
                    raise SystemExit(f"{kind}: {len(failed)} failed calls of {len(calls)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000, help="calls per kind and round")
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transport", choices=("aiohttp", "httpx"), default="aiohttp")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-client-path-") as tmp:
        work = Path(tmp)
        config = work / "network" / "mock_network.toml"
        config.parent.mkdir()
        config.write_text(network_config(PROFILES["lan"], ORGANIZATIONS, PEOPLE))
        write_roster(config, work / "roster", PEOPLE)
        with (work / "roster" / "roster.csv").open(newline="") as rows:
            people = [query(row) for row in csv.DictReader(rows)]
        with running_network(config, work / "mock-network.log") as net:
            settings = net.settings(Settings()).network.model_copy(
                update={
                    "transport": args.transport,
                    # Nobody else on this network: no pacing, a pool for the concurrency.
                    "requests_per_second": 100_000.0,
                    "burst": 1_000,
                    "max_connections": max(32, args.concurrency * 2),
                    "max_keepalive_connections": max(16, args.concurrency),
                }
            )
            results = asyncio.run(measure(settings, people, args))

    print(
        f"client CPU per request, median of {args.rounds} rounds of {args.calls} calls "
        f"(concurrency {args.concurrency}, transport {args.transport}):"
    )
    for kind, rounds in results.items():
        cpu = statistics.median(c for c, _ in rounds)
        wall = statistics.median(w for _, w in rounds)
        spread = ", ".join(f"{c:.3f}" for c, _ in rounds)
        print(f"  {kind:<17} {cpu:6.3f} ms CPU/call  ({spread})  wall {wall:.3f} ms/call")


if __name__ == "__main__":
    main()
