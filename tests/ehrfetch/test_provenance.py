"""The Provenance ``build_provenance`` writes is valid FHIR R4, in each of its shapes.

It is not validated when built (once per stored document, it was 5 % of a batch
worker's CPU), so this is where its construction is checked: with and without the
attachment's SHA-1, with one target and with many, against fhir.resources' R4B model
(wire-compatible with R4 for Provenance).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.provenance import Provenance

from ehrfetch.provenance import SourceDocument, build_provenance, provenance_id

SOURCES = [
    SourceDocument("org-1", "Org One", "doc-1", "https://org1.example/fhir/Binary/b1",
                   "ab" * 32, "qUqP5cyxm6YcTAhz05Hph5gvu9M=", "application/fhir+json"),
    SourceDocument("org.2", "Clínica São José", "DOC.2-x", "https://o2.example/b?x=1&token=s3cret",
                   "cd" * 32, None, "application/xml; charset=utf-8"),
]  # fmt: skip
TARGETS = [
    [("Condition", "c1")],
    [(kind, f"{kind.lower()}-{n}") for n in range(40) for kind in ("Observation", "Encounter")],
]


@pytest.mark.parametrize("source", SOURCES, ids=["with-sha1", "without-sha1"])
@pytest.mark.parametrize("targets", TARGETS, ids=["one-target", "many-targets"])
def test_what_is_built_is_valid_fhir(
    source: SourceDocument, targets: list[tuple[str, str]]
) -> None:
    recorded = datetime(2026, 6, 1, 12, 0, 0, 5, tzinfo=timezone(timedelta(hours=-5)))
    body = build_provenance(
        research_id="R1", source=source, targets=targets, purpose_of_use="T-IAS",
        recorded=recorded,
    )  # fmt: skip
    model = Provenance.model_validate(body)
    assert model.id == provenance_id("R1", source)
    assert [t.reference for t in model.target or []] == [f"{k}/{i}" for k, i in targets]
    assert model.recorded == recorded
    [entity] = model.entity or []
    assert entity.what.reference == f"DocumentReference/{source.document_reference_id}"
    assert (entity.what.extension is not None) == (source.sha1 is not None)
    # The URL shown is sanitized: no query string (it may carry a token).
    assert "s3cret" not in str(body)


def test_a_time_without_a_zone_is_refused() -> None:
    # A FHIR instant has a zone; the per-document validation caught this, now the builder.
    with pytest.raises(ValueError, match="timezone"):
        build_provenance(
            research_id="R1", source=SOURCES[0], targets=TARGETS[0], purpose_of_use="T-IAS",
            recorded=datetime(2026, 6, 1, 12, 0),
        )  # fmt: skip
