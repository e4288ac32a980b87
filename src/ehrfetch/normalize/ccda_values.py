"""HL7 V3 data types (as written in C-CDA) made into FHIR R4 data types.

Every function returns ``None`` (or an empty structure) when the source has no value
— an element with a ``nullFlavor`` or without its attributes — so nothing is invented.
Codes keep their translations (as extra codings) and their original text (as
``CodeableConcept.text``, resolved through the narrative when it is a reference).
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from ehrfetch.normalize.codes import UCUM, canonical_system

CDA_NS = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
NS = {"cda": CDA_NS}

# Code systems C-CDA uses for its own vocabulary, beyond the clinical ones codes.py knows.
_EXTRA_OIDS: dict[str, str] = {
    "2.16.840.1.113883.5.4": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    "2.16.840.1.113883.5.8": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "2.16.840.1.113883.5.83": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
    "2.16.840.1.113883.5.1008": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
    "2.16.840.1.113883.5.1063": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "2.16.840.1.113883.3.26.1.1": "http://ncicb.nci.nih.gov/xml/owl/EVS/Thesaurus.owl",
    "2.16.840.1.113883.6.101": "http://nucc.org/provider-taxonomy",
}

# nullFlavor → data-absent-reason code (http://hl7.org/fhir/R4/valueset-data-absent-reason).
_NULL_TO_DAR = {
    "UNK": "unknown",
    "ASKU": "asked-unknown",
    "NAV": "temp-unknown",
    "NASK": "not-asked",
    "MSK": "masked",
    "NA": "not-applicable",
    "NAN": "not-a-number",
    "NINF": "negative-infinity",
    "PINF": "positive-infinity",
}

_TS = re.compile(
    r"^(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?P<frac>\.\d+)?(?P<tz>[+-]\d{4}|Z)?$"
)


# Precompiled: re.fullmatch with a pattern string looks it up in re's cache every call.
_OID = re.compile(r"[0-2](\.\d+)+")
_INTEGER = re.compile(r"[+-]?\d+")
# Clark names ({namespace}local) of every name asked for, built once each: ``child``
# and ``children`` run tens of times per entry.
_CLARK: dict[str, str] = {}


def q(name: str) -> str:
    tag = _CLARK.get(name)
    if tag is None:
        tag = _CLARK.setdefault(name, f"{{{CDA_NS}}}{name}")
    return tag


def child(el: etree._Element | None, *path: str) -> etree._Element | None:
    """The first element at ``path`` (local names in the CDA namespace), or None."""
    node = el
    for name in path:
        if node is None:
            return None
        node = node.find(q(name))
    return node


def children(el: etree._Element | None, name: str) -> list[etree._Element]:
    return [] if el is None else list(el.findall(q(name)))


TEMPLATE_ID = f"{{{CDA_NS}}}templateId"


def template_ids(el: etree._Element) -> set[str]:
    """The templateId roots (with or without extension: the version does not matter here)."""
    return {str(root) for t in el.iterchildren(TEMPLATE_ID) if (root := t.get("root"))}


def is_null(el: etree._Element | None) -> bool:
    return el is None or el.get("nullFlavor") is not None


def data_absent(el: etree._Element | None) -> dict[str, Any] | None:
    """A dataAbsentReason CodeableConcept for an element carrying a nullFlavor."""
    if el is None or el.get("nullFlavor") is None:
        return None
    code = _NULL_TO_DAR.get(str(el.get("nullFlavor")), "unknown")
    system = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
    return {"coding": [{"system": system, "code": code}]}


def system_uri(oid: str) -> str:
    oid = oid.strip()
    if oid in _EXTRA_OIDS:
        return _EXTRA_OIDS[oid]
    canonical = canonical_system(oid)
    if canonical != oid:
        return canonical
    return f"urn:oid:{oid}" if _OID.fullmatch(oid) else oid


# Only the elements with an ID, found by libxml2 rather than by visiting every element
# in Python (a CCD has thousands).
_WITH_ID = etree.XPath("//*[@ID]")


class Narrative:
    """Resolves ``<reference value="#id"/>`` into the narrative text it points at."""

    def __init__(self, root: etree._Element) -> None:
        self._by_id: dict[str, etree._Element] = {}
        for el in _WITH_ID(root):  # in document order, as iter() was: the first ID wins
            ident = el.get("ID")
            if ident:
                self._by_id.setdefault(str(ident), el)

    def text_of(self, el: etree._Element | None) -> str | None:
        """Inline text of an ED/originalText, or the narrative element it references."""
        if el is None:
            return None
        ref = child(el, "reference")
        if ref is not None and (ref.get("value") or "").startswith("#"):
            target = self._by_id.get(str(ref.get("value"))[1:])
            if target is not None:
                return _squash("".join(target.itertext()))
        return _squash(el.text or "")


def _squash(text: str) -> str | None:
    value = " ".join(text.split())
    return value or None


def coding(el: etree._Element) -> dict[str, Any] | None:
    code = (el.get("code") or "").strip()
    if el.get("nullFlavor") is not None or not code or any(c.isspace() for c in code):
        return None
    out: dict[str, Any] = {"code": code}
    if el.get("codeSystem"):
        out["system"] = system_uri(str(el.get("codeSystem")))
    if el.get("displayName"):
        out["display"] = " ".join(str(el.get("displayName")).split())
    return out


def concept(el: etree._Element | None, narrative: Narrative) -> dict[str, Any] | None:
    """A CodeableConcept: the code, its translations, and its original text."""
    if el is None:
        return None
    codings = [c for c in (coding(el), *map(coding, children(el, "translation"))) if c]
    out: dict[str, Any] = {}
    if codings:
        out["coding"] = codings
    text = narrative.text_of(child(el, "originalText"))
    if text:
        out["text"] = text
    return out or None


def is_coded(el: etree._Element | None) -> bool:
    """Whether a concept carries any code (itself or a translation)."""
    if el is None:
        return False
    return coding(el) is not None or any(coding(t) for t in children(el, "translation"))


def fhir_time(value: str | None) -> str | None:
    """HL7 TS (``YYYYMMDDHHMMSS.S±ZZZZ``) as a FHIR date/dateTime, keeping its precision.

    FHIR requires an offset whenever a time is given, so a time without an offset is
    cut to its day rather than read in a zone we would have to guess. Minute or hour
    precision is written with zero seconds (FHIR dateTime has no minute precision).
    """
    if not value:
        return None
    m = _TS.match(value.strip())
    if m is None:
        return None
    parts = m.groupdict()
    out = parts["y"]
    for name in ("mo", "d"):
        if parts[name] is None:
            return out
        out += "-" + parts[name]
    if parts["h"] is None or parts["tz"] is None:
        return out
    out += f"T{parts['h']}:{parts['mi'] or '00'}:{parts['s'] or '00'}{parts['frac'] or ''}"
    tz = parts["tz"]
    return out + ("Z" if tz == "Z" else f"{tz[:3]}:{tz[3:]}")


def time_of(el: etree._Element | None) -> str | None:
    return None if is_null(el) or el is None else fhir_time(el.get("value"))


def effective(el: etree._Element | None) -> tuple[str | None, dict[str, str] | None]:
    """(dateTime, Period) of an effectiveTime: a point, or an interval (low/high/center)."""
    if el is None or el.get("nullFlavor") is not None:
        return None, None
    if el.get("value"):
        return fhir_time(el.get("value")), None
    center = time_of(child(el, "center"))
    if center:
        return center, None
    period = {
        fhir_name: when
        for name, fhir_name in (("low", "start"), ("high", "end"))
        if (when := time_of(child(el, name))) is not None
    }
    if "start" in period and period.get("end") == period["start"]:
        return period["start"], None
    return None, (period or None)


def quantity(el: etree._Element | None) -> dict[str, Any] | None:
    """A PQ as a Quantity; the unit is UCUM in C-CDA (``unit="1"`` means no unit)."""
    if el is None or el.get("nullFlavor") is not None or not el.get("value"):
        return None
    try:
        number = float(str(el.get("value")))
    except ValueError:
        return None
    out: dict[str, Any] = {"value": _number(str(el.get("value")), number)}
    unit = (el.get("unit") or "").strip()
    if unit and unit != "1" and not any(c.isspace() for c in unit):
        out.update(unit=unit, system=UCUM, code=unit)
    elif unit and unit != "1":
        out["unit"] = unit
    return out


def _number(raw: str, number: float) -> int | float:
    return int(number) if _INTEGER.fullmatch(raw.strip()) else number


def xsi_type(el: etree._Element) -> str:
    raw = str(el.get(XSI_TYPE) or "")
    return raw.split(":")[-1].upper()


def local(el: etree._Element) -> str:
    return str(etree.QName(el).localname)
