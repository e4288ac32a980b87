"""Field checks shared by the roster and consent readers.

Each check takes the raw text and returns the normalized value, or raises
:class:`FieldProblem` with a reason that never quotes the value (values are
demographics; the reason is printed, logged and written to reports).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta

import phonenumbers

from ehrfetch.store.tables import ConsentStatus, Sex


class FieldProblem(ValueError):
    """A field that fails its check; ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


RESEARCH_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ZIP = re.compile(r"(\d{5})(?:-?(\d{4}))?")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_SSN4 = re.compile(r"\d{4}")
# Tab and line breaks are white space (a quoted CSV field may span lines); others are not.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TOKEN = re.compile(r"[a-z][a-z0-9_-]{0,31}")

EARLIEST_BIRTH_DATE = date(1880, 1, 1)
# Clocks differ between the program's systems and this one; a consent "signed" a few
# minutes in the future is clock skew, not an error.
CLOCK_SKEW = timedelta(minutes=10)

USPS_STATES = frozenset(
    # States, DC, territories and freely associated states, military (AA/AE/AP).
    {
        "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL",
        "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE",
        "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD",
        "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI",
        "UM", "FM", "MH", "PW", "AA", "AE", "AP",
    }
)  # fmt: skip

_SEX_CODES = {
    "male": Sex.MALE, "m": Sex.MALE,
    "female": Sex.FEMALE, "f": Sex.FEMALE,
    "other": Sex.OTHER, "o": Sex.OTHER,
    "unknown": Sex.UNKNOWN, "u": Sex.UNKNOWN,
}  # fmt: skip

_SUFFIXES = {s.casefold(): s for s in ("Jr", "Sr", "II", "III", "IV", "V", "VI")}

_TRUE = frozenset({"true", "yes", "y", "1"})
_FALSE = frozenset({"false", "no", "n", "0", ""})


def clean(raw: str | None) -> str | None:
    """Strip; empty becomes None."""
    if raw is None:
        return None
    value = raw.strip()
    return value or None


def research_id(raw: str | None) -> str:
    value = clean(raw)
    if value is None:
        raise FieldProblem("research id is missing")
    if not RESEARCH_ID.fullmatch(value):
        raise FieldProblem("research id must be 1-64 characters of A-Z a-z 0-9 . _ -")
    return value


def name_part(raw: str | None, *, required: bool = False, what: str = "name") -> str | None:
    value = clean(raw)
    if value is None:
        if required:
            raise FieldProblem(f"{what} is missing")
        return None
    if _CONTROL.search(value):
        raise FieldProblem(f"{what} contains control characters")
    if len(value) > 100:
        raise FieldProblem(f"{what} is longer than 100 characters")
    return " ".join(value.split())


def suffix(raw: str | None) -> str | None:
    value = clean(raw)
    if value is None:
        return None
    value = value.rstrip(".")
    known = _SUFFIXES.get(value.casefold())
    if known is not None:
        return known
    if len(value) > 16 or _CONTROL.search(value):
        raise FieldProblem("not a name suffix")
    return value


def birth_date(raw: str | None, *, today: date) -> date:
    value = clean(raw)
    if value is None:
        raise FieldProblem("birth date is missing")
    if not _ISO_DATE.fullmatch(value):
        raise FieldProblem("birth date must be YYYY-MM-DD")
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        raise FieldProblem("birth date is not a real calendar date") from None
    if parsed > today:
        raise FieldProblem("birth date is in the future")
    if parsed < EARLIEST_BIRTH_DATE:
        raise FieldProblem(f"birth date is before {EARLIEST_BIRTH_DATE.year}")
    return parsed


def sex(raw: str | None) -> Sex:
    value = clean(raw)
    if value is None:
        raise FieldProblem("sex is missing")
    code = _SEX_CODES.get(value.casefold())
    if code is None:
        raise FieldProblem("unknown sex code (expected male, female, other, unknown or M/F/O/U)")
    return code


def state(raw: str | None) -> str | None:
    value = clean(raw)
    if value is None:
        return None
    upper = value.upper()
    if upper not in USPS_STATES:
        raise FieldProblem("not a two-letter USPS state code")
    return upper


def postal_code(raw: str | None) -> str | None:
    value = clean(raw)
    if value is None:
        return None
    match = _ZIP.fullmatch(value)
    if match is None:
        raise FieldProblem("postal code must be a ZIP (12345) or ZIP+4 (12345-6789)")
    zip5, plus4 = match.groups()
    return f"{zip5}-{plus4}" if plus4 else zip5


def phone(raw: str | None, *, region: str) -> str | None:
    value = clean(raw)
    if value is None:
        return None
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        raise FieldProblem("not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise FieldProblem("not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def email(raw: str | None) -> str | None:
    value = clean(raw)
    if value is None:
        return None
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise FieldProblem("not an email address")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def ssn_last4(raw: str | None) -> str | None:
    value = clean(raw)
    if value is None:
        return None
    if not _SSN4.fullmatch(value):
        raise FieldProblem("SSN last four must be exactly four digits")
    if value == "0000":
        raise FieldProblem("SSN last four cannot be 0000")
    return value


def flag(raw: str | None) -> bool:
    value = (raw or "").strip().casefold()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FieldProblem("must be true or false")


def token(raw: str | None, *, what: str) -> str:
    value = clean(raw)
    if value is None:
        raise FieldProblem(f"{what} is missing")
    value = value.lower()
    if not _TOKEN.fullmatch(value):
        raise FieldProblem(f"{what} must be a lowercase token (a-z, 0-9, _ and -)")
    return value


def consent_status(raw: str | None) -> ConsentStatus:
    value = clean(raw)
    if value is None:
        raise FieldProblem("status is missing")
    try:
        return ConsentStatus(value.lower())
    except ValueError:
        raise FieldProblem("unknown status (expected active, withdrawn or declined)") from None


def timestamp(raw: str | None, *, now: datetime, what: str) -> datetime | None:
    """ISO 8601 date or date-time; a date is midnight UTC, no offset means UTC."""
    value = clean(raw)
    if value is None:
        return None
    try:
        if _ISO_DATE.fullmatch(value):
            parsed = datetime.combine(date.fromisoformat(value), time(), UTC)
        else:
            parsed = datetime.fromisoformat(value)
    except ValueError:
        raise FieldProblem(f"{what} is not an ISO 8601 date or date-time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if parsed > now + CLOCK_SKEW:
        raise FieldProblem(f"{what} is in the future")
    return parsed
