"""C-CDA R2.1 documents from a site, made into the participant's FHIR R4 resources.

The same contract as :func:`ehrfetch.normalize.fhir_bundle.normalize_bundle`:

1. the document is refused whole (``UnreadableDocument``) when it is over the size cap,
   not well-formed, declares a DTD (entities — billion laughs, external files — have no
   place in a C-CDA and are never expanded), or is not a CDA ``ClinicalDocument``;
   and (``WrongPatientError``) when ``patient_id`` is given and the document is about
   someone else (``check_ccda_patient``);
2. sections and entries are recognised by templateId (``ccda_entries.py``) and mapped
   to FHIR resources with canonical code systems;
3. each resource gets ``subject``/``patient`` = ``Patient/{research id}``, a dedup key
   (``dedup.py``) and an id derived from it (``fhir_id_for``), and is validated with
   ``fhir.resources.R4B`` — fhir.resources 8.x has no R4 package; R4B is wire-compatible
   with R4 for every resource type made here (once per distinct resource in a process:
   ``validation.py``). An invalid or unmappable entry is skipped with its reason (never a
   value from the document); the rest goes on.

A nonXMLBody document (embedded or referenced PDF/text) has no entries: it yields no
resources and is stored as it is by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from ehrfetch.errors import UnreadableDocument
from ehrfetch.normalize.ccda_entries import SECTION_KINDS, Outcome, read_section
from ehrfetch.normalize.ccda_header import check_ccda_patient_root
from ehrfetch.normalize.ccda_values import CDA_NS, Narrative, child, q, template_ids
from ehrfetch.normalize.codes import canonicalize_codings
from ehrfetch.normalize.dedup import dedup_key
from ehrfetch.normalize.fhir_bundle import (
    NormalizedDocument,
    NormalizedResource,
    SkippedEntry,
    fhir_id_for,
)
from ehrfetch.normalize.validation import validate_resource
from ehrfetch.normalize.xml import parse_xml

MAX_CCDA_BYTES = 20 * 1024 * 1024
"""Documents above this are refused unread: real C-CDAs are well under 5 MiB."""

_PATIENT_FIELD = {"AllergyIntolerance": "patient", "Immunization": "patient"}


@dataclass(frozen=True, slots=True)
class EntryReport:
    """One clinical statement and what became of it (for coverage counting)."""

    section_kind: str
    resource_type: str
    coded: bool
    produced: bool
    reason: str | None


@dataclass
class CcdaReading:
    document: NormalizedDocument
    entries: list[EntryReport] = field(default_factory=list)
    structured: bool = True
    """False for a nonXMLBody document (stored, not parsed)."""


def normalize_ccda(body: bytes, *, research_id: str, patient_id: str | None) -> NormalizedDocument:
    """The participant's resources from a C-CDA about the site's patient ``patient_id``."""
    return read_ccda(body, research_id=research_id, patient_id=patient_id).document


def read_ccda(body: bytes, *, research_id: str, patient_id: str | None) -> CcdaReading:
    """:func:`normalize_ccda`, plus what became of each entry (the coverage benchmark's view)."""
    root = _parse(body)
    if patient_id is not None:
        check_ccda_patient_root(root, patient_id)  # the same tree: one parse, not two
    structured = child(root, "component", "structuredBody")
    reading = CcdaReading(NormalizedDocument(), structured=structured is not None)
    if structured is None:
        return reading
    narrative = Narrative(root)
    outcomes: list[Outcome] = []
    for section in structured.iter(q("section")):
        kind = _section_kind(section)
        if kind is not None:
            outcomes.extend(read_section(section, kind, narrative))
    _finish(outcomes, research_id, reading)
    return reading


def _parse(body: bytes) -> etree._Element:
    if len(body) > MAX_CCDA_BYTES:
        raise UnreadableDocument(f"C-CDA larger than the {MAX_CCDA_BYTES // 2**20} MiB cap")
    root = parse_xml(body)
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None:
        raise UnreadableDocument("C-CDA declares a DTD (entity declarations are refused)")
    if root.tag != f"{{{CDA_NS}}}ClinicalDocument":
        raise UnreadableDocument("not a CDA document (no ClinicalDocument root)")
    return root


def _section_kind(section: etree._Element) -> str | None:
    for template in template_ids(section):
        if template in SECTION_KINDS:
            return SECTION_KINDS[template]
    return None


def _finish(outcomes: list[Outcome], research_id: str, reading: CcdaReading) -> None:
    seen: set[tuple[str, str]] = set()
    for index, outcome in enumerate(outcomes):
        diagnosis_refs = [
            ref
            for diagnosis in outcome.diagnoses
            if (ref := _keep(diagnosis, index, research_id, reading, seen)) is not None
        ]
        if outcome.resource is not None and diagnosis_refs:
            outcome.resource["diagnosis"] = [
                {"condition": {"reference": r}} for r in diagnosis_refs
            ]
        _keep(outcome, index, research_id, reading, seen)


def _keep(
    outcome: Outcome,
    index: int,
    research_id: str,
    reading: CcdaReading,
    seen: set[tuple[str, str]],
) -> str | None:
    """Validate and add one outcome's resource; its reference, or None if skipped."""
    rtype = outcome.resource_type
    resource = outcome.resource
    problem = outcome.reason
    key = ""
    if resource is not None:
        key = _finalize(resource, research_id)
        problem = validate_resource(resource)
    if resource is None or problem is not None:
        reason = problem or "not mapped"
        reading.document.skipped.append(SkippedEntry(index, rtype, reason))
        reading.entries.append(EntryReport(outcome.kind, rtype, outcome.coded, False, reason))
        return None
    reading.entries.append(EntryReport(outcome.kind, rtype, outcome.coded, True, None))
    reference = f"{rtype}/{resource['id']}"
    if (rtype, key) in seen:
        return reference  # the same fact twice in one document (a CCD lists it twice)
    seen.add((rtype, key))
    reading.document.resources.append(
        NormalizedResource(rtype, resource["id"], key, resource, outcome.source_id)
    )
    return reference


def _finalize(resource: dict[str, Any], research_id: str) -> str:
    """Point the resource at the participant and give it its id; returns its dedup key."""
    canonicalize_codings(resource)
    rtype = resource["resourceType"]
    resource[_PATIENT_FIELD.get(rtype, "subject")] = {"reference": f"Patient/{research_id}"}
    key = dedup_key(resource)
    resource["id"] = fhir_id_for(research_id, rtype, key)
    return key
