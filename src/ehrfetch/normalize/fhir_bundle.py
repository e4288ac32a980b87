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
   skipped with its reason; the rest of the document goes on. A resource identical to
   one already found valid in this process is not validated again (``validation.py``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from ehrfetch.errors import UnreadableDocument, WrongPatientError
from ehrfetch.normalize.codes import canonicalize_codings
from ehrfetch.normalize.dedup import dedup_key
from ehrfetch.normalize.validation import validate_resource

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
    kept: list[tuple[int, str, str, dict[str, Any], str | None]] = []
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
        source_id = resource.get("id") if isinstance(resource.get("id"), str) else None
        # In place: ``bundle`` is this function's own parse of ``body``, seen by no one
        # else, so there is nothing to copy it for. The key is built from the canonical
        # codes but *before* re-pointing (a Medication reference not kept must still
        # key by its display, not by the placeholder re-pointing leaves).
        canonicalize_codings(resource)
        key = dedup_key(resource)
        fhir_id = fhir_id_for(research_id, kind, key)
        for alias in _aliases(entry, kind, source_id):
            new_refs[alias] = f"{kind}/{fhir_id}"
        kept.append((index, key, fhir_id, resource, source_id))

    seen: set[tuple[str, str]] = set()
    repoint = _Repointer(research_id, new_refs, patient_refs)
    for index, key, fhir_id, work, source_id in kept:
        kind = work["resourceType"]
        if (kind, key) in seen:
            continue  # the same fact twice in one document
        # The one copy: the stored body shares nothing with the parsed Bundle.
        final = repoint.resource(work)
        final["id"] = fhir_id
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


class _Repointer:
    """Copies a resource re-pointed to the participant, without ``meta`` and ``text``.

    One recursive copy of the canonicalized resource (a ``Reference`` is any object with
    a string ``reference``), the single place a stored body is built.
    """

    __slots__ = ("_new_refs", "_patient", "_patient_refs")

    def __init__(self, research_id: str, new_refs: dict[str, str], patient_refs: set[str]) -> None:
        self._patient = f"Patient/{research_id}"
        self._new_refs = new_refs
        self._patient_refs = patient_refs

    def resource(self, resource: dict[str, Any]) -> dict[str, Any]:
        return self._object(resource)

    def _node(self, node: Any) -> Any:
        if isinstance(node, dict):
            return self._object(node)
        if isinstance(node, list):
            return [self._node(item) for item in node]
        return node

    def _object(self, node: dict[str, Any]) -> dict[str, Any]:
        # A resource (a contained one too) sheds the site's meta and narrative.
        strip = "resourceType" in node
        reference = node.get("reference")
        if not isinstance(reference, str):
            reference = None
        out: dict[str, Any] = {}
        for name, value in node.items():
            if strip and (name == "meta" or name == "text"):
                continue
            if reference is not None and name == "reference":
                continue  # handled below, with the rest of the Reference
            if isinstance(value, dict):
                out[name] = self._object(value)
            elif isinstance(value, list):
                out[name] = [self._node(item) for item in value]
            else:
                out[name] = value
        if reference is None:
            return out
        tail = "/".join(reference.rstrip("/").split("/")[-2:])
        if reference in self._patient_refs or tail in self._patient_refs:
            return {"reference": self._patient}
        target = self._new_refs.get(reference) or self._new_refs.get(tail)
        if target is not None:
            out["reference"] = target
        elif "display" not in out:
            return {"display": f"(not kept: {tail.split('/')[0]})"}
        return out


_validate = validate_resource
"""Kept under its old name: ``ccda.py`` and older callers import it from here."""
