"""Time: US time-zone offsets (with daylight saving) and HL7 v3 / FHIR renderings.

Facts are kept as naive UTC instants; each organization renders them at its own local offset,
so one lab drawn at 14:05Z reads 09:05-05:00 at one clinic and 07:05-07:00 at another, as real
feeds do. The US daylight-saving rule is computed here rather than read from the tz database,
so output never depends on the host's tzdata.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from ._rand import derive_int

# The fixed "today" of the synthetic world. Never the wall clock: same inputs, same bytes.
REFERENCE_DATE = dt.date(2025, 6, 30)


@dataclass(frozen=True, slots=True)
class OrgZone:
    standard_hours: int  # e.g. -5 for US Eastern
    observes_dst: bool


_ZONES = (
    OrgZone(-5, True),
    OrgZone(-5, True),
    OrgZone(-6, True),
    OrgZone(-6, True),
    OrgZone(-7, True),
    OrgZone(-7, False),
    OrgZone(-8, True),
    OrgZone(-8, True),
)


def org_zone(org_id: str) -> OrgZone:
    return _ZONES[derive_int("zone", org_id) % len(_ZONES)]


def _nth_sunday(year: int, month: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    offset = (6 - first.weekday()) % 7
    return first + dt.timedelta(days=offset + 7 * (n - 1))


@functools.lru_cache(maxsize=1024)
def _daylight_saving(standard_hours: int, year: int) -> tuple[dt.datetime, dt.datetime]:
    """The UTC instants daylight saving time starts and ends in a year (since 2007: from
    the second Sunday in March, 02:00 local standard time, to the first Sunday in
    November, 02:00 local daylight time). Cached: every timestamp of every document asks,
    and deriving them was ~5 % of the mock network's CPU in the throughput benchmark."""
    std = dt.timedelta(hours=standard_hours)
    start = dt.datetime.combine(_nth_sunday(year, 3, 2), dt.time(2)) - std
    end = dt.datetime.combine(_nth_sunday(year, 11, 1), dt.time(2)) - std - dt.timedelta(hours=1)
    return start, end


def utc_offset(zone: OrgZone, when_utc: dt.datetime) -> dt.timedelta:
    std = dt.timedelta(hours=zone.standard_hours)
    if not zone.observes_dst:
        return std
    start, end = _daylight_saving(zone.standard_hours, when_utc.year)
    return std + dt.timedelta(hours=1) if start <= when_utc < end else std


def local(zone: OrgZone, when_utc: dt.datetime) -> dt.datetime:
    offset = utc_offset(zone, when_utc)
    return (when_utc + offset).replace(tzinfo=dt.timezone(offset))


def utc_from_local(zone: OrgZone, day: dt.date, hour: int, minute: int) -> dt.datetime:
    """The UTC instant of a local wall-clock time (good to the hour around DST changes)."""
    naive = dt.datetime.combine(day, dt.time(hour, minute))
    guess = naive - dt.timedelta(hours=zone.standard_hours)
    return naive - utc_offset(zone, guess)


def _offset_text(value: dt.datetime, colon: bool) -> str:
    off = value.utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return f"{sign}{hh:02d}:{mm:02d}" if colon else f"{sign}{hh:02d}{mm:02d}"


def hl7_ts(value: dt.datetime, seconds: bool = True) -> str:
    """HL7 v3 TS with offset, e.g. 20140520193605-0500."""
    body = value.strftime("%Y%m%d%H%M%S" if seconds else "%Y%m%d%H%M")
    return body + _offset_text(value, colon=False)


def hl7_date(value: dt.date, precision: str = "day") -> str:
    if precision == "year":
        return f"{value.year:04d}"
    if precision == "month":
        return f"{value.year:04d}{value.month:02d}"
    return value.strftime("%Y%m%d")


def fhir_datetime(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S") + _offset_text(value, colon=True)


def fhir_date(value: dt.date, precision: str = "day") -> str:
    if precision == "year":
        return f"{value.year:04d}"
    if precision == "month":
        return f"{value.year:04d}-{value.month:02d}"
    return value.isoformat()


def human_date(value: dt.date) -> str:
    return value.strftime("%b %d, %Y").replace(" 0", " ")
