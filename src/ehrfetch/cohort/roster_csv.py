"""The roster as CSV: one participant a row (columns in docs/roster-format.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from ehrfetch.cohort import fields
from ehrfetch.cohort.csvfile import CsvRow
from ehrfetch.cohort.fields import FieldProblem
from ehrfetch.cohort.reading import ReadContext
from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.errors import RowProblem

REQUIRED = ("research_id", "given", "family", "birth_date", "sex")
COLUMNS = frozenset(
    {
        *REQUIRED,
        "middle", "suffix", "address_line1", "address_line2", "city", "state",
        "postal_code", "phone", "email", "ssn_last4", "previous_names",
        "previous_addresses", "ehr_on_file",
    }
)  # fmt: skip

T = TypeVar("T")


class _Checker:
    """Runs field checks, collecting every problem of a row instead of the first."""

    def __init__(self, line: int, research_id: str | None) -> None:
        self.line = line
        self.research_id = research_id
        self.problems: list[RowProblem] = []

    def __call__(self, column: str, check: Callable[[], T]) -> T | None:
        try:
            return check()
        except FieldProblem as exc:
            self.problems.append(RowProblem(self.line, column, exc.reason, self.research_id))
            return None


def parse_row(row: CsvRow, ctx: ReadContext) -> ParticipantRecord | list[RowProblem]:
    v = row.values
    try:
        rid = fields.research_id(v.get("research_id"))
    except FieldProblem as exc:
        return [RowProblem(row.line, "research_id", exc.reason)]
    check = _Checker(row.line, rid)

    given = check("given", lambda: fields.name_part(v.get("given"), required=True, what="given"))
    family = check(
        "family", lambda: fields.name_part(v.get("family"), required=True, what="family")
    )
    middle = check("middle", lambda: fields.name_part(v.get("middle"), what="middle"))
    suffix = check("suffix", lambda: fields.suffix(v.get("suffix")))
    born = check("birth_date", lambda: fields.birth_date(v.get("birth_date"), today=ctx.today))
    sex = check("sex", lambda: fields.sex(v.get("sex")))
    address = _address(check, v)
    phone = check("phone", lambda: fields.phone(v.get("phone"), region=ctx.region))
    email = check("email", lambda: fields.email(v.get("email")))
    ssn4 = check("ssn_last4", lambda: fields.ssn_last4(v.get("ssn_last4")))
    ehr = check("ehr_on_file", lambda: fields.flag(v.get("ehr_on_file")))
    previous_names = check("previous_names", lambda: _previous_names(v.get("previous_names")))
    previous_addresses = check(
        "previous_addresses", lambda: _previous_addresses(v.get("previous_addresses"))
    )

    if check.problems:
        return check.problems
    assert family is not None and born is not None and sex is not None
    return ParticipantRecord(
        research_id=rid,
        name=PersonName(family=family, given=given, middle=middle, suffix=suffix),
        birth_date=born,
        sex=sex,
        address=address,
        previous_names=previous_names or (),
        previous_addresses=previous_addresses or (),
        phone=phone,
        email=email,
        ssn_last4=ssn4,
        ehr_on_file=bool(ehr),
    )


def _address(check: _Checker, v: dict[str, str]) -> PostalAddress | None:
    address = PostalAddress(
        line1=check("address_line1", lambda: fields.name_part(v.get("address_line1"), what="line")),
        line2=check("address_line2", lambda: fields.name_part(v.get("address_line2"), what="line")),
        city=check("city", lambda: fields.name_part(v.get("city"), what="city")),
        state=check("state", lambda: fields.state(v.get("state"))),
        postal_code=check("postal_code", lambda: fields.postal_code(v.get("postal_code"))),
    )
    return None if address.is_empty() else address


def _entries(raw: str | None, width: int, what: str) -> list[list[str | None]]:
    value = fields.clean(raw)
    if value is None:
        return []
    entries = []
    for n, entry in enumerate(value.split("|"), start=1):
        parts: list[str | None] = [fields.clean(p) for p in entry.split("^")]
        if len(parts) > width:
            raise FieldProblem(f"{what} entry {n} has more than {width} ^-separated parts")
        entries.append(parts + [None] * (width - len(parts)))
    return entries


def _previous_names(raw: str | None) -> tuple[PersonName, ...]:
    names = []
    for n, (family, given, middle, suffix) in enumerate(_entries(raw, 4, "name"), start=1):
        try:
            names.append(
                PersonName(
                    family=fields.name_part(family, required=True, what="family") or "",
                    given=fields.name_part(given, what="given"),
                    middle=fields.name_part(middle, what="middle"),
                    suffix=fields.suffix(suffix),
                )
            )
        except FieldProblem as exc:
            raise FieldProblem(f"entry {n}: {exc.reason}") from None
    return tuple(names)


def _previous_addresses(raw: str | None) -> tuple[PostalAddress, ...]:
    addresses = []
    for n, (line1, line2, city, state, postal) in enumerate(_entries(raw, 5, "address"), start=1):
        try:
            address = PostalAddress(
                line1=fields.name_part(line1, what="line"),
                line2=fields.name_part(line2, what="line"),
                city=fields.name_part(city, what="city"),
                state=fields.state(state),
                postal_code=fields.postal_code(postal),
            )
        except FieldProblem as exc:
            raise FieldProblem(f"entry {n}: {exc.reason}") from None
        if address.is_empty():
            raise FieldProblem(f"entry {n} is empty")
        addresses.append(address)
    return tuple(addresses)
