"""FHIR Bundles from a site, made into the participant's resources.

What a site sends is about *its* patient (its local id) and refers to *its* resources.
What ehrfetch stores is about the participant (their research id) and must merge with
what other sites sent. So each clinical resource is:

1. checked to be about the linked patient — a Bundle about anyone else is refused whole
   (it is a stranger's record; nothing of it may land in the participant's file);
2. given canonical code systems, and a dedup key (``dedup.py``) and an id derived from
   the key, so the same fact from any site gets the same id;
3. re-pointed: ``subject``/``patient`` to ``Patient/{research id}``, references between
   kept resources to their new ids, references to anything not kept reduced to their
   display text;
4. stripped of what is the site's, not the fact's: ``meta`` and the narrative ``text``
   (narratives routinely repeat the patient's name and address);
5. validated with ``fhir.resources.R4B`` (fhir.resources 8.x has no R4 package; R4B is
   wire-compatible with R4 for every resource type kept here). An invalid resource is
   skipped with its reason; the rest of the document goes on.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from ehrfetch.errors import UnreadableDocument, WrongPatientError
from ehrfetch.normalize.codes import canonicalize_codings
from ehrfetch.normalize.dedup import dedup_key

CLINICAL_TYPES = frozenset(
    {
        "AllergyIntolerance", "CarePlan", "Condition", "DiagnosticReport", "Encounter",
        "FamilyMemberHistory", "Goal", "Immunization", "MedicationAdministration",
        "MedicationDispense", "MedicationRequest", "MedicationStatement", "Observation",
        "Procedure", "ServiceRequest",
    }
)  # fmt: skip
_PATIENT_FIELDS = ("subject", "patient")


@dataclass(frozen=True, slots=True)
class NormalizedResource:
    resource_type: str
    fhir_id: str
    dedup_key: str
    body: dict[str, Any]
    source_id: str | None
    """The resource's id in the source document."""


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    index: int
    resource_type: str | None
    reason: str


@dataclass
class NormalizedDocument:
    resources: list[NormalizedResource] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)


def fhir_id_for(research_id: str, resource_type: str, key: str) -> str:
    """The same fact of the same participant gets the same id, from any site."""
    return hashlib.sha256(f"{research_id}|{resource_type}|{key}".encode()).hexdigest()[:40]


def normalize_bundle(
    body: bytes, *, research_id: str, patient_id: str | None
) -> NormalizedDocument:
    """The participant's resources from a Bundle about the site's patient ``patient_id``.

    ``patient_id`` None (a local file, ``ehrfetch convert``): no patient check — the
    Bundle's Patients and the patients its resources are about are all taken as the
    participant.
    """
    try:
        bundle = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UnreadableDocument(f"not JSON (at character {exc.pos})") from None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise UnreadableDocument("not a FHIR Bundle")
    entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    patient_refs = _patient_references(entries, patient_id)

    document = NormalizedDocument()
    kept: list[tuple[int, str, dict[str, Any], str | None]] = []
    new_refs: dict[str, str] = {}
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            document.skipped.append(SkippedEntry(index, None, "entry has no resource"))
            continue
        kind = resource.get("resourceType")
        if kind == "Patient" or kind not in CLINICAL_TYPES:
            continue
        _check_subject(resource, patient_refs, index)
        work = copy.deepcopy(resource)
        canonicalize_codings(work)
        key = dedup_key(work)
        fhir_id = fhir_id_for(research_id, kind, key)
        source_id = resource.get("id") if isinstance(resource.get("id"), str) else None
        for alias in _aliases(entry, kind, source_id):
            new_refs[alias] = f"{kind}/{fhir_id}"
        kept.append((index, key, work, source_id))

    seen: set[tuple[str, str]] = set()
    for index, key, work, source_id in kept:
        kind = work["resourceType"]
        if (kind, key) in seen:
            continue  # the same fact twice in one document
        final = _repoint(work, research_id, new_refs, patient_refs)
        final["id"] = fhir_id_for(research_id, kind, key)
        problem = _validate(final)
        if problem is not None:
            document.skipped.append(SkippedEntry(index, kind, problem))
            continue
        seen.add((kind, key))
        document.resources.append(NormalizedResource(kind, final["id"], key, final, source_id))
    return document


def _aliases(entry: dict[str, Any], kind: str, source_id: str | None) -> list[str]:
    aliases = []
    full_url = entry.get("fullUrl")
    if isinstance(full_url, str) and full_url:
        aliases.append(full_url)
        # An absolute fullUrl (https://site/fhir/Condition/7) is also referred to relatively.
        tail = "/".join(full_url.rstrip("/").split("/")[-2:])
        if tail.startswith(f"{kind}/"):
            aliases.append(tail)
    if source_id:
        aliases.append(f"{kind}/{source_id}")
    return aliases


def _patient_references(entries: list[dict[str, Any]], patient_id: str | None) -> set[str]:
    """Every way this Bundle may refer to the linked patient; refuse it if it has another."""
    refs = {f"Patient/{patient_id}"} if patient_id is not None else _subjects(entries)
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") != "Patient":
            continue
        ids = {resource.get("id")} | {
            i.get("value") for i in resource.get("identifier") or [] if isinstance(i, dict)
        }
        if patient_id is not None and patient_id not in ids:
            raise WrongPatientError("the document's Patient is not the linked patient")
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            refs.add(full_url)
            refs.add("/".join(full_url.rstrip("/").split("/")[-2:]))
        if isinstance(resource.get("id"), str):
            refs.add(f"Patient/{resource['id']}")
    return refs


def _subjects(entries: list[dict[str, Any]]) -> set[str]:
    """Every patient the Bundle's resources are about (no linked patient to check against)."""
    refs: set[str] = set()
    for entry in entries:
        resource = entry.get("resource")
        for name in _PATIENT_FIELDS:
            ref = resource.get(name) if isinstance(resource, dict) else None
            target = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(target, str) and _is_patient_reference(target):
                refs.add(target)
    return refs


def _is_patient_reference(target: str) -> bool:
    return target.startswith(("Patient/", "urn:")) or "/Patient/" in target


def _check_subject(resource: dict[str, Any], patient_refs: set[str], index: int) -> None:
    for name in _PATIENT_FIELDS:
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
            target = ref["reference"]
            if _is_patient_reference(target):
                tail = "/".join(target.rstrip("/").split("/")[-2:])
                if target not in patient_refs and tail not in patient_refs:
                    raise WrongPatientError(
                        f"entry {index} ({resource.get('resourceType')}) is about another patient"
                    )


def _repoint(node: Any, research_id: str, new_refs: dict[str, str], patient_refs: set[str]) -> Any:
    if isinstance(node, list):
        return [_repoint(item, research_id, new_refs, patient_refs) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for name, value in node.items():
        if name in ("meta", "text") and "resourceType" in node:
            continue
        if name == "reference" and isinstance(value, str):
            continue  # handled below, with the rest of the Reference
        out[name] = _repoint(value, research_id, new_refs, patient_refs)
    reference = node.get("reference")
    if isinstance(reference, str):
        tail = "/".join(reference.rstrip("/").split("/")[-2:])
        if reference in patient_refs or tail in patient_refs:
            return {"reference": f"Patient/{research_id}"}
        target = new_refs.get(reference) or new_refs.get(tail)
        if target is not None:
            out["reference"] = target
        elif "display" not in out:
            return {"display": f"(not kept: {tail.split('/')[0]})"}
    return out


def _validate(resource: dict[str, Any]) -> str | None:
    model = get_fhir_model_class(resource["resourceType"])
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        # loc and msg only: the input value may be anything the site wrote.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return f"invalid FHIR at {where}: {first['msg']}{more}"
    return None
