"""The roster as FHIR R4 ``Patient`` NDJSON: one resource a line.

Resources are validated with ``fhir.resources.R4B`` (fhir.resources 8.x has no R4
package; R4B is wire-compatible with R4 for Patient). The research id is the
identifier whose system is ``roster.research_id_system``; of an SSN identifier only the
last four digits are kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from ehrfetch.cohort import fields
from ehrfetch.cohort.fields import FieldProblem
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.errors import InputFileError, RowProblem
from ehrfetch.fhir_models import Patient

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"
_OLD_USES = {"old", "maiden"}
# A Patient line longer than this is not a roster entry.
_LINE_LIMIT = 256 * 1024


def read_lines(path: Path) -> Iterator[tuple[int, dict[str, Any] | RowProblem]]:
    """Each non-blank line as a JSON object, or the problem that stops it being one."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputFileError(path, f"cannot open: {exc.strerror}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            if len(raw) > _LINE_LIMIT:
                yield number, RowProblem(number, "-", f"line is longer than {_LINE_LIMIT} bytes")
                continue
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, RowProblem(number, "-", "is not valid UTF-8")
                continue
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                yield number, RowProblem(number, "-", f"not valid JSON (at character {exc.pos})")
                continue
            if not isinstance(value, dict):
                yield number, RowProblem(number, "-", "not a JSON object")
                continue
            yield number, value


def research_id_of(resource: dict[str, Any], system: str) -> str | None:
    for identifier in _list(resource.get("identifier")):
        if isinstance(identifier, dict) and identifier.get("system") == system:
            value = identifier.get("value")
            return value.strip() if isinstance(value, str) else None
    return None


def parse_patient(
    line: int, resource: dict[str, Any], ctx: ReadContext
) -> ParticipantRecord | list[RowProblem]:
    if resource.get("resourceType") != "Patient":
        return [RowProblem(line, "resourceType", "is not Patient")]
    raw_id = research_id_of(resource, ctx.research_id_system)
    try:
        rid = fields.research_id(raw_id)
    except FieldProblem as exc:
        reason = (
            f"no identifier with system {ctx.research_id_system}" if raw_id is None else exc.reason
        )
        return [RowProblem(line, "identifier", reason)]
    try:
        Patient.model_validate(resource)
    except ValidationError as exc:
        # loc and msg only: pydantic's "input" would be the demographic value itself.
        return [
            RowProblem(line, _path(err["loc"]), f"invalid FHIR: {err['msg']}", rid)
            for err in exc.errors()
        ]
    problems: list[RowProblem] = []

    def check(column: str, value: Any, checker: Any, **kwargs: Any) -> Any:
        try:
            return checker(value, **kwargs)
        except FieldProblem as exc:
            problems.append(RowProblem(line, column, exc.reason, rid))
            return None

    names = _split_by_period(_list(resource.get("name")), preferred=("official", "usual"))
    current_name = _name(line, rid, names[0], problems) if names[0] is not None else None
    if names[0] is None:
        problems.append(RowProblem(line, "name", "no current name", rid))
    previous_names = tuple(
        n for n in (_name(line, rid, entry, problems) for entry in names[1]) if n is not None
    )
    addresses = _split_by_period(_list(resource.get("address")), preferred=("home",))
    current_address = _address(line, rid, addresses[0], problems) if addresses[0] else None
    previous_addresses = tuple(
        a for a in (_address(line, rid, entry, problems) for entry in addresses[1]) if a
    )
    born = check("birthDate", resource.get("birthDate"), fields.birth_date, today=ctx.today)
    sex = check("gender", resource.get("gender"), fields.sex)
    phone_index, phone_raw = _telecom(resource, "phone")
    phone = check(f"telecom[{phone_index}].value", phone_raw, fields.phone, region=ctx.region)
    email_index, email_raw = _telecom(resource, "email")
    email = check(f"telecom[{email_index}].value", email_raw, fields.email)
    ssn4 = check("identifier(us-ssn)", _ssn_last4(resource), fields.ssn_last4)

    if problems:
        return problems
    assert current_name is not None and born is not None and sex is not None
    return ParticipantRecord(
        research_id=rid,
        name=current_name,
        birth_date=born,
        sex=sex,
        address=current_address,
        previous_names=previous_names,
        previous_addresses=previous_addresses,
        phone=phone,
        email=email,
        ssn_last4=ssn4,
    )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "-"


def _split_by_period(
    entries: list[Any], preferred: tuple[str, ...]
) -> tuple[tuple[int, dict[str, Any]] | None, list[tuple[int, dict[str, Any]]]]:
    """(current entry, previous entries), each with its index in the resource."""
    current: list[tuple[int, dict[str, Any]]] = []
    previous: list[tuple[int, dict[str, Any]]] = []
    for index, entry in enumerate(entries):
        ended = bool((entry.get("period") or {}).get("end"))
        (previous if ended or entry.get("use") in _OLD_USES else current).append((index, entry))
    # The preferred use wins; otherwise the first listed is current.
    current.sort(key=lambda item: item[1].get("use") not in preferred)
    chosen = current[0] if current else None
    return chosen, current[1:] + previous if chosen else previous


def _name(
    line: int, rid: str, item: tuple[int, dict[str, Any]], problems: list[RowProblem]
) -> PersonName | None:
    index, entry = item
    given = [g for g in _list(entry.get("given")) if isinstance(g, str)]
    suffixes = [s for s in _list(entry.get("suffix")) if isinstance(s, str)]
    try:
        return PersonName(
            family=fields.name_part(entry.get("family"), required=True, what="family") or "",
            given=fields.name_part(given[0] if given else None, what="given"),
            middle=fields.name_part(" ".join(given[1:]) or None, what="middle"),
            suffix=fields.suffix(suffixes[0] if suffixes else None),
        )
    except FieldProblem as exc:
        problems.append(RowProblem(line, f"name[{index}]", exc.reason, rid))
        return None


def _address(
    line: int, rid: str, item: tuple[int, dict[str, Any]], problems: list[RowProblem]
) -> PostalAddress | None:
    index, entry = item
    lines = [part for part in _list(entry.get("line")) if isinstance(part, str)]
    try:
        address = PostalAddress(
            line1=fields.name_part(lines[0] if lines else None, what="line"),
            line2=fields.name_part(" ".join(lines[1:]) or None, what="line"),
            city=fields.name_part(entry.get("city"), what="city"),
            state=fields.state(entry.get("state")),
            postal_code=fields.postal_code(entry.get("postalCode")),
        )
    except FieldProblem as exc:
        problems.append(RowProblem(line, f"address[{index}]", exc.reason, rid))
        return None
    return None if address.is_empty() else address


def _telecom(resource: dict[str, Any], system: str) -> tuple[int, str | None]:
    for index, entry in enumerate(_list(resource.get("telecom"))):
        if isinstance(entry, dict) and entry.get("system") == system:
            value = entry.get("value")
            return index, value if isinstance(value, str) else None
    return 0, None


def _ssn_last4(resource: dict[str, Any]) -> str | None:
    value = research_id_of(resource, SSN_SYSTEM)
    if not value:
        return None
    digits = "".join(ch for ch in value if ch.isdigit())
    # Anything that is not a whole SSN or a last four is passed on as is to fail the check.
    return digits[-4:] if len(digits) in (4, 9) else value
