"""The entry points: how many documents a patient has at an organization, and each one."""

from __future__ import annotations

import re

from ._rand import derive_int, rng
from .ccda import render_ccda
from .fhir_bundle import render_bundle
from .model import DocSubject, DocumentMix, GeneratedDocument
from .pdf import render_pdf
from .snapshot import build_snapshot
from .text import note_lines, render_text

FHIR_JSON = "application/fhir+json"
CCDA_XML = "application/hl7-v3+xml"
PLAIN_XML = "application/xml"
PDF = "application/pdf"
TEXT = "text/plain"

# How much history each kind carries: an encounter bundle is lean (about 15 resources), a
# C-CDA summary carries more of the chart.
_FHIR_LIMITS = {"problems": 4, "medications": 3, "immunizations": 2, "labs": 1, "procedures": 1}
_CCDA_LIMITS = {"problems": 6, "medications": 5, "immunizations": 5, "labs": 2, "procedures": 3}
_NOTE_LIMITS = {"problems": 5, "medications": 5, "immunizations": 0, "labs": 1, "procedures": 0}

_SAFE = re.compile(r"^[A-Za-z0-9-]+$")

DEFAULT_MIX = DocumentMix()


def make_doc_id(org_id: str, patient_id: str, index: int) -> str:
    """URL-safe and FHIR-id-safe; readable (and reversible) when the parts allow it."""
    readable = f"{org_id}.{patient_id}.{index}"
    if _SAFE.match(org_id) and _SAFE.match(patient_id) and len(readable) <= 64:
        return readable
    return "d" + format(derive_int("doc-id", org_id, patient_id, index), "016x") + f".{index}"


def parse_doc_id(doc_id: str, org_id: str) -> tuple[str, int] | None:
    """(patient_id, index) back from a readable doc id of ``org_id``; None if not readable."""
    prefix = org_id + "."
    if not doc_id.startswith(prefix):
        return None
    patient_id, _, index = doc_id[len(prefix) :].rpartition(".")
    if not patient_id or not index.isdigit() or not _SAFE.match(patient_id):
        return None
    return patient_id, int(index)


def document_count(subject: DocSubject, org_id: str, seed: int, low: int = 1, high: int = 8) -> int:
    if low < 0 or high < low:
        raise ValueError(f"need 0 <= low <= high, got low={low} high={high}")
    r = rng("doc-count", seed, org_id, subject.patient_id, subject.person_key)
    # Skewed toward few documents: most patients have a handful of visits, some have many.
    return low + min(high - low, int(r.random() ** 1.7 * (high - low + 1)))


def _kind(roll: float, mix: DocumentMix) -> str:
    weights = (("fhir", mix.fhir), ("ccda", mix.ccda), ("pdf", mix.pdf), ("text", mix.text))
    total = sum(max(0.0, w) for _, w in weights)
    if total <= 0:
        raise ValueError("DocumentMix needs at least one positive weight")
    point = roll * total
    for kind, weight in weights:
        point -= max(0.0, weight)
        if point < 0:
            return kind
    return next(kind for kind, w in reversed(weights) if w > 0)


def make_document(
    subject: DocSubject,
    org_id: str,
    org_name: str,
    seed: int,
    index: int,
    mix: DocumentMix = DEFAULT_MIX,
) -> GeneratedDocument:
    r = rng("doc-kind", seed, org_id, subject.patient_id, index)
    kind = _kind(r.random(), mix)
    doc_id = make_doc_id(org_id, subject.patient_id, index)
    if kind == "fhir":
        snap = build_snapshot(subject, org_id, org_name, seed, index, False, _FHIR_LIMITS)
        document = r.random() < 0.4
        title = "Encounter summary" if not document else "Patient summary document"
        return GeneratedDocument(
            doc_id, FHIR_JSON, render_bundle(snap, document, title), title, "34133-9", snap.doc_date
        )
    if kind == "ccda":
        discharge = r.random() < 0.3
        snap = build_snapshot(subject, org_id, org_name, seed, index, discharge, _CCDA_LIMITS)
        title = f"{org_name}: " + (
            "Discharge Summary" if discharge else "Continuity of Care Document"
        )
        content_type = CCDA_XML if r.random() < 0.8 else PLAIN_XML
        return GeneratedDocument(
            doc_id,
            content_type,
            render_ccda(snap, discharge, title),
            title,
            "18842-5" if discharge else "34133-9",
            snap.doc_date,
        )
    snap = build_snapshot(subject, org_id, org_name, seed, index, False, _NOTE_LIMITS)
    if kind == "pdf":
        title = "Scanned clinic note"
        body = render_pdf(title, note_lines(snap, "Clinic note (scanned)"), snap.doc_date)
        return GeneratedDocument(doc_id, PDF, body, title, "11506-3", snap.doc_date)
    title = "Progress note"
    return GeneratedDocument(
        doc_id, TEXT, render_text(snap, title), title, "11506-3", snap.doc_date
    )
