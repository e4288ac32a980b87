"""``ehrfetch bench throughput``: the whole acquisition at scale, against the limits.

One run does, on this machine:

1. writes a mock-network configuration for the profile (K organizations; about 60 % of
   people known at one or more; about 3 documents per organization-person, half FHIR
   Bundles, a third C-CDA, the rest PDF and text; LAN: no delay, no limit; WAN:
   200-800 ms per answer and a request rate per client and organization, 429 above it),
   starts the network in its own process, writes an N-participant roster and imports it;
2. **the HTTP limit**: a bare aiohttp loop (no ehrfetch code) drives the same server
   with the same request mix — ``$match`` everywhere, then document search and every
   attachment where a candidate is certain or probable — at the pipeline's concurrency;
3. **the validation limit**: fhir.resources validation alone (the R4B models, as the
   normalizers use them: with ``ehrfetch.fhir_models``' cheaper validators, so the
   limit is the faster one) over the resources ehrfetch derives from the documents
   step 2 fetched;
4. **the pipeline**: ``ehrfetch run`` in a child process — the acquire-ehr Prefect flow
   on a temporary Prefect server, exactly what an operator starts — and then reads the
   store, the audit trail and the network's ``/stats`` for the figures.

The figures are returned (and written as JSON by the CLI); nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from signal import SIGTERM
from typing import Any

import httpx
import orjson
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from ehrfetch import store
from ehrfetch.acquire import CDA_XML, FHIR_JSON, match_query
from ehrfetch.bench.rss_curve import RssCurve, at_shares
from ehrfetch.cohort.importing import import_consents, import_roster
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.errors import EhrfetchError, sanitize_url
from ehrfetch.mocknet import CLIENT_ID, RunningNetwork, running_network, write_roster
from ehrfetch.network.auth import TokenSource
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.fhir_bundle import normalize_bundle
from ehrfetch.settings import Settings
from ehrfetch.store.engine import remove_sqlite_store
from ehrfetch.store.participants import load_records
from ehrfetch.store.tables import (
    Attempt,
    AttemptOutcome,
    Audit,
    Document,
    DocumentStatus,
    Participant,
    Resource,
    ResourceSource,
    Run,
)

MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"
# States the mock population lives in, in the order organizations are placed.
_STATES = ("NY", "CA", "TX", "IL", "FL", "PA", "OH", "GA", "NC", "MI")


@dataclass(frozen=True)
class Profile:
    name: str
    latency_ms: tuple[float, float, float, float] | None
    """(median, p99, min, max) of the network's delay per answer; None: no delay."""
    rate_per_org: float
    """Requests per second the network allows each client at each organization (0: no
    limit)."""
    network_burst: int
    participant_concurrency: int
    batch_size: int
    pace_share: float
    """Share of the allowed rate ehrfetch is configured to pace itself at: what an
    operator would set from the network's published limit, a little under it so clock
    jitter never turns into 429s."""


PROFILES = {
    # The machine's own limit: nothing between ehrfetch and the server but loopback.
    "lan": Profile("lan", None, 0.0, 20, 24, 1000, 1.0),
    # A national network: slow answers and a fixed rate per client and organization.
    "wan": Profile("wan", (400.0, 780.0, 200.0, 800.0), 40.0, 20, 200, 5000, 0.99),
}


@dataclass
class Limit:
    requests: int = 0
    seconds: float = 0.0
    requests_per_s: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    concurrency: int = 0


@dataclass
class ValidationLimit:
    documents: int = 0
    resources: int = 0
    seconds: float = 0.0
    """CPU time of the median pass."""
    resources_per_s: float = 0.0
    passes: int = 0


@dataclass
class ThroughputResult:
    command: str
    date: str
    machine: str
    profile: str
    participants: int
    organizations: int
    store: str
    setup_s: dict[str, float]
    http_limit: Limit
    validation_limit: ValidationLimit
    pipeline: dict[str, Any]
    requests: dict[str, Any]
    ratios: dict[str, float | None]
    network: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    """What the pipeline ran with (the knobs that change its speed)."""


# -- 1. the network and the roster ---------------------------------------------------


def network_config(profile: Profile, organizations: int, participants: int) -> str:
    """A mock-network configuration (TOML) for this profile."""
    population = min(1_000_000, max(2 * participants, 10_000))
    lines = [
        "# written by `ehrfetch bench throughput`",
        "[population]",
        "seed = 20240601",
        f"size = {population}",
        # Known at 0, 1, 2, 3, 4 organizations: 60 % somewhere, 1.7 organizations each.
        "orgs_per_person = [0.40, 0.28, 0.18, 0.10, 0.04]",
        "out_of_state = 0.15",
        'reference_date = "2025-01-01"',
        "[documents]",
        "low = 1",
        "high = 5",
        "fhir = 0.50",
        "ccda = 0.33",
        "pdf = 0.09",
        "text = 0.08",
        "[roster]",
        "seed = 7",
        "withdrawn = 0.0",
        "reconsented = 0.0",
        "declined = 0.0",
        "ehr_on_file = 0.0",
        "[[clients]]",
        f'client_id = "{CLIENT_ID}"',
        f'public_key_file = "../.work/keys/{CLIENT_ID}.pub.pem"',
        'allowed_purposes = ["T-IAS", "HRESCH"]',
    ]
    for n in range(organizations):
        state = _STATES[n % len(_STATES)]
        lines += ["[[orgs]]", f'id = "org-{n + 1}"', f'name = "Member {n + 1}"']
        lines.append(f'state = "{state}"')
        if profile.latency_ms is not None:
            median, p99, low, high = profile.latency_ms
            lines.append(
                f"latency = {{ median_ms = {median}, p99_ms = {p99}, "
                f"min_ms = {low}, max_ms = {high} }}"
            )
        if profile.rate_per_org:
            lines.append(
                f"rate_limit = {{ per_second = {profile.rate_per_org}, "
                f"burst = {profile.network_burst} }}"
            )
    return "\n".join(lines) + "\n"


def bench_settings(base: Settings, net: RunningNetwork, profile: Profile, db_url: str) -> Settings:
    settings = net.settings(base)
    if profile.rate_per_org:
        rate = profile.rate_per_org * profile.pace_share
        burst = max(1, profile.network_burst // 2)
    else:
        rate, burst = 100_000.0, 1_000  # nobody else on this network: no need to pace
    return settings.model_copy(
        update={
            "store": settings.store.model_copy(update={"url": db_url, "password": None}),
            "network": settings.network.model_copy(
                update={
                    "requests_per_second": rate,
                    "burst": burst,
                    "max_connections": max(32, profile.participant_concurrency * 2),
                    "max_keepalive_connections": max(16, profile.participant_concurrency),
                }
            ),
            "acquire": settings.acquire.model_copy(
                update={"participant_concurrency": profile.participant_concurrency}
            ),
            "cohort": settings.cohort.model_copy(update={"batch_size": profile.batch_size}),
        }
    )


def settings_toml(settings: Settings) -> str:
    """The settings as the TOML file the pipeline process reads (no secrets in it)."""
    data = settings.model_dump(mode="json", exclude={"store": {"password"}})
    data["network"].pop("private_key", None)
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if value is None:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        inner = ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items())
        return "{ " + inner + " }"
    return orjson.dumps(value).decode()  # strings, numbers, booleans, lists: JSON is TOML


# -- 2. the HTTP limit ----------------------------------------------------------------


async def http_limit(
    net: RunningNetwork,
    settings: Settings,
    queries: Sequence[dict[str, Any]],
    *,
    concurrency: int,
    seconds: float,
    keep_documents: int,
) -> tuple[Limit, list[tuple[str, bytes]]]:
    """The same request mix from a bare aiohttp loop; the documents it read, as samples."""
    import aiohttp

    async with httpx.AsyncClient() as plain:
        tokens = TokenSource(settings.network)
        answer = await plain.post(settings.network.token_url, data=tokens.form())
        answer.raise_for_status()
        token = answer.json()["access_token"]
        directory = (await plain.get(settings.network.directory_url)).json()
    bases = [
        entry["resource"]["address"]
        for entry in directory.get("entry", [])
        if entry["resource"]["resourceType"] == "Endpoint"
    ]
    kinds: Counter[str] = Counter()
    samples: list[tuple[str, bytes]] = []
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"}
    todo = iter(queries)
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    # The same timeout and size cap as ehrfetch's own calls: a stuck server ends the
    # measurement with an error instead of hanging it.
    timeout = aiohttp.ClientTimeout(total=settings.network.request_timeout_s)
    async with aiohttp.ClientSession(headers=headers, connector=connector, timeout=timeout) as http:
        cap = settings.network.max_body_bytes

        async def capped(response: aiohttp.ClientResponse) -> bytes:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > cap:
                    where = sanitize_url(str(response.url))
                    raise EhrfetchError(f"an answer over the size cap from {where}")
                chunks.append(chunk)
            return b"".join(chunks)

        async def get(url: str, kind: str) -> tuple[bytes, str]:
            async with http.get(url) as response:
                body = await capped(response)
                kinds[kind] += 1
                return body, response.headers.get("Content-Type", "")

        async def match(base: str, query: dict[str, Any]) -> str | None:
            parameters = {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": query},
                    {"name": "count", "valueInteger": settings.acquire.match_count},
                    {"name": "onlyCertainMatches", "valueBoolean": False},
                ],
            }
            async with http.post(
                f"{base}/Patient/$match",
                data=orjson.dumps(parameters),
                headers={"Content-Type": "application/fhir+json"},
            ) as response:
                body = await capped(response)
            kinds["match"] += 1
            for entry in orjson.loads(body).get("entry", []):
                grades = [
                    ext.get("valueCode")
                    for ext in entry.get("search", {}).get("extension", [])
                    if ext.get("url") == MATCH_GRADE_URL
                ]
                if {"certain", "probable"} & set(grades):
                    return str(entry["resource"]["id"])
            return None

        async def documents(base: str, patient: str) -> None:
            url: str | None = (
                f"{base}/DocumentReference?patient={patient}&status=current"
                f"&_count={settings.network.page_size}"
            )
            while url:
                body, _ = await get(url, "search")
                page = orjson.loads(body)
                url = next(
                    (link["url"] for link in page.get("link", []) if link["relation"] == "next"),
                    None,
                )
                for entry in page.get("entry", []):
                    for content in entry["resource"].get("content", []):
                        attachment = content["attachment"]
                        data, kind = await get(attachment["url"], "binary")
                        if len(samples) < keep_documents:
                            samples.append((kind, data))
                        break  # one rendition per document, as ehrfetch

        async def worker() -> None:
            for query in todo:
                if time.monotonic() > deadline:
                    return
                found = await asyncio.gather(*(match(base, query) for base in bases))
                for base, patient in zip(bases, found, strict=True):
                    if patient is not None:
                        await documents(base, patient)

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    total = sum(kinds.values())
    limit = Limit(total, round(elapsed, 2), round(total / elapsed, 1), dict(kinds), concurrency)
    return limit, samples


# -- 3. the validation limit ----------------------------------------------------------


def validation_limit(samples: Sequence[tuple[str, bytes]], passes: int = 5) -> ValidationLimit:
    """fhir.resources validation alone over what ehrfetch derives from ``samples``.

    The median of ``passes`` timed passes: one pass over a few thousand resources takes
    a fraction of a second, and single passes of the same code moved ±5 % between runs.
    """
    from ehrfetch.fhir_models import model_class

    bodies: list[dict[str, Any]] = []
    documents = 0
    for content_type, data in samples:
        kind = content_type.split(";")[0].strip().lower()
        try:
            if kind in FHIR_JSON:
                normalized = normalize_bundle(data, research_id="R-BENCH", patient_id=None)
            elif kind in CDA_XML:
                normalized = normalize_ccda(data, research_id="R-BENCH", patient_id=None)
            else:
                continue
        except EhrfetchError:
            continue
        documents += 1
        bodies.extend(r.body for r in normalized.resources)
    classes = {kind: model_class(kind) for kind in {b["resourceType"] for b in bodies}}
    timings = []
    for _ in range(passes):
        started = time.process_time()
        for body in bodies:
            classes[body["resourceType"]].model_validate(body)
        timings.append(time.process_time() - started)
    spent = max(statistics.median(timings), 1e-9)
    return ValidationLimit(
        documents, len(bodies), round(spent, 3), round(len(bodies) / spent, 1), passes
    )


# -- 4. the pipeline --------------------------------------------------------------------


def run_pipeline(
    workdir: Path,
    config_file: Path,
    env: dict[str, str],
    profile_to: Path | None = None,
    *,
    profile_all_threads: bool = False,
    stop_after_s: float | None = None,
) -> dict[str, Any]:
    """``ehrfetch run`` in a child process; its exit code, wall, CPU and peak RSS.

    ``stop_after_s``: SIGTERM the run this long after its batches began, as an operator
    stops it (``flows._stopping``): it finishes the participants in flight and exits
    143, and the figures are those of what it did — a large cohort measured for a
    bounded time.

    ``profile_to``: sample it with py-spy (which must be installed) into this file, as
    collapsed stacks; ``top_of_profile`` reads the top entries out of it. Samples are
    of the thread holding the GIL (where the CPU goes), or with ``profile_all_threads``
    of every thread not idle (waits on the database and the network included).
    """
    usage = workdir / "pipeline-usage.json"
    log = workdir / "pipeline.log"
    command = [sys.executable, "-m", "ehrfetch.bench.child", str(usage), "--config",
               str(config_file), "run", "--json"]  # fmt: skip
    if profile_to is not None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        command = [spy, "record", "--format", "raw", "--rate", "50", "--nonblocking",
                   *([] if profile_all_threads else ["--gil"]),
                   "--output", str(profile_to), "--", *command]  # fmt: skip
    started = time.monotonic()
    busy_before = machine_busy_s()
    peak = TreePeak()
    curve = RssCurve(log)
    figures: dict[str, Any] = {}
    with log.open("wb") as out:
        # The JSON summary goes to stdout (the log); progress and warnings to stderr.
        child = subprocess.Popen(  # noqa: S603 - our own module or py-spy, fixed arguments
            command, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        began: float | None = None
        while child.poll() is None:
            peak.sample(child.pid)
            curve.observe(peak.pipeline_now_kib)
            if stop_after_s is not None and curve.running and "stopped_after_s" not in figures:
                began = began if began is not None else time.monotonic()
                if time.monotonic() - began >= stop_after_s:
                    os.kill(_ehrfetch_pid(child.pid, profiled=profile_to is not None), SIGTERM)
                    figures["stopped_after_s"] = round(time.monotonic() - began, 1)
            time.sleep(0.5)
    if usage.exists():
        figures.update(orjson.loads(usage.read_bytes()))
    figures["process_wall_s"] = round(time.monotonic() - started, 2)
    figures["exit_code"] = child.returncode
    figures["tree_peak_rss_mb"] = round(peak.pipeline_kib / 1024, 1)
    figures["rss_curve"] = curve.points
    figures["tree_cpu_s"] = round(peak.pipeline_cpu_s, 1)
    figures["machine_busy_share"] = round(
        (machine_busy_s() - busy_before) / ((os.cpu_count() or 1) * (time.monotonic() - started)),
        3,
    )
    figures["prefect_server_peak_rss_mb"] = round(peak.prefect_kib / 1024, 1)
    figures["prefect_server_cpu_s"] = round(peak.prefect_cpu_s, 1)
    figures["postgres_cpu_s"] = round(peak.postgres_cpu_s, 1)
    figures["log"] = str(log)
    return figures


def _ehrfetch_pid(child: int, *, profiled: bool) -> int:
    """The ``ehrfetch run`` process: the child, or py-spy's child when profiled."""
    if not profiled:
        return child
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            _command, fields = _stat_fields(stat.read_text())
        except (OSError, ValueError):
            continue
        if int(fields[1]) == child:
            return int(stat.parent.name)
    return child  # py-spy has not started it yet


@dataclass
class TreePeak:
    """Peak resident memory of a process tree, sampled: the pipeline (the flow's process
    and, with the process task runner, its batch workers) apart from the temporary
    Prefect server it starts."""

    pipeline_kib: int = 0
    prefect_kib: int = 0
    pipeline_now_kib: int = 0
    """The pipeline's RSS at the last sample."""
    cpu_ticks: dict[int, int] = field(default_factory=dict)
    """Pipeline processes' CPU (user + system, clock ticks) at their last sample."""
    prefect_ticks: dict[int, int] = field(default_factory=dict)
    """The same for the Prefect servers the pipeline starts."""
    postgres_ticks: dict[int, int] = field(default_factory=dict)
    """The same for this machine's PostgreSQL processes, less what they had used before."""
    postgres_before: dict[int, int] | None = None

    @property
    def pipeline_cpu_s(self) -> float:
        return sum(self.cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")

    @property
    def prefect_cpu_s(self) -> float:
        return sum(self.prefect_ticks.values()) / os.sysconf("SC_CLK_TCK")

    @property
    def postgres_cpu_s(self) -> float:
        before = self.postgres_before or {}
        used = sum(t - before.get(pid, 0) for pid, t in self.postgres_ticks.items())
        return used / os.sysconf("SC_CLK_TCK")

    def sample(self, root: int) -> None:
        parents: dict[int, int] = {}
        ticks: dict[int, int] = {}
        postgres: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                command, fields = _stat_fields(stat.read_text())
            except (OSError, ValueError):
                continue
            pid = int(stat.parent.name)
            parents[pid] = int(fields[1])
            ticks[pid] = int(fields[11]) + int(fields[12])
            if command == "postgres":
                postgres[pid] = ticks[pid]
        # A backend that ends between two samples loses what it used since the last one
        # (at most the sampling interval's worth): the figure is a floor.
        if self.postgres_before is None:
            self.postgres_before = dict(postgres)
        for pid, used in postgres.items():
            self.postgres_ticks[pid] = max(self.postgres_ticks.get(pid, 0), used)
        tree, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            tree.update(children)
            frontier.extend(children)
        pipeline = prefect = 0
        for pid in tree:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            rss = next(
                (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
                0,
            )
            if b"py-spy" in cmdline:
                continue
            if b"prefect.server" in cmdline or b"uvicorn" in cmdline:
                prefect += rss
                self.prefect_ticks[pid] = max(self.prefect_ticks.get(pid, 0), ticks.get(pid, 0))
            else:
                pipeline += rss
                self.cpu_ticks[pid] = max(self.cpu_ticks.get(pid, 0), ticks.get(pid, 0))
        self.pipeline_now_kib = pipeline
        self.pipeline_kib = max(self.pipeline_kib, pipeline)
        self.prefect_kib = max(self.prefect_kib, prefect)


def _stat_fields(text: str) -> tuple[str, list[str]]:
    """The command name and the fields after it of a /proc/PID/stat line."""
    head, _, tail = text.rpartition(")")
    return head.partition("(")[2], tail.split()


def _samples(path: Path) -> Iterator[tuple[list[str], int]]:
    """py-spy's raw format: each line a stack (frames joined by ";") and its sample count."""
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            yield stack.split(";"), int(samples)


def top_of_profile(path: Path, count: int = 15) -> list[tuple[str, float]]:
    """The functions most often on top of the stack (self time), as shares of samples."""
    own: Counter[str] = Counter()
    for frames, samples in _samples(path):
        own[frames[-1]] += samples
    total = sum(own.values())
    return [(frame, round(n / total, 4)) for frame, n in own.most_common(count)] if total else []


def ehrfetch_hotspots(path: Path, count: int = 20) -> list[tuple[str, float]]:
    """ehrfetch's own functions by inclusive share of samples (themselves and all they
    call): where the pipeline's time goes, in the project's terms."""
    package = Path(__file__).resolve().parents[1]  # src/ehrfetch
    ours = {str(p.relative_to(package)) for p in package.rglob("*.py")}
    inclusive: Counter[str] = Counter()
    total = 0
    for frames, samples in _samples(path):
        total += samples
        seen: set[str] = set()
        for frame in frames:
            name, _, where = frame.strip().partition(" (")
            module = where.split(":")[0]
            if module in ours and (key := f"{name} ({module})") not in seen:
                seen.add(key)
                inclusive[key] += samples
    return [(f, round(n / total, 4)) for f, n in inclusive.most_common(count)] if total else []


def _percentile(values: Sequence[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


def store_figures(sessions: sessionmaker[Session], db_path: Path | None) -> dict[str, Any]:
    with sessions() as session:
        run = session.scalars(select(Run).order_by(Run.id.desc())).first()
        if run is None or run.finished_at is None:
            raise EhrfetchError("the pipeline recorded no finished run: see pipeline.log")
        wall = (run.finished_at - run.started_at).total_seconds()
        outcomes = Counter(
            dict(
                session.execute(
                    select(Attempt.outcome, func.count())
                    .where(Attempt.outcome.is_not(None))
                    .group_by(Attempt.outcome)
                ).all()
            )
        )
        # Failed only because a stopped run never began them (``--stop-after``): not done.
        interrupted = session.scalar(
            select(func.count()).where(
                Attempt.outcome == AttemptOutcome.FAILED,
                Attempt.error_detail.startswith("interrupted:"),
            )
        )
        if interrupted:
            outcomes[AttemptOutcome.FAILED] -= interrupted
            outcomes = +outcomes  # no "failed: 0" when only the stop failed anyone
        durations: dict[str, list[float]] = {}
        for operation, ms in session.execute(
            select(Audit.operation, Audit.duration_ms).where(Audit.run_id == run.id)
        ):
            durations.setdefault(operation, []).append(float(ms or 0.0))
        documents = session.scalar(
            select(func.count()).where(Document.status == DocumentStatus.STORED)
        )
        derived = session.scalar(select(func.count()).select_from(ResourceSource))
        distinct = session.scalar(select(func.count()).select_from(Resource))
        participants = session.scalar(select(func.count()).select_from(Participant))
        postgres = session.get_bind().dialect.name == "postgresql"
        size = (
            int(session.scalar(text("select pg_database_size(current_database())")) or 0)
            if postgres
            else 0
        )
    if db_path is not None:
        size = sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))
    done = sum(outcomes.values())
    return {
        "run_wall_s": round(wall, 2),
        "participants": participants,
        "participants_done": done,
        "participants_interrupted": interrupted or 0,
        "participants_per_s": round(done / wall, 2) if wall else None,
        "outcomes": {str(k): v for k, v in outcomes.items()},
        "documents_stored": documents,
        "documents_per_s": round((documents or 0) / wall, 1) if wall else None,
        "resources_derived": derived,
        "resources_distinct": distinct,
        "resources_per_s": round((derived or 0) / wall, 1) if wall else None,
        "calls_by_operation": {op: len(v) for op, v in sorted(durations.items())},
        "latency_ms_p50": {op: _percentile(v, 0.5) for op, v in sorted(durations.items())},
        "latency_ms_p99": {op: _percentile(v, 0.99) for op, v in sorted(durations.items())},
        "store_bytes": size,
    }


def network_answers(base_url: str) -> Counter[tuple[str, int]]:
    answers = httpx.get(f"{base_url}/stats", timeout=30).json()["answers"]
    return Counter({(a["kind"], int(a["status"])): int(a["count"]) for a in answers})


def machine_busy_s() -> float:
    """CPU seconds every core of the machine spent busy since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM of a running process (Linux): its peak resident set so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


# -- the whole bench ----------------------------------------------------------------------


def run_throughput_bench(
    base: Settings,
    workdir: Path,
    *,
    participants: int,
    organizations: int,
    profile_name: str,
    command: str,
    limit_seconds: float = 20.0,
    store_url: str | None = None,
    profile_to: Path | None = None,
    profile_all_threads: bool = False,
    stop_after_s: float | None = None,
) -> ThroughputResult:
    profile = PROFILES[profile_name]
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    setup: dict[str, float] = {}
    config = workdir / "network" / "mock_network.toml"
    config.parent.mkdir(exist_ok=True)
    config.write_text(network_config(profile, organizations, participants))
    db_path: Path | None = None
    if store_url is None:
        db_path = workdir / "ehrfetch.db"
        remove_sqlite_store(db_path)
        store_url = f"sqlite:///{db_path}"

    began = time.monotonic()
    roster = workdir / "roster"
    write_roster(config, roster, participants)
    setup["roster_s"] = round(time.monotonic() - began, 1)

    began = time.monotonic()
    with running_network(config, workdir / "mock-network.log") as net:
        setup["network_start_s"] = round(time.monotonic() - began, 1)
        settings = bench_settings(base, net, profile, store_url)
        engine = store.create_store_engine(settings.store)
        try:
            store.ensure_schema(engine)
            sessions = store.session_factory(engine)
            began = time.monotonic()
            read_ctx = ReadContext.from_settings(settings.roster)
            import_roster(roster / "roster.csv", sessions, read_ctx)
            import_consents(roster / "consents.csv", sessions, read_ctx)
            setup["import_s"] = round(time.monotonic() - began, 1)

            concurrency = profile.participant_concurrency * settings.orchestration.batch_concurrency
            limit = Limit()
            samples: list[tuple[str, bytes]] = []
            if not profile.rate_per_org:
                # Under a rate limit the limit is the network's allowance, not the machine.
                queries = _sample_queries(sessions, 20_000)
                limit, samples = asyncio.run(
                    http_limit(
                        net,
                        settings,
                        queries,
                        concurrency=concurrency,
                        seconds=limit_seconds,
                        keep_documents=400,
                    )
                )
            validation = validation_limit(samples)

            settings_file = workdir / "ehrfetch.toml"
            settings_file.write_text(settings_toml(settings))
            before = network_answers(net.base_url)
            network_cpu = process_cpu_s(net.pid)
            pipeline = run_pipeline(
                workdir,
                settings_file,
                _pipeline_env(workdir),
                profile_to=profile_to,
                profile_all_threads=profile_all_threads,
                stop_after_s=stop_after_s,
            )
            after = network_answers(net.base_url)
            pipeline["network_peak_rss_mb"] = peak_rss_mb(net.pid)
            pipeline["network_cpu_s"] = round(process_cpu_s(net.pid) - network_cpu, 1)
            stopped = "stopped_after_s" in pipeline and pipeline["exit_code"] == 128 + SIGTERM
            if pipeline["exit_code"] not in (0, 1) and not stopped:
                raise EhrfetchError(
                    f"the pipeline failed (exit {pipeline['exit_code']}): see {pipeline['log']}"
                )
            figures = store_figures(sessions, db_path)
        finally:
            engine.dispose()

    answers = after - before
    requests = sum(answers.values())
    wall = figures["run_wall_s"] or 1.0
    by_kind: Counter[str] = Counter()
    for (kind, _status), count in answers.items():
        by_kind[kind] += count
    throttled = sum(c for (_k, status), c in answers.items() if status == 429)
    request_figures: dict[str, Any] = {
        "total": requests,
        "per_s": round(requests / wall, 1),
        "per_s_by_kind": {k: round(v / wall, 1) for k, v in sorted(by_kind.items())},
        "share_429": round(throttled / requests, 5) if requests else 0.0,
        # All of the pipeline's processes (batch workers too), over every request.
        "client_cpu_ms_per_request": (
            round(1000 * max(pipeline["tree_cpu_s"], pipeline.get("cpu_s", 0.0)) / requests, 3)
            if requests
            else None
        ),
        "server_cpu_ms_per_request": (
            round(1000 * pipeline["network_cpu_s"] / requests, 3) if requests else None
        ),
    }
    allowed = profile.rate_per_org * organizations
    ratios: dict[str, float | None] = {
        "http_vs_plain_client": (
            round(request_figures["per_s"] / limit.requests_per_s, 3)
            if limit.requests_per_s
            else None
        ),
        "resources_vs_validation_alone": (
            round(figures["resources_per_s"] / validation.resources_per_s, 3)
            if validation.resources_per_s
            else None
        ),
        "requests_vs_allowed_rate": (
            round(request_figures["per_s"] / allowed, 3) if allowed else None
        ),
        # The resources ratio a pipeline that cost no CPU at all would reach, asking at
        # the plain client's rate: each request brings this run's resources per request.
        "resources_ceiling_at_plain_client_rate": (
            round(
                limit.requests_per_s
                * figures["resources_derived"]
                / requests
                / validation.resources_per_s,
                3,
            )
            if requests and limit.requests_per_s and validation.resources_per_s
            else None
        ),
    }
    return ThroughputResult(
        command=command,
        date=datetime.now(UTC).date().isoformat(),
        machine=_machine(),
        profile=profile.name,
        participants=participants,
        organizations=organizations,
        store="sqlite" if db_path is not None else settings.store.display_url(),
        setup_s=setup,
        http_limit=limit,
        validation_limit=validation,
        pipeline={**pipeline, **figures},
        requests=request_figures,
        ratios=ratios,
        settings={
            "task_runner": settings.orchestration.task_runner,
            "batch_concurrency": settings.orchestration.batch_concurrency,
            "participant_concurrency": settings.acquire.participant_concurrency,
            "store_threads": settings.store.threads,
            "consent_max_age_s": settings.acquire.consent_max_age_s,
            "batch_size": settings.cohort.batch_size,
            "requests_per_second_per_org": settings.network.requests_per_second,
        },
        network={
            "peak_rss_mb": pipeline["network_peak_rss_mb"],
            "allowed_requests_per_s": allowed or None,
            "latency_ms": profile.latency_ms,
        },
    )


def _sample_queries(sessions: sessionmaker[Session], size: int) -> list[dict[str, Any]]:
    with sessions() as session:
        ids = list(session.scalars(select(Participant.id)))
        chosen = random.Random(1).sample(ids, min(size, len(ids)))
        records = load_records(session, chosen)
    return [match_query(records[i]) for i in chosen if i in records]


def _pipeline_env(workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EHRFETCH__")}
    env.update(
        {
            # Prefect keeps its state in the bench folder and sends nothing out.
            "PREFECT_HOME": str(workdir / ".prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    # No server named: the flow starts a temporary local one, as `ehrfetch run` does.
    env.pop("PREFECT_API_URL", None)
    return env


def _machine() -> str:
    cpus = os.cpu_count()
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpus} CPU {model}, Python {platform.python_version()}".strip()


def as_dict(result: ThroughputResult) -> dict[str, Any]:
    return asdict(result)


def _cpu_per_participant(p: dict[str, Any]) -> str:
    done = p.get("participants_done") or 0
    if not done:
        return "–"
    machine = p["machine_busy_share"] * (os.cpu_count() or 1) * p["process_wall_s"]
    parts = [
        p.get("tree_cpu_s"),
        p.get("network_cpu_s"),
        p.get("postgres_cpu_s"),
        p.get("prefect_server_cpu_s"),
        machine,
    ]
    return " / ".join("–" if v is None else f"{1000 * v / done:.1f}" for v in parts) + " ms"


def markdown(result: ThroughputResult) -> str:
    """The run as a section of docs/benchmarks.md: command, date, machine, figures."""
    p = result.pipeline
    r = result.requests
    lim = result.http_limit
    val = result.validation_limit

    def fmt(value: Any) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            return f"{value:,.3g}" if abs(value) < 10 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return str(value)

    kinds = ", ".join(f"{k} {fmt(v)}" for k, v in r["per_s_by_kind"].items())
    p50 = ", ".join(f"{k} {fmt(v)}" for k, v in p["latency_ms_p50"].items())
    p99 = ", ".join(f"{k} {fmt(v)}" for k, v in p["latency_ms_p99"].items())
    rows = [
        ("participants done / s", f"{fmt(p['participants_done'])} in {fmt(p['run_wall_s'])} s"
         f" = {fmt(p['participants_per_s'])}/s"),
        ("pipeline process wall (Prefect start included)", f"{fmt(p['process_wall_s'])} s"),
        *(
            [("stopped (SIGTERM, `--stop-after`)",
              f"after {fmt(p['stopped_after_s'])} s of batches; "
              f"{fmt(p.get('participants_interrupted'))} participants not begun")]
            if "stopped_after_s" in p else []
        ),
        ("requests / s (all kinds)", fmt(r["per_s"])),
        ("requests / s by kind", kinds),
        ("p50 ms by kind (client, whole call)", p50),
        ("p99 ms by kind (client, whole call)", p99),
        ("share of 429 answers", f"{100 * r['share_429']:.3f} %"),
        ("client CPU per request", f"{fmt(r['client_cpu_ms_per_request'])} ms"),
        ("network CPU per request", f"{fmt(r['server_cpu_ms_per_request'])} ms"),
        ("machine busy during the run (all cores)", f"{100 * p['machine_busy_share']:.0f} %"),
        ("documents stored / s", fmt(p["documents_per_s"])),
        ("resources derived and stored / s", fmt(p["resources_per_s"])),
        ("peak RSS: pipeline (all its processes) / Prefect server / network",
         f"{fmt(p.get('tree_peak_rss_mb'))} MB / {fmt(p.get('prefect_server_peak_rss_mb'))} MB"
         f" / {fmt(result.network['peak_rss_mb'])} MB"),
        ("pipeline RSS (all its processes) by participants done",
         " · ".join(f"{fmt(done)}: {fmt(mb)} MB" for done, mb in at_shares(p.get("rss_curve", [])))
         or "–"),
        ("store size", f"{p['store_bytes'] / 2**20:,.0f} MiB"),
        ("plain aiohttp client, same mix", f"{fmt(lim.requests_per_s)} req/s "
         f"({fmt(lim.requests)} requests, {lim.concurrency} participants at once)"
         if lim.requests else "– (rate-limited profile: the allowance is the limit)"),
        ("fhir.resources validation alone", f"{fmt(val.resources_per_s)} resources/s "
         f"({fmt(val.resources)} resources of {fmt(val.documents)} documents, median of "
         f"{val.passes} passes)"
         if val.resources else "–"),
        ("ratio: requests / plain client", fmt(result.ratios["http_vs_plain_client"])),
        ("ratio: resources / validation alone",
         fmt(result.ratios["resources_vs_validation_alone"])),
        ("ratio: requests / allowed rate", fmt(result.ratios["requests_vs_allowed_rate"])),
        ("resources ratio if ehrfetch cost nothing, at the plain client's rate",
         fmt(result.ratios.get("resources_ceiling_at_plain_client_rate"))),
        ("CPU per participant: pipeline / network / PostgreSQL / Prefect servers / whole machine",
         _cpu_per_participant(p)),
    ]  # fmt: skip
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return (
        f"### Throughput, {result.profile.upper()}, {result.participants:,} participants,"
        f" {result.organizations} organizations ({result.date})\n\n"
        f"```sh\n{result.command}\n```\n\n"
        f"Machine: {result.machine}. Store: {result.store}. Settings: "
        + ", ".join(f"{k} {v}" for k, v in result.settings.items())
        + ".\n\n"
        f"| figure | value |\n|---|---|\n{table}\n"
    )
