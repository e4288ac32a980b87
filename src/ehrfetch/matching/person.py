"""One side of a comparison: a participant or a network candidate, reduced to what the
matching engine reads.

Both sides become the same shape, so every comparator is symmetric and never asks where a
person came from. Order carries meaning: the current name and address come first, earlier
ones after (a name registered before a marriage, the address before a move).

Reading a FHIR Patient is lenient on purpose: a candidate comes from somebody else's
system, and a missing or odd field is absence of evidence, never an error. Only the last
four digits of an SSN are ever kept.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.matching.normalize import (
    generational_suffix,
    normalize_email,
    normalize_phone,
    ssn_last4,
)
from ehrfetch.store.tables import Sex

_T = TypeVar("_T")

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# FHIR HumanName.use / Address.use values that describe what someone is called or where
# they live now, in the order they are preferred; "old" and "maiden" are history.
_CURRENT_NAME_USES = ("official", "usual", None, "temp", "nickname")
_OLD_NAME_USES = frozenset({"old", "maiden"})
_CURRENT_ADDRESS_USES = ("home", None, "temp", "billing", "work")


@dataclass(frozen=True, slots=True)
class MatchPerson:
    """Demographics of one person as the matching engine compares them.

    ``names`` and ``addresses`` hold the current one first, then earlier ones; ``phones``
    are E.164; ``emails`` case-folded; ``suffix`` the generational suffix of the current
    name (JR, SR, II, ...) or None. ``id`` is the research id of a participant or the
    network's patient id of a candidate: two candidates with the same id are one patient.
    """

    names: tuple[PersonName, ...] = ()
    birth_date: dt.date | None = None
    sex: Sex | None = None
    addresses: tuple[PostalAddress, ...] = ()
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    ssn_last4: str | None = None
    suffix: str | None = None
    id: str | None = None

    @classmethod
    def from_record(cls, record: ParticipantRecord) -> MatchPerson:
        """A participant as the roster holds them (already validated and normalized)."""
        addresses = [record.address] if record.address is not None else []
        addresses.extend(record.previous_addresses)
        phone = normalize_phone(record.phone) if record.phone else None
        email = normalize_email(record.email) if record.email else None
        return cls(
            names=_unique((record.name, *record.previous_names)),
            birth_date=record.birth_date,
            sex=record.sex,
            addresses=_unique(a for a in addresses if not a.is_empty()),
            phones=(phone,) if phone else (),
            emails=(email,) if email else (),
            ssn_last4=ssn_last4(record.ssn_last4) if record.ssn_last4 else None,
            suffix=generational_suffix(record.name.suffix),
            id=record.research_id,
        )

    @classmethod
    def from_fhir_patient(cls, resource: Mapping[str, Any], *, region: str = "US") -> MatchPerson:
        """A FHIR R4 Patient (JSON as a dict). Fields that are missing, malformed or of
        the wrong type are left out; nothing raises."""
        names = _names(_list(resource.get("name")))
        raw_id = resource.get("id")
        return cls(
            names=names,
            birth_date=_birth_date(resource.get("birthDate")),
            sex=_sex(resource.get("gender")),
            addresses=_addresses(_list(resource.get("address"))),
            phones=_telecoms(resource.get("telecom"), ("phone", "sms"), region),
            emails=_telecoms(resource.get("telecom"), ("email",), region),
            ssn_last4=_ssn(_list(resource.get("identifier"))),
            suffix=generational_suffix(names[0].suffix) if names else None,
            id=raw_id if isinstance(raw_id, str) and raw_id else None,
        )

    @property
    def name(self) -> PersonName | None:
        """The current name."""
        return self.names[0] if self.names else None


def _list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _text(value: object) -> str | None:
    if isinstance(value, str):
        stripped = " ".join(value.split())
        return stripped or None
    return None


def _unique(items: Iterable[_T]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))


def _ended(element: Mapping[str, Any]) -> bool:
    # A period with an end is history, whatever its use says. (Whether the end lies in the
    # future is not checked: a pure function has no "now", and planned ends are rare.)
    period = element.get("period")
    return isinstance(period, Mapping) and _text(period.get("end")) is not None


def _names(raw: list[Any]) -> tuple[PersonName, ...]:
    current: list[tuple[int, PersonName]] = []
    old: list[PersonName] = []
    for element in raw:
        if not isinstance(element, Mapping):
            continue
        name = _human_name(element)
        if name is None:
            continue
        use = element.get("use")
        if use in _OLD_NAME_USES or _ended(element):
            old.append(name)
        elif use in _CURRENT_NAME_USES:
            current.append((_CURRENT_NAME_USES.index(use), name))
        # "anonymous" names say nothing about the person.
    current.sort(key=lambda pair: pair[0])
    return _unique([name for _, name in current] + old)


def _human_name(element: Mapping[str, Any]) -> PersonName | None:
    family = _text(element.get("family"))
    given = [g for g in (_text(x) for x in _list(element.get("given"))) if g]
    suffixes = [s for s in (_text(x) for x in _list(element.get("suffix"))) if s]
    if family is None and not given:
        words = (_text(element.get("text")) or "").split()
        # Only the text: "Given [Middle ...] Family". Better than nothing for a comparison.
        if len(words) >= 2:
            family, given = words[-1], words[:-1]
        else:
            return None
    suffix = next(
        (s for s in suffixes if generational_suffix(s)), suffixes[0] if suffixes else None
    )
    return PersonName(
        family=family or "",
        given=given[0] if given else None,
        middle=" ".join(given[1:]) or None,
        suffix=suffix,
    )


def _birth_date(raw: object) -> dt.date | None:
    # FHIR allows "1970" and "1970-03"; a partial date is no evidence for a comparison that
    # needs the day, so it counts as missing.
    text = _text(raw)
    if text is None or not _FULL_DATE.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        return None


def _sex(raw: object) -> Sex | None:
    text = _text(raw)
    if text is None:
        return None
    try:
        return Sex(text.lower())
    except ValueError:
        return None


def _addresses(raw: list[Any]) -> tuple[PostalAddress, ...]:
    current: list[tuple[int, PostalAddress]] = []
    old: list[PostalAddress] = []
    for element in raw:
        if not isinstance(element, Mapping):
            continue
        lines = [line for line in (_text(x) for x in _list(element.get("line"))) if line]
        address = PostalAddress(
            line1=lines[0] if lines else None,
            line2=" ".join(lines[1:]) or None,
            city=_text(element.get("city")),
            state=_text(element.get("state")),
            postal_code=_text(element.get("postalCode")),
        )
        if address.is_empty():
            continue
        use = element.get("use")
        if use == "old" or _ended(element):
            old.append(address)
        elif use in _CURRENT_ADDRESS_USES:
            current.append((_CURRENT_ADDRESS_USES.index(use), address))
    current.sort(key=lambda pair: pair[0])
    return _unique([address for _, address in current] + old)


def _telecoms(raw: object, systems: tuple[str, ...], region: str) -> tuple[str, ...]:
    found: list[str] = []
    for element in _list(raw):
        if not isinstance(element, Mapping) or element.get("system") not in systems:
            continue
        value = _text(element.get("value"))
        if value is None:
            continue
        normal = normalize_email(value) if systems == ("email",) else normalize_phone(value, region)
        if normal:
            found.append(normal)
    return _unique(found)


def _ssn(identifiers: list[Any]) -> str | None:
    for element in identifiers:
        if not isinstance(element, Mapping):
            continue
        value = _text(element.get("value"))
        if value is not None and (element.get("system") == SSN_SYSTEM or _typed_ss(element)):
            last4 = ssn_last4(value)
            if last4 is not None:
                return last4
    return None


def _typed_ss(identifier: Mapping[str, Any]) -> bool:
    # Some systems send the SSN with type SS and no system, or a local system.
    kind = identifier.get("type")
    if not isinstance(kind, Mapping):
        return False
    return any(
        isinstance(coding, Mapping)
        and coding.get("code") == "SS"
        and coding.get("system") in (_V2_0203, None)
        for coding in _list(kind.get("coding"))
    )
