"""Dedup keys: when two resources are the same clinical fact.

A key is built from what makes a fact that fact — never from ids, narrative, metadata
or who recorded it — so the same fact sent by three sites (or twice by one) is stored
once, with every source kept in its lineage. Different facts must never share a key,
so when in doubt a part stays in the key (a near miss is stored twice, not merged).
docs/dedup.md explains every choice below, with the near misses kept apart.

Each key is the fact's *concept* (its main code) plus its *other parts*:

| resource | concept | other parts |
|---|---|---|
| Condition | code | onset (or recorded) date, to the day; verification (absent = confirmed) |
| Observation | code | effective time, to the minute; value; component codes and values |
| MedicationRequest | medication | authoredOn date (else dosage start); doNotPerform / in error |
| MedicationStatement | medication | effective start date; taken / not-taken / entered-in-error |
| AllergyIntolerance | substance | verification (absent = confirmed): one per substance |
| Immunization | vaccine | occurrence date; status |
| Procedure | code | performed date (start), to the day; status |
| Encounter | first type | class; period start, to the minute |
| DiagnosticReport | code | effective time, to the minute |
| anything else | — | the whole resource without id, meta, text and references |

The key (:func:`dedup_key`) names the concept by its *preferred coding*: the coding of
the most specific terminology present (``codes.PREFERENCE``), after code systems are
canonicalized. Two resources whose concepts are coded in different terminologies (an
ICD-10-CM-only Condition from one site, SNOMED CT with an ICD-10-CM translation from
another) get different keys; :func:`fact_of` gives what the store needs to find them
the same anyway: one *alias key* per (system, code) of the concept, built from the
other parts and that one coding, and :func:`same_concept`, which decides whether two
sets of codings name one concept (the most specific terminology both carry decides).

Times: a date to the day is the calendar date the site wrote (its local date); a time
to the minute is compared in UTC. A value is a quantity (exact decimal + UCUM unit,
comparator kept), a range, a ratio, a code, or text — never compared with a tolerance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from ehrfetch.normalize.codes import PREFERENCE, UCUM, preferred_coding

KeyParts = tuple[str, ...]
Coding = tuple[str, str]
"""(canonical system, code)."""


@dataclass(frozen=True, slots=True)
class Fact:
    """What the store needs to merge a resource with the same fact coded another way."""

    codings: frozenset[Coding]
    """Every (system, code) of the concept: the code and its translations."""
    aliases: tuple[tuple[Coding, str], ...]
    """One alias key per coding: the key the resource would have were it coded with that
    coding alone (so the preferred coding's alias key is the resource's ``dedup_key``)."""


def dedup_key(resource: dict[str, Any]) -> str:
    """A stable hex key: same fact, same key, whichever site sent it."""
    kind = str(resource.get("resourceType"))
    builder = _BUILDERS.get(kind)
    if builder is None:
        return _digest(kind, *_whole(resource))
    concept, rest = builder(resource)
    return _digest(kind, _code(concept), *rest)


def fact_of(resource: dict[str, Any]) -> Fact:
    """The concept's codings and their alias keys; none for types keyed whole."""
    kind = str(resource.get("resourceType"))
    builder = _BUILDERS.get(kind)
    if builder is None:
        return Fact(frozenset(), ())
    concept, rest = builder(resource)
    codings = frozenset(_codings(concept))
    # Built as dedup_key builds its key, so the alias key of a resource's preferred
    # coding *is* its dedup_key: a resource coded once needs no alias row to be found.
    aliases = tuple(
        (coding, _digest(kind, f"{coding[0]}|{coding[1]}", *rest)) for coding in sorted(codings)
    )
    return Fact(codings, aliases)


def same_concept(a: Collection[Coding], b: Collection[Coding]) -> bool:
    """Whether two concepts' codings name the same concept.

    The most specific terminology both carry decides (``codes.PREFERENCE``; systems not
    listed share the last rank): the two must share a code in it. So an ICD-10-CM-only
    E11.9 matches SNOMED 44054006 + ICD-10-CM E11.9 (ICD-10-CM is all they share and
    it agrees), while SNOMED 44054006 + E11.9 and SNOMED 73211009 + E11.9 do not (both
    carry SNOMED CT and it disagrees: ICD-10-CM is coarser and cannot overrule it). A
    disagreement in a coarser system than the deciding one (two sites' ICD-10 billing
    maps of one SNOMED concept) does not split a fact — as with the key itself, which
    names a fact by its most specific code alone.
    """
    systems_a = {system for system, _ in a}
    common = systems_a & {system for system, _ in b}
    if not common:
        return False
    top = min(_rank(system) for system in common)
    deciding = {system for system in common if _rank(system) == top}
    shared = set(a) & set(b)
    return all(any(coding[0] == system for coding in shared) for system in deciding)


_RANKS = {system: n for n, system in enumerate(PREFERENCE)}


def _rank(system: str) -> int:
    return _RANKS.get(system, len(_RANKS))


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _codings(concept: Any) -> list[Coding]:
    if not isinstance(concept, dict):
        return []
    return [
        (c["system"], str(c["code"]).strip())
        for c in concept.get("coding") or []
        if isinstance(c, dict) and isinstance(c.get("system"), str) and c.get("code")
    ]


def _code(concept: Any) -> str:
    coding = preferred_coding(concept)
    if coding is not None:
        return f"{coding[0]}|{coding[1]}"
    if isinstance(concept, dict) and isinstance(concept.get("text"), str):
        return "text|" + " ".join(concept["text"].casefold().split())
    return "-"


def _status_code(concept: Any, default: str) -> str:
    """The code of a status CodeableConcept (its system is fixed by the element)."""
    codings = concept.get("coding") if isinstance(concept, dict) else None
    for coding in codings or []:
        if isinstance(coding, dict) and coding.get("code"):
            return str(coding["code"])
    return default


def _instant(value: Any, precision: str) -> str:
    """A FHIR date/dateTime cut to ``day`` or ``minute``; partial dates stay partial.

    To the day, the date is the one the site wrote (its local calendar date): a C-CDA
    onset "20130715" and a FHIR onset "2013-07-15T22:00:00-05:00" are the same day,
    which converting to UTC (2013-07-16) would deny. To the minute, times with an
    offset are compared in UTC; a date alone stays a date, so it never equals a time.
    """
    if not isinstance(value, str) or not value:
        return "-"
    if len(value) <= 10:  # YYYY, YYYY-MM, YYYY-MM-DD
        return value
    if precision == "day" and value[10] in "T ":
        return value[:10]
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if parsed.tzinfo is None:
        # No offset (invalid FHIR, but sent): a local time we cannot place is kept
        # apart from every UTC time rather than guessed equal to one.
        return parsed.strftime("%Y-%m-%dT%H:%M") + "L"
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M")


def _first(resource: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = resource.get(name)
        if isinstance(value, dict) and name.endswith("Period"):
            value = value.get("start")
        if value:
            return value
    return None


def _number(value: Any) -> str:
    """The exact decimal, one spelling: 7.2, 7.20 and "7.2" alike; 100 not 1E+2."""
    try:
        return format(Decimal(str(value)).normalize(), "f")
    except (InvalidOperation, ValueError):
        return str(value)


def _quantity(quantity: Any) -> str:
    if not isinstance(quantity, dict):
        return "-"
    system = quantity.get("system")
    code = quantity.get("code")
    if code and system not in (None, UCUM):
        unit = f"{system}|{code}"
    else:
        # UCUM code first (the unit's display text varies by site); "1" is UCUM's
        # "no unit", which C-CDA writes by leaving the unit out.
        unit = str(code or quantity.get("unit") or "")
        unit = "" if unit == "1" else unit
    comparator = quantity.get("comparator") or ""
    return f"{comparator}{_number(quantity.get('value'))}|{unit}"


def _value(resource: dict[str, Any]) -> str:
    if "valueQuantity" in resource:
        return "q|" + _quantity(resource["valueQuantity"])
    if "valueCodeableConcept" in resource:
        return "c|" + _code(resource["valueCodeableConcept"])
    if isinstance(resource.get("valueRange"), dict):
        value_range = resource["valueRange"]
        return f"r|{_quantity(value_range.get('low'))}..{_quantity(value_range.get('high'))}"
    if isinstance(resource.get("valueRatio"), dict):
        ratio = resource["valueRatio"]
        return f"ratio|{_quantity(ratio.get('numerator'))}/{_quantity(ratio.get('denominator'))}"
    if isinstance(resource.get("valueString"), str):
        return "valueString|" + " ".join(resource["valueString"].split())
    if "valueDateTime" in resource:
        return "valueDateTime|" + _instant(resource["valueDateTime"], "minute")
    if isinstance(resource.get("valuePeriod"), dict):
        period = resource["valuePeriod"]
        start, end = _instant(period.get("start"), "minute"), _instant(period.get("end"), "minute")
        return f"p|{start}..{end}"
    for name in ("valueBoolean", "valueInteger", "valueTime", "valueSampledData"):
        if name in resource:
            return f"{name}|{orjson.dumps(resource[name], option=orjson.OPT_SORT_KEYS).decode()}"
    return "-"


Built = tuple[Any, KeyParts]
"""(the concept, the other parts of the key)."""


def _condition(r: dict[str, Any]) -> Built:
    when = _first(r, "onsetDateTime", "onsetPeriod", "recordedDate")
    # A refuted condition is a different statement from a confirmed one of the same day.
    # C-CDA has no "confirmed": an asserted problem (not negated) is one.
    verification = _status_code(r.get("verificationStatus"), "confirmed")
    return r.get("code"), (_instant(when, "day"), verification)


def _observation(r: dict[str, Any]) -> Built:
    when = _first(r, "effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued")
    components = sorted(
        f"{_code(c.get('code'))}={_value(c)}"
        for c in r.get("component") or []
        if isinstance(c, dict)
    )
    return r.get("code"), (_instant(when, "minute"), _value(r), ";".join(components))


def _medication(r: dict[str, Any]) -> Any:
    if "medicationCodeableConcept" in r:
        return r["medicationCodeableConcept"]
    reference = r.get("medicationReference")
    display = reference.get("display") if isinstance(reference, dict) else None
    # A reference is to the site's Medication; only its display can name the drug.
    return {"text": f"ref {display}"} if isinstance(display, str) and display else None


def _medication_request(r: dict[str, Any]) -> Built:
    # An order not to give a drug, or one entered in error, is not the order to give it.
    flag = "do-not-perform" if r.get("doNotPerform") is True else ""
    flag = "entered-in-error" if r.get("status") == "entered-in-error" else flag
    when = _instant(r.get("authoredOn"), "day")
    if when == "-":
        # No authoredOn (a C-CDA order without an author): the course's start tells two
        # orders of one drug apart; marked, so it never equals an authoredOn date.
        when = "start|" + _instant(_dosage_start(r), "day")
    return _medication(r), (when, flag)


def _dosage_start(r: dict[str, Any]) -> Any:
    for dosage in r.get("dosageInstruction") or []:
        timing = dosage.get("timing") if isinstance(dosage, dict) else None
        if not isinstance(timing, dict):
            continue
        bounds = (timing.get("repeat") or {}).get("boundsPeriod")
        if isinstance(bounds, dict) and bounds.get("start"):
            return bounds["start"]
        if timing.get("event"):
            return min(str(e) for e in timing["event"])
    return None


_MEDICATION_STATEMENT_KIND = {"not-taken": "not-taken", "entered-in-error": "entered-in-error"}


def _medication_statement(r: dict[str, Any]) -> Built:
    when = _first(r, "effectiveDateTime", "effectivePeriod", "dateAsserted")
    # active / completed / stopped are one medication seen at different times by
    # different sites; "not taken" is the opposite statement and never merges with them.
    kind = _MEDICATION_STATEMENT_KIND.get(str(r.get("status")), "taken")
    return _medication(r), (_instant(when, "day"), kind)


def _allergy(r: dict[str, Any]) -> Built:
    return r.get("code"), (_status_code(r.get("verificationStatus"), "confirmed"),)


def _immunization(r: dict[str, Any]) -> Built:
    when = _instant(r.get("occurrenceDateTime") or r.get("occurrenceString"), "day")
    return r.get("vaccineCode"), (when, str(r.get("status")))


def _procedure(r: dict[str, Any]) -> Built:
    when = _instant(_first(r, "performedDateTime", "performedPeriod"), "day")
    # Done and not-done on the same day are two facts, never one.
    return r.get("code"), (when, str(r.get("status")))


def _encounter(r: dict[str, Any]) -> Built:
    klass = r.get("class")
    klass_code = f"{klass.get('code')}" if isinstance(klass, dict) else "-"
    types = r.get("type") or [None]
    start = (r.get("period") or {}).get("start")
    return types[0], (klass_code, _instant(start, "minute"))


def _diagnostic_report(r: dict[str, Any]) -> Built:
    when = _first(r, "effectiveDateTime", "effectivePeriod", "issued")
    return r.get("code"), (_instant(when, "minute"),)


_IGNORED = {"id", "meta", "text", "subject", "patient", "encounter", "context"}


def _whole(r: dict[str, Any]) -> KeyParts:
    trimmed = {k: v for k, v in r.items() if k not in _IGNORED}
    return (orjson.dumps(trimmed, option=orjson.OPT_SORT_KEYS).decode(),)


_BUILDERS: dict[str, Callable[[dict[str, Any]], Built]] = {
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
