"""Code systems: every alias a site may send, mapped to the canonical FHIR URI.

Sites send SNOMED CT as ``http://snomed.info/sct``, as its OID, as ``urn:oid:`` + OID,
or with a version path; a fact coded two ways must still compare equal, so codes are
canonicalized before dedup keys are built. C-CDA (a later reader) uses the OIDs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
NDC = "http://hl7.org/fhir/sid/ndc"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD9CM = "http://hl7.org/fhir/sid/icd-9-cm"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "urn:oid:2.16.840.1.113883.6.285"
UCUM = "http://unitsofmeasure.org"

OID_TO_URI: dict[str, str] = {
    "2.16.840.1.113883.6.96": SNOMED,
    "2.16.840.1.113883.6.1": LOINC,
    "2.16.840.1.113883.6.88": RXNORM,
    "2.16.840.1.113883.12.292": CVX,
    "2.16.840.1.113883.6.69": NDC,
    "2.16.840.1.113883.6.90": ICD10CM,
    "2.16.840.1.113883.6.103": ICD9CM,
    "2.16.840.1.113883.6.104": ICD9CM,  # ICD-9-CM procedures, same URI family in FHIR
    "2.16.840.1.113883.6.12": CPT,
    "2.16.840.1.113883.6.285": HCPCS,
    "2.16.840.1.113883.6.8": UCUM,
}

# Spellings seen in the wild for the same systems (lower-cased, no trailing slash).
_ALIASES: dict[str, str] = {
    "http://snomed.info/sct": SNOMED,
    "http://www.snomed.org": SNOMED,
    "snomed": SNOMED,
    "snomed-ct": SNOMED,
    "http://loinc.org": LOINC,
    "loinc": LOINC,
    "http://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "rxnorm": RXNORM,
    "http://hl7.org/fhir/sid/cvx": CVX,
    "cvx": CVX,
    "http://hl7.org/fhir/sid/ndc": NDC,
    "ndc": NDC,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10CM,
    "icd-10-cm": ICD10CM,
    "icd10cm": ICD10CM,
    "http://hl7.org/fhir/sid/icd-9-cm": ICD9CM,
    "icd-9-cm": ICD9CM,
    "http://www.ama-assn.org/go/cpt": CPT,
    "cpt": CPT,
    "http://unitsofmeasure.org": UCUM,
    "ucum": UCUM,
}

# Which coding names a fact when it carries several (translations): the most specific
# clinical terminology first.
PREFERENCE: tuple[str, ...] = (LOINC, SNOMED, RXNORM, CVX, ICD10CM, CPT, HCPCS, NDC, ICD9CM)


@lru_cache(maxsize=4096)
def canonical_system(system: str) -> str:
    # Cached: a few dozen distinct spellings recur in every Coding of every document;
    # bounded, so a site sending endless distinct systems costs only a cache miss each.
    value = system.strip()
    lowered = value.lower().rstrip("/")
    if lowered.startswith("urn:oid:"):
        return OID_TO_URI.get(lowered[len("urn:oid:") :], value)
    if lowered in OID_TO_URI:
        return OID_TO_URI[lowered]
    if lowered.startswith("http://snomed.info/sct"):
        return SNOMED  # version paths: http://snomed.info/sct/731000124108/version/…
    return _ALIASES.get(lowered, value)


def canonicalize_codings(node: Any) -> None:
    """Rewrite every ``system`` of a Coding (and Quantity) in place, recursively."""
    if isinstance(node, dict):
        _canonicalize_object(node)
    elif isinstance(node, list):
        _canonicalize_array(node)


# The walk runs over every element of every resource: the two helpers recurse only into
# containers, so a string or number costs one type check, not a call.
def _canonicalize_object(node: dict[str, Any]) -> None:
    system = node.get("system")
    if isinstance(system, str) and ("code" in node or "value" in node):
        node["system"] = canonical_system(system)
    for value in node.values():
        if isinstance(value, dict):
            _canonicalize_object(value)
        elif isinstance(value, list):
            _canonicalize_array(value)


def _canonicalize_array(node: list[Any]) -> None:
    for item in node:
        if isinstance(item, dict):
            _canonicalize_object(item)
        elif isinstance(item, list):
            _canonicalize_array(item)


def preferred_coding(concept: Any) -> tuple[str, str] | None:
    """(system, code) of the coding that names a CodeableConcept, by PREFERENCE."""
    if not isinstance(concept, dict):
        return None
    codings = [
        (c["system"], str(c["code"]).strip())
        for c in concept.get("coding") or []
        if isinstance(c, dict) and isinstance(c.get("system"), str) and c.get("code")
    ]
    if not codings:
        return None
    rank = {system: n for n, system in enumerate(PREFERENCE)}
    return min(codings, key=lambda sc: (rank.get(sc[0], len(rank)), sc[0], sc[1]))
