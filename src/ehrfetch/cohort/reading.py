"""What every reader needs to judge a row: today, the phone region, the id system."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from ehrfetch.settings import RosterSettings


@dataclass(frozen=True, slots=True)
class ReadContext:
    now: datetime
    region: str
    research_id_system: str

    @property
    def today(self) -> date:
        return self.now.date()

    @classmethod
    def from_settings(cls, settings: RosterSettings, now: datetime | None = None) -> ReadContext:
        return cls(
            now=now or datetime.now(UTC),
            region=settings.default_region,
            research_id_system=settings.research_id_system,
        )
