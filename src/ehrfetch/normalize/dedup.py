"""Dedup keys: when two resources are the same clinical fact.

A key is built from what makes a fact that fact — never from ids, narrative, metadata
or who recorded it — so the same fact sent by three sites (or twice by one) is stored
once, with every source kept in its lineage. Different facts must never share a key,
so when in doubt a part stays in the key (a near miss is stored twice, not merged).

| resource | key parts |
|---|---|
| Condition | preferred code; onset (or recorded) date, to the day; verification status |
| Observation | preferred code; effective time, to the minute; value; component values |
| MedicationRequest | medication code; authoredOn date |
| MedicationStatement | medication code; effective start date |
| AllergyIntolerance | substance code (one allergy per substance); verification status |
| Immunization | vaccine code; occurrence date; status |
| Procedure | procedure code; performed date (start), to the day; status |
| Encounter | class; type code; period start, to the minute |
| DiagnosticReport | code; effective time, to the minute |
| anything else | the whole resource without id, meta, text and references |

The "preferred code" is the coding of the most specific terminology present (LOINC,
SNOMED CT, RxNorm, CVX, ICD-10-CM, …; see ``codes.PREFERENCE``) after code systems are
canonicalized. A value is a quantity (number + unit), a code, or text. Times are compared
in UTC when they carry an offset.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ehrfetch.normalize.codes import preferred_coding

KeyParts = tuple[str, ...]


def dedup_key(resource: dict[str, Any]) -> str:
    """A stable hex key: same fact, same key, whichever site sent it."""
    kind = str(resource.get("resourceType"))
    builder = _BUILDERS.get(kind)
    parts = builder(resource) if builder is not None else _whole(resource)
    digest = hashlib.sha256("\x1f".join((kind, *parts)).encode()).hexdigest()
    return digest[:40]


def _code(concept: Any) -> str:
    coding = preferred_coding(concept)
    if coding is not None:
        return f"{coding[0]}|{coding[1]}"
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return "text|" + " ".join(concept["text"].casefold().split())
    return "-"


def _instant(value: Any, precision: str) -> str:
    """A FHIR date/dateTime cut to ``day`` or ``minute``; partial dates stay partial."""
    if not isinstance(value, str) or not value:
        return "-"
    if len(value) <= 10:  # YYYY, YYYY-MM, YYYY-MM-DD
        return value
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    # A site that records local time without an offset and one that records UTC can
    # still disagree here; that is a near miss kept apart, never a wrong merge.
    return parsed.strftime("%Y-%m-%d") if precision == "day" else parsed.strftime("%Y-%m-%dT%H:%M")


def _first(resource: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict) and name.endswith("Period"):
            value = value.get("start")
        if value:
            return value
    return None


def _number(value: Any) -> str:
    try:
        return str(Decimal(str(value)).normalize())
    except (InvalidOperation, ValueError):
        return str(value)


def _value(resource: dict[str, Any]) -> str:
    quantity = resource.get("valueQuantity")
    if isinstance(quantity, dict):
        unit = quantity.get("code") or quantity.get("unit") or ""
        return f"q|{_number(quantity.get('value'))}|{unit}"
    if "valueCodeableConcept" in resource:
        return "c|" + _code(resource["valueCodeableConcept"])
    for name in ("valueString", "valueBoolean", "valueInteger", "valueDateTime"):
        if name in resource:
            return f"{name}|{resource[name]}"
    return "-"


def _condition(r: dict[str, Any]) -> KeyParts:
    when = _first(r, "onsetDateTime", "onsetPeriod", "recordedDate")
    # A refuted condition is a different statement from a confirmed one of the same day.
    return (_code(r.get("code")), _instant(when, "day"), _code(r.get("verificationStatus")))


def _observation(r: dict[str, Any]) -> KeyParts:
    when = _first(r, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
    components = sorted(
        f"{_code(c.get('code'))}={_value(c)}"
        for c in r.get("component") or []
        if isinstance(c, dict)
    )
    return (_code(r.get("code")), _instant(when, "minute"), _value(r), ";".join(components))


def _medication(r: dict[str, Any]) -> str:
    if "medicationCodeableConcept" in r:
        return _code(r["medicationCodeableConcept"])
    reference = r.get("medicationReference")
    return f"ref|{reference.get('display', '')}" if isinstance(reference, dict) else "-"


def _medication_request(r: dict[str, Any]) -> KeyParts:
    return (_medication(r), _instant(r.get("authoredOn"), "day"))


def _medication_statement(r: dict[str, Any]) -> KeyParts:
    when = _first(r, "effectiveDateTime", "effectivePeriod", "dateAsserted")
    return (_medication(r), _instant(when, "day"))


def _allergy(r: dict[str, Any]) -> KeyParts:
    return (_code(r.get("code")), _code(r.get("verificationStatus")))


def _immunization(r: dict[str, Any]) -> KeyParts:
    return (
        _code(r.get("vaccineCode")),
        _instant(r.get("occurrenceDateTime") or r.get("occurrenceString"), "day"),
        str(r.get("status")),
    )


def _procedure(r: dict[str, Any]) -> KeyParts:
    when = _instant(_first(r, "performedDateTime", "performedPeriod"), "day")
    # Done and not-done on the same day are two facts, never one.
    return (_code(r.get("code")), when, str(r.get("status")))


def _encounter(r: dict[str, Any]) -> KeyParts:
    klass = r.get("class")
    klass_code = f"{klass.get('code')}" if isinstance(klass, dict) else "-"
    types = r.get("type") or [None]
    start = (r.get("period") or {}).get("start")
    return (klass_code, _code(types[0]), _instant(start, "minute"))


def _diagnostic_report(r: dict[str, Any]) -> KeyParts:
    when = _first(r, "effectiveDateTime", "effectivePeriod", "issued")
    return (_code(r.get("code")), _instant(when, "minute"))


_IGNORED = {"id", "meta", "text", "subject", "patient", "encounter", "context"}


def _whole(r: dict[str, Any]) -> KeyParts:
    trimmed = {k: v for k, v in r.items() if k not in _IGNORED}
    return (orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS).decode(),)


_BUILDERS: dict[str, Callable[[dict[str, Any]], KeyParts]] = {
    "Condition": _condition,
    "Observation": _observation,
    "MedicationRequest": _medication_request,
    "MedicationStatement": _medication_statement,
    "AllergyIntolerance": _allergy,
    "Immunization": _immunization,
    "Procedure": _procedure,
    "Encounter": _encounter,
    "DiagnosticReport": _diagnostic_report,
}
