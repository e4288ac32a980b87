"""Validated, normalized input records: what the readers produce and the store takes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from ehrfetch.store.tables import ConsentStatus, Sex


@dataclass(frozen=True, slots=True)
class PersonName:
    family: str
    given: str | None = None
    middle: str | None = None
    suffix: str | None = None

    def same_as(self, other: PersonName) -> bool:
        return _fold(self) == _fold(other)


@dataclass(frozen=True, slots=True)
class PostalAddress:
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None

    def is_empty(self) -> bool:
        return not any((self.line1, self.line2, self.city, self.state, self.postal_code))

    def same_as(self, other: PostalAddress) -> bool:
        return _fold(self) == _fold(other)


def _fold(record: PersonName | PostalAddress) -> tuple[str, ...]:
    # History de-duplication ignores case and spacing: "MAIN ST" is "Main St".
    return tuple(" ".join((part or "").casefold().split()) for part in _fields(record))


def _fields(record: PersonName | PostalAddress) -> tuple[str | None, ...]:
    if isinstance(record, PersonName):
        return (record.family, record.given, record.middle, record.suffix)
    return (record.line1, record.line2, record.city, record.state, record.postal_code)


@dataclass(frozen=True, slots=True)
class ParticipantRecord:
    research_id: str
    name: PersonName
    birth_date: date
    sex: Sex
    address: PostalAddress | None = None
    previous_names: tuple[PersonName, ...] = ()
    previous_addresses: tuple[PostalAddress, ...] = ()
    phone: str | None = None
    """E.164."""
    email: str | None = None
    ssn_last4: str | None = None
    ehr_on_file: bool = False


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    research_id: str
    type: str
    status: ConsentStatus
    recorded_at: datetime
    withdrawn_at: datetime | None = None
