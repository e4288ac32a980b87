"""``ehrfetch bench normalize``: every figure reported, and the counts are normalize's own.

No timing is asserted (the machine's load decides that); only that the figures exist,
are sane, and describe the inputs the bench says it measured.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ehrfetch.bench.ccda_coverage import as_document
from ehrfetch.bench.normalize import (
    RESEARCH_ID,
    Budget,
    ccda_inputs,
    run_normalize_bench,
    synthetic_bundles,
)
from ehrfetch.cli import app
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.fhir_bundle import normalize_bundle
from support import require_ccda_examples

_FRAGMENTS = (
    "Problems/Active_Problem/Active_Problem_C-CDA2.1.xml",
    "Vital_Signs/Panel_of_Vital_Signs_in_Metric_Units/Panel_of_Vital_Signs_in_Metric_Units_C-CDA2.1.xml",
)
_DOCUMENT = "Documents/CCD/CCD_2/CCD.xml"
_NUMBERS = (
    "documents", "resources", "megabytes", "rounds", "docs_per_s", "resources_per_s",
    "mb_per_s", "docs_per_cpu_s", "resources_per_cpu_s", "cpu_ms_per_doc_median",
    "parse_docs_per_s", "ratio_to_parse", "validate_resources_per_s", "validation_share",
)  # fmt: skip
_CCDA_NUMBERS = ("plain_parse_docs_per_s", "ratio_to_plain_parse")


@pytest.fixture
def ccda_dir(tmp_path: Path) -> Path:
    """One whole CCD and two section fragments: both C-CDA groups, quickly."""
    examples = require_ccda_examples()
    folder = tmp_path / "ccda"
    for name in (_DOCUMENT, *_FRAGMENTS):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(examples / name, target)
    return folder


def test_cli_reports_every_figure_and_normalizes_own_counts(ccda_dir: Path) -> None:
    args = ["bench", "normalize", "--rounds", "1", "--bundles", "4", "--ccda-dir", str(ccda_dir)]
    result = CliRunner().invoke(app, [*args, "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)

    bundles = synthetic_bundles(4)
    expected_fhir = sum(
        len(normalize_bundle(b.body, research_id=RESEARCH_ID, patient_id=b.patient_id).resources)
        for b in bundles
    )
    # Read the files independently of the bench (no patient check, plain wrapping): adding
    # a recordTarget so the check runs must not change what a document yields.
    raw = {name: (ccda_dir / name).read_bytes() for name in (_DOCUMENT, *_FRAGMENTS)}
    expected_documents = _ccda_count([raw[_DOCUMENT]])
    expected_sections = _ccda_count([raw[name] for name in _FRAGMENTS])
    assert expected_fhir > 4 * 10  # ~15-entry Bundles, nearly all clinical
    assert expected_documents > 0 and expected_sections > 0

    for group, documents, resources in (
        ("fhir", 4, expected_fhir),
        ("ccda_documents", 1, expected_documents),
        ("ccda_sections", 2, expected_sections),
    ):
        _assert_sane(figures[group], group.startswith("ccda"))
        assert figures[group]["documents"] == documents, group
        assert figures[group]["resources"] == resources, group
        assert figures[group]["rounds"] == 1, group
    assert figures["budget"] == "1 timed rounds per group"
    assert figures["ccda_dir"] == str(ccda_dir)
    assert 0 < figures["cpu_over_wall"] <= 1.5


def test_seconds_and_rounds_are_exclusive(ccda_dir: Path) -> None:
    result = CliRunner().invoke(
        app, ["bench", "normalize", "--rounds", "1", "--seconds", "1", "--ccda-dir", str(ccda_dir)]
    )
    assert result.exit_code != 0


def test_time_budget_takes_at_least_three_passes(ccda_dir: Path) -> None:
    result = run_normalize_bench(ccda_dir, budget=Budget(seconds=0.0), bundles=2)
    assert result.fhir.rounds >= 3
    assert result.ccda_sections.rounds >= 3


def test_inputs_differ_and_are_about_their_patient(ccda_dir: Path) -> None:
    bundles = synthetic_bundles(30)
    assert len({b.body for b in bundles}) == 30
    assert len({b.patient_id for b in bundles}) == 30
    documents, sections = ccda_inputs(ccda_dir)
    assert [d.patient_id for d in documents] == ["98765432"]  # CCD_2's recordTarget id
    assert len(sections) == 2


def _ccda_count(bodies: list[bytes]) -> int:
    return sum(
        len(normalize_ccda(as_document(b), research_id=RESEARCH_ID, patient_id=None).resources)
        for b in bodies
    )


def _assert_sane(group: dict[str, Any], ccda: bool) -> None:
    for key in _NUMBERS + (_CCDA_NUMBERS if ccda else ()):
        value = group[key]
        assert isinstance(value, int | float) and value > 0, (key, value)
    # Normalizing parses the bytes and does more; the bound is loose on purpose (timer
    # noise on one pass of a tiny input), it only catches a swapped ratio.
    assert 0 < group["ratio_to_parse"] < 5
    assert 0 < group["validation_share"] < 5
    assert group["parser"]
    if ccda:
        assert 0 < group["ratio_to_plain_parse"] < 5
        assert group["plain_parser"]
    else:
        assert group.get("plain_parser") is None
