"""``ehrfetch bench throughput`` runs end to end and reports every figure (not how fast).

It starts the mock network and the pipeline (``ehrfetch run``, a temporary Prefect
server) as processes of their own on 127.0.0.1, like an operator's run: about a minute.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from ehrfetch.bench.rss_curve import RssCurve, at_shares
from ehrfetch.bench.throughput import (
    PROFILES,
    TreePeak,
    ehrfetch_hotspots,
    network_config,
    top_of_profile,
)
from ehrfetch.cli_bench import reproducible_command

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, str]:
    work = tmp_path_factory.mktemp("throughput")
    record = work / "benchmarks.md"
    record.write_text("# Benchmarks\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EHRFETCH__", "PREFECT_"))}
    ehrfetch = str(Path(sys.executable).parent / "ehrfetch")
    done = subprocess.run(
        [ehrfetch, "bench", "throughput", "--participants", "200", "--limit-seconds", "2",
         "--workdir", str(work / "run"), "--out", str(work / "out.json"), "--record", str(record)],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return orjson.loads((work / "out.json").read_bytes()), record.read_text(), done.stdout


def test_every_figure_is_reported(bench: tuple[dict[str, Any], str, str]) -> None:
    figures, _, _ = bench
    pipeline, requests = figures["pipeline"], figures["requests"]
    assert figures["participants"] == 200 and figures["organizations"] == 5
    assert pipeline["exit_code"] in (0, 1)
    assert pipeline["participants_done"] == 200
    assert pipeline["participants_per_s"] > 0
    # Every participant was looked up at every organization: at least 5 $match each.
    assert requests["per_s_by_kind"].keys() >= {"match", "search", "binary"}
    assert requests["total"] >= 5 * 200
    assert pipeline["calls_by_operation"]["match"] == 5 * 200
    for operation in ("match", "search_documents", "fetch_document"):
        assert 0 < pipeline["latency_ms_p50"][operation] <= pipeline["latency_ms_p99"][operation]
    assert 0 <= requests["share_429"] < 1
    assert requests["client_cpu_ms_per_request"] > 0
    assert pipeline["documents_stored"] > 0 and pipeline["documents_per_s"] > 0
    assert pipeline["resources_derived"] >= pipeline["resources_distinct"] > 0
    assert pipeline["resources_per_s"] > 0
    assert pipeline["peak_rss_mb"] > 0 and pipeline["tree_peak_rss_mb"] > 0
    assert figures["network"]["peak_rss_mb"] > 0
    assert pipeline["store_bytes"] > 0
    # The limits, measured in the same run, and the ratios to them.
    assert figures["http_limit"]["requests"] > 0 and figures["http_limit"]["requests_per_s"] > 0
    assert figures["validation_limit"]["resources"] > 0
    assert figures["validation_limit"]["resources_per_s"] > 0
    limit = figures["validation_limit"]
    assert limit["passes"] == 5  # the rate is the median pass's
    ratios = figures["ratios"]
    assert ratios["http_vs_plain_client"] == pytest.approx(
        requests["per_s"] / figures["http_limit"]["requests_per_s"], abs=1e-3
    )
    assert ratios["resources_vs_validation_alone"] == pytest.approx(
        pipeline["resources_per_s"] / figures["validation_limit"]["resources_per_s"], abs=1e-3
    )
    assert ratios["requests_vs_allowed_rate"] is None  # LAN: no allowance
    # What a pipeline costing nothing would reach: this run's resources per request at
    # the plain client's rate, against validation alone.
    assert ratios["resources_ceiling_at_plain_client_rate"] == pytest.approx(
        figures["http_limit"]["requests_per_s"]
        * pipeline["resources_derived"]
        / requests["total"]
        / figures["validation_limit"]["resources_per_s"],
        abs=1e-3,  # ratios are rounded to 3 decimals
    )
    # Where the machine's CPU went: the Prefect server the run starts did work; the
    # store here is SQLite, so PostgreSQL's share is whatever else ran (not negative).
    assert pipeline["prefect_server_cpu_s"] > 0
    assert pipeline["postgres_cpu_s"] >= 0
    # Memory against progress: sampled while the run went, counts only going up.
    curve = pipeline["rss_curve"]
    assert curve and all(mb > 0 for _, mb in curve), curve
    done = [d for d, _ in curve]
    assert done == sorted(set(done)) and done[-1] <= 200


def test_the_run_is_recorded_as_markdown_with_its_command(
    bench: tuple[dict[str, Any], str, str],
) -> None:
    figures, record, stdout = bench
    assert record.startswith("# Benchmarks\n")
    assert "### Throughput, LAN, 200 participants, 5 organizations" in record
    assert figures["command"].startswith("ehrfetch bench throughput --participants 200")
    assert figures["command"] in record and figures["machine"] in record
    rows = ("requests / s by kind", "share of 429 answers", "client CPU per request",
            "ratio: requests / plain client", "ratio: resources / validation alone",
            "CPU per participant: pipeline / network / PostgreSQL / Prefect servers / "
            "whole machine")  # fmt: skip
    for row in rows:
        assert f"| {row} |" in record
    assert "participants_per_s" in stdout


def test_the_wan_profile_delays_and_limits_every_organization() -> None:
    config = network_config(PROFILES["wan"], 3, 1000)
    assert config.count("[[orgs]]") == 3
    assert config.count("min_ms = 200.0, max_ms = 800.0") == 3
    assert config.count("rate_limit = { per_second = 40.0") == 3
    lan = network_config(PROFILES["lan"], 5, 1000)
    assert "latency" not in lan and "rate_limit" not in lan


def test_the_profile_summary_counts_self_time(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text("main (a.py:1);work (b.py:2) 3\nmain (a.py:1);other (c.py:3) 1\n")
    assert top_of_profile(raw) == [("work (b.py:2)", 0.75), ("other (c.py:3)", 0.25)]


def test_hotspots_are_ehrfetch_functions_with_what_they_call(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "run (asyncio/runners.py:1);acquire_participant (acquire.py:9);"
        "save_document (store/documents.py:3);execute (sqlalchemy/orm/session.py:5) 3\n"
        "run (asyncio/runners.py:1);acquire_participant (acquire.py:9) 1\n"
    )
    assert ehrfetch_hotspots(raw) == [
        ("acquire_participant (acquire.py)", 1.0),
        ("save_document (store/documents.py)", 0.75),
    ]


def test_tree_peak_counts_this_process() -> None:
    peak = TreePeak()
    peak.sample(os.getpid())
    assert peak.pipeline_kib > 0


def test_the_recorded_command_carries_the_settings_it_ran_under_but_no_secret() -> None:
    environ = {
        "EHRFETCH__ORCHESTRATION__TASK_RUNNER": "processes",
        "EHRFETCH__STORE__PASSWORD": "hunter2",
        "EHRFETCH__NETWORK__PRIVATE_KEY": "-----BEGIN",
        "HOME": "/root",
    }
    command = reproducible_command(["bench", "throughput", "--participants", "10"], environ)
    assert command == (
        "EHRFETCH__ORCHESTRATION__TASK_RUNNER=processes ehrfetch bench throughput --participants 10"
    )


def test_the_rss_curve_follows_the_progress_lines(tmp_path: Path) -> None:
    log = tmp_path / "pipeline.log"
    curve = RssCurve(log)
    curve.observe(1024)  # no log yet: nothing
    log.write_bytes(b"starting\n")
    curve.observe(1024)  # no progress line yet: nothing
    lines = [b"batches 0/3, participants 0/2999\n", b"noise " * 2000 + b"\n"]
    with log.open("ab") as fh:
        fh.writelines(lines)
    curve.observe(100 * 1024)
    curve.observe(150 * 1024)  # the same count: not a new point
    for n, kib in ((1000, 200), (2000, 210), (2999, 220)):
        with log.open("ab") as fh:
            fh.write(f"12:00 | INFO | batch done\nbatches 1/3, participants {n}/2999\n".encode())
        curve.observe(kib * 1024)
    assert curve.points == [(0, 100.0), (1000, 200.0), (2000, 210.0), (2999, 220.0)]
    # The table row: the points nearest to a tenth, a quarter, half … of the last count.
    assert at_shares(curve.points) == [(0, 100.0), (1000, 200.0), (2000, 210.0), (2999, 220.0)]
    assert at_shares([[10, 1.0], [20, 2.0]], shares=(0.5, 1.0)) == [(10, 1.0), (20, 2.0)]
    assert at_shares([]) == []


def test_a_run_stopped_after_a_while_reports_what_it_did(tmp_path: Path) -> None:
    # A cohort too large to finish, measured for a bounded time: the run is stopped as an
    # operator stops it (SIGTERM: those in flight finish, the rest is closed) and the
    # figures are those of the participants it did, not of the ones it never began.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EHRFETCH__", "PREFECT_"))}
    ehrfetch = str(Path(sys.executable).parent / "ehrfetch")
    done = subprocess.run(
        [ehrfetch, "bench", "throughput", "--participants", "3000", "--limit-seconds", "1",
         "--stop-after", "3", "--workdir", str(tmp_path / "run"), "--out",
         str(tmp_path / "out.json"), "--no-record"],
        cwd=PROJECT, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pipeline = orjson.loads((tmp_path / "out.json").read_bytes())["pipeline"]
    assert pipeline["exit_code"] == 143  # stopped by SIGTERM, cleanly
    assert pipeline["stopped_after_s"] >= 3
    assert pipeline["participants_interrupted"] > 0
    # Those never begun are not counted as done (nor in the outcomes, nor in the rate).
    assert pipeline["participants_done"] == sum(pipeline["outcomes"].values())
    assert pipeline["participants_done"] + pipeline["participants_interrupted"] <= 3000
    assert "stopped after" in done.stdout
