"""Clinical facts of a person, and which of them one organization knows.

Facts belong to the PERSON (``person_key`` + seed): a condition, a prescription, a lab draw
happened once in that person's life. Each organization knows a subset of them - those from its
own period of care plus some outside records - so the same fact recurs at two organizations and
de-duplication has real work to do. Repeat draws a few days apart (same test, new value) are
separate facts on purpose: near misses that must not be merged.

Facts depend on the birth YEAR only, not the full org-local birth date: organizations may hold
a day/month-transposed birth date for the same person, and that must not change their history.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
from dataclasses import dataclass

from . import codes
from ._rand import rng
from .clock import REFERENCE_DATE, OrgZone, org_zone

_HISTORY_YEARS = 12
_DAY = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class ConditionFact:
    key: str
    condition: codes.Condition
    onset: dt.date
    abated: dt.date | None


@dataclass(frozen=True, slots=True)
class MedicationFact:
    key: str
    medication: codes.Medication
    start: dt.date
    end: dt.date | None
    reason: str | None  # ConditionFact key


@dataclass(frozen=True, slots=True)
class AllergyFact:
    key: str
    allergen: codes.Allergen
    reaction: codes.Code
    severity: codes.Severity
    onset_year: int | None
    recorded: dt.date


@dataclass(frozen=True, slots=True)
class ImmunizationFact:
    key: str
    vaccine: codes.Vaccine
    when: dt.datetime  # naive UTC
    lot: str
    refusal: codes.Code | None  # not given, and why


@dataclass(frozen=True, slots=True)
class LabResultFact:
    test: codes.LabTest
    value: float

    @property
    def interpretation(self) -> str:
        if self.test.low is not None and self.value < self.test.low:
            return "L"
        if self.test.high is not None and self.value > self.test.high:
            return "H"
        return "N"


@dataclass(frozen=True, slots=True)
class LabPanelFact:
    key: str
    panel: codes.LabPanel
    when: dt.datetime  # naive UTC
    results: tuple[LabResultFact, ...]


@dataclass(frozen=True, slots=True)
class ProcedureFact:
    key: str
    procedure: codes.Procedure
    when: dt.datetime  # naive UTC


@dataclass(frozen=True, slots=True)
class SmokingFact:
    key: str
    status: codes.Code
    recorded: dt.date


@dataclass(frozen=True, slots=True)
class PersonFacts:
    start: dt.date  # earliest date of recorded care
    conditions: tuple[ConditionFact, ...]
    medications: tuple[MedicationFact, ...]
    allergies: tuple[AllergyFact, ...]
    immunizations: tuple[ImmunizationFact, ...]
    labs: tuple[LabPanelFact, ...]
    procedures: tuple[ProcedureFact, ...]
    smoking: SmokingFact | None

    def all_keys(self) -> list[str]:
        groups: tuple[
            tuple[
                ConditionFact
                | MedicationFact
                | AllergyFact
                | ImmunizationFact
                | LabPanelFact
                | ProcedureFact,
                ...,
            ],
            ...,
        ] = (
            self.conditions,
            self.medications,
            self.allergies,
            self.immunizations,
            self.labs,
            self.procedures,
        )
        keys = [f.key for group in groups for f in group]
        if self.smoking is not None:
            keys.append(self.smoking.key)
        return keys


def _day_between(r: random.Random, low: dt.date, high: dt.date) -> dt.date:
    span = max(0, (high - low).days)
    return low + dt.timedelta(days=r.randint(0, span))


def _instant(r: random.Random, day: dt.date) -> dt.datetime:
    # 12:00-20:59 UTC is a morning-to-afternoon clinic hour in every US zone.
    return dt.datetime.combine(day, dt.time(r.randint(12, 20), r.randrange(60)))


def _age_on(birth_year: int, day: dt.date) -> int:
    return day.year - birth_year


def _choose_conditions(r: random.Random, birth_year: int) -> list[str]:
    age = _age_on(birth_year, REFERENCE_DATE)
    weights = {
        "htn": 0.05 + 0.008 * max(0, age - 25),
        "hld": 0.04 + 0.006 * max(0, age - 25),
        "t2dm": 0.02 + 0.004 * max(0, age - 30),
        "prediabetes": 0.08,
        "asthma": 0.09,
        "mdd": 0.08,
        "gad": 0.07,
        "hypothyroid": 0.05,
        "oa_knee": 0.004 * max(0, age - 45),
        "obesity": 0.15,
        "gerd": 0.08,
        "migraine": 0.06,
        "ckd": 0.003 * max(0, age - 50),
        "copd": 0.002 * max(0, age - 45),
    }
    chosen = [
        key
        for key in codes.CHRONIC_KEYS
        if age >= codes.CONDITIONS[key].min_age and r.random() < min(0.6, weights[key])
    ]
    if "t2dm" in chosen and "prediabetes" in chosen:
        chosen.remove("prediabetes")
    if not chosen and age >= 18 and r.random() < 0.8:
        # Most adults in a research cohort carry at least one problem-list entry.
        chosen.append(r.choice(("htn", "hld", "obesity", "gerd", "asthma")))
    return chosen


# Each lab's range, by the first of its conditions the person has, else its usual one.
# Module-level: building this table for every value was ~10 % of document generation.
_LAB_RANGES: dict[str, tuple[tuple[str | None, tuple[float, float]], ...]] = {
    "4548-4": (("t2dm", (6.6, 8.8)), ("prediabetes", (5.7, 6.4)), (None, (4.8, 5.5))),
    "2345-7": (("t2dm", (130, 190)), ("prediabetes", (100, 125)), (None, (74, 98))),
    "2160-0": (("ckd", (1.4, 2.2)), (None, (0.7, 1.15))),
    "3094-0": (("ckd", (22, 35)), (None, (9, 19))),
    "2951-2": ((None, (136, 144)),),
    "2823-3": ((None, (3.6, 4.9)),),
    "2075-0": ((None, (99, 106)),),
    "2028-9": ((None, (23, 28)),),
    "2093-3": (("hld", (205, 262)), (None, (150, 196))),
    "2571-8": (("hld", (150, 260)), (None, (70, 145))),
    "2085-9": (("hld", (34, 50)), (None, (45, 72))),
    "13457-7": (("hld", (128, 175)), (None, (70, 118))),
    "6690-2": ((None, (4.8, 9.6)),),
    "718-7": ((None, (12.2, 15.8)),),
    "4544-3": ((None, (37, 47)),),
    "777-3": ((None, (170, 360)),),
    "3016-3": (("hypothyroid", (4.6, 8.2)), (None, (0.8, 3.2))),
}


def _lab_value(r: random.Random, test: codes.LabTest, conditions: set[str]) -> float:
    low, high = test.low or 1.0, test.high or 2.0
    for condition, bounds in _LAB_RANGES.get(test.loinc.code, ()):
        if condition is None or condition in conditions:
            low, high = bounds
            break
    return round(r.uniform(low, high), test.decimals)


def _panel(
    r: random.Random, key: str, panel: codes.LabPanel, when: dt.datetime, conditions: set[str]
) -> LabPanelFact:
    results = tuple(LabResultFact(t, _lab_value(r, t, conditions)) for t in panel.tests)
    return LabPanelFact(key, panel, when, results)


def _build_labs(
    r: random.Random, start: dt.date, conditions: list[ConditionFact], adult: bool
) -> list[LabPanelFact]:
    active = {c.condition.key for c in conditions}
    series: dict[str, dt.date] = {}
    for c in conditions:
        for panel_key in codes.MONITORING.get(c.condition.key, ()):
            first = max(c.onset, start)
            series[panel_key] = min(series.get(panel_key, first), first)
    if adult:
        for panel_key in ("cbc", "bmp"):
            if panel_key not in series and r.random() < 0.55:
                series[panel_key] = _day_between(r, start, REFERENCE_DATE - 400 * _DAY)
    labs: list[LabPanelFact] = []
    for panel_key, first in sorted(series.items()):
        panel = codes.LAB_PANELS[panel_key]
        day = first + r.randint(0, 30) * _DAY
        draws: list[dt.date] = []
        while day < REFERENCE_DATE - 7 * _DAY:
            draws.append(day)
            day += r.randint(90, 400) * _DAY
        for n, draw_day in enumerate(draws[-6:]):
            key = f"lab:{panel_key}:{n}"
            labs.append(_panel(r, key, panel, _instant(r, draw_day), active))
            if r.random() < 0.15:
                # A repeat draw days later: same test, a different value. A near miss.
                again = draw_day + r.randint(4, 20) * _DAY
                if again < REFERENCE_DATE:
                    labs.append(_panel(r, key + "r", panel, _instant(r, again), active))
    labs.sort(key=lambda p: p.when)
    return labs


def _build_immunizations(
    r: random.Random, start: dt.date, birth_year: int
) -> list[ImmunizationFact]:
    out: list[ImmunizationFact] = []

    def add(vaccine_key: str, day: dt.date, refused: bool = False) -> None:
        if not start <= day < REFERENCE_DATE:
            return
        vaccine = codes.VACCINES[vaccine_key]
        lot = f"{r.choice('ABCDEFGHJKLMNPRSTUVWXY')}{r.randint(10000, 99999)}"
        reason = r.choice(codes.REFUSAL_REASONS) if refused else None
        key = f"imm:{vaccine_key}:{day.isoformat()}"
        out.append(ImmunizationFact(key, vaccine, _instant(r, day), lot, reason))

    flu_kind = r.choice(("flu", "flu_pf", "flu_quad"))
    flu_rate = r.choice((0.2, 0.5, 0.8))
    for year in range(start.year, REFERENCE_DATE.year):
        roll = r.random()
        if roll < flu_rate:
            add(flu_kind, dt.date(year, r.choice((9, 10, 10, 11)), r.randint(1, 28)))
        elif roll < flu_rate + 0.04:
            add(flu_kind, dt.date(year, 10, r.randint(1, 28)), refused=True)
    age_now = _age_on(birth_year, REFERENCE_DATE)
    if age_now >= 12 and r.random() < 0.5:
        add("tdap", _day_between(r, start, REFERENCE_DATE))
    elif age_now >= 19 and r.random() < 0.2:
        add("td", _day_between(r, start, REFERENCE_DATE))
    if 9 <= _age_on(birth_year, dt.date(2020, 1, 1)) <= 26 and r.random() < 0.4:
        first = dt.date(max(2016, birth_year + 11), r.randint(1, 12), r.randint(1, 28))
        add("hpv9", first)
        add("hpv9", first + r.randint(180, 365) * _DAY)
    if age_now >= 55 and r.random() < 0.5:
        first = _day_between(r, dt.date(2018, 6, 1), dt.date(2024, 6, 1))
        add("zoster", first)
        add("zoster", first + r.randint(60, 180) * _DAY)
    if age_now >= 67 and r.random() < 0.6:
        add(r.choice(("ppsv23", "pcv13")), _day_between(r, start, REFERENCE_DATE))
    if age_now >= 18 and r.random() < 0.3:
        add("hepb", _day_between(r, start, REFERENCE_DATE))
    if age_now >= 12 and r.random() < 0.65:
        first = dt.date(2021, r.randint(2, 6), r.randint(1, 28))
        add("covid", first)
        add("covid", first + r.randint(21, 35) * _DAY)
    out.sort(key=lambda i: i.when)
    return out[-14:]


def _build_procedures(
    r: random.Random, start: dt.date, birth_year: int, conditions: list[ConditionFact]
) -> list[ProcedureFact]:
    out: list[ProcedureFact] = []
    keys = {c.condition.key for c in conditions}
    age_now = _age_on(birth_year, REFERENCE_DATE)
    if age_now >= 50 and r.random() < 0.45:
        day = _day_between(r, max(start, dt.date(birth_year + 45, 1, 1)), REFERENCE_DATE)
        when = _instant(r, day)
        out.append(ProcedureFact("proc:colonoscopy", codes.PROCEDURES["colonoscopy"], when))
        if r.random() < 0.3:
            out.append(
                ProcedureFact(
                    "proc:polypectomy",
                    codes.PROCEDURES["polypectomy"],
                    when + dt.timedelta(minutes=12),
                )
            )
    if ("htn" in keys or age_now >= 40) and r.random() < 0.35:
        out.append(
            ProcedureFact(
                "proc:ecg",
                codes.PROCEDURES["ecg"],
                _instant(r, _day_between(r, start, REFERENCE_DATE)),
            )
        )
    if keys & {"asthma", "copd"} and r.random() < 0.5:
        out.append(
            ProcedureFact(
                "proc:spirometry",
                codes.PROCEDURES["spirometry"],
                _instant(r, _day_between(r, start, REFERENCE_DATE)),
            )
        )
    if age_now >= 30 and r.random() < 0.06:
        out.append(
            ProcedureFact(
                "proc:cholecystectomy",
                codes.PROCEDURES["cholecystectomy"],
                _instant(r, _day_between(r, start, REFERENCE_DATE)),
            )
        )
    out = [p for p in out if p.when.date() < REFERENCE_DATE]
    out.sort(key=lambda p: p.when)
    return out


@functools.lru_cache(maxsize=8192)
def person_facts(person_key: int, seed: int, birth_year: int) -> PersonFacts:
    r = rng("person-facts", seed, person_key)
    # A population whose reference date is later than the documents' clock could hold
    # someone born after it: their history ends where it began, instead of an empty range.
    birth_year = min(birth_year, REFERENCE_DATE.year)
    born = dt.date(birth_year, 7, 1)
    start = max(REFERENCE_DATE.replace(year=REFERENCE_DATE.year - _HISTORY_YEARS), born + 60 * _DAY)
    start = min(start, REFERENCE_DATE - 90 * _DAY)
    adult = _age_on(birth_year, REFERENCE_DATE) >= 18

    conditions: list[ConditionFact] = []
    for key in _choose_conditions(r, birth_year):
        cond = codes.CONDITIONS[key]
        earliest = max(dt.date(birth_year + cond.min_age, 1, 1), start - 6 * 365 * _DAY)
        onset = _day_between(r, earliest, REFERENCE_DATE - 60 * _DAY)
        conditions.append(ConditionFact(f"cond:{key}", cond, onset, None))
    for n in range(r.choice((0, 1, 1, 2, 3))):
        cond = codes.CONDITIONS[r.choice(codes.ACUTE_KEYS)]
        onset = _day_between(r, start, REFERENCE_DATE - 30 * _DAY)
        conditions.append(
            ConditionFact(f"acute:{n}:{cond.key}", cond, onset, onset + r.randint(7, 21) * _DAY)
        )
    conditions.sort(key=lambda c: c.onset)

    medications: list[MedicationFact] = []
    for c in conditions:
        options = codes.TREATMENTS.get(c.condition.key, ())
        if not options or r.random() < 0.15:
            continue
        med = codes.MEDICATIONS[options[0] if r.random() < 0.6 else r.choice(options)]
        if any(m.medication.key == med.key for m in medications):
            continue
        begin = c.onset + r.randint(0, 45) * _DAY
        end: dt.date | None = None
        if med.course_days is not None:
            end = begin + med.course_days * _DAY
        elif r.random() < 0.15:
            end = _day_between(r, begin + 90 * _DAY, REFERENCE_DATE)
        if begin < REFERENCE_DATE:
            medications.append(
                MedicationFact(f"med:{med.key}:{begin.isoformat()}", med, begin, end, c.key)
            )

    allergies: list[AllergyFact] = []
    for n in range(r.choices((0, 1, 2), weights=(0.62, 0.28, 0.10))[0]):
        allergen = codes.ALLERGENS[r.choice(sorted(codes.ALLERGENS))]
        if any(a.allergen.key == allergen.key for a in allergies):
            continue
        recorded = _day_between(r, start, REFERENCE_DATE - 30 * _DAY)
        onset_year = r.randint(max(birth_year, recorded.year - 20), recorded.year)
        severity = r.choices(codes.SEVERITIES, weights=(0.45, 0.4, 0.15))[0]
        reaction = (
            codes.REACTIONS[5]
            if severity.fhir == "severe" and r.random() < 0.5
            else r.choice(codes.REACTIONS[:5])
        )
        allergies.append(
            AllergyFact(
                f"allergy:{n}:{allergen.key}",
                allergen,
                reaction,
                severity,
                onset_year if r.random() < 0.7 else None,
                recorded,
            )
        )

    smoking: SmokingFact | None = None
    if _age_on(birth_year, REFERENCE_DATE) >= 13:
        status = r.choices(
            [s for s, _ in codes.SMOKING_STATUSES], weights=[w for _, w in codes.SMOKING_STATUSES]
        )[0]
        smoking = SmokingFact("smoking", status, _day_between(r, start, REFERENCE_DATE))

    return PersonFacts(
        start=start,
        conditions=tuple(conditions),
        medications=tuple(medications),
        allergies=tuple(allergies),
        immunizations=tuple(_build_immunizations(r, start, birth_year)),
        labs=tuple(_build_labs(r, start, conditions, adult)),
        procedures=tuple(_build_procedures(r, start, birth_year, conditions)),
        smoking=smoking,
    )


@dataclass(frozen=True, slots=True)
class OrgView:
    """What one organization knows of a person, and when it cared for them."""

    window_start: dt.date
    window_end: dt.date
    zone: OrgZone
    known: frozenset[str]
    month_precision: frozenset[str]  # condition keys this org recorded to the month only


@functools.lru_cache(maxsize=16384)
def org_view(person_key: int, seed: int, birth_year: int, org_id: str) -> OrgView:
    facts = person_facts(person_key, seed, birth_year)
    r = rng("org-view", seed, person_key, org_id)
    span = (REFERENCE_DATE - facts.start).days
    length = max(60, int(span * r.uniform(0.35, 0.9)))
    w_start = facts.start + r.randint(0, max(0, span - length)) * _DAY
    w_end = min(REFERENCE_DATE, w_start + length * _DAY)

    def inside(day: dt.date) -> bool:
        return w_start <= day <= w_end

    known: set[str] = set()
    month: set[str] = set()
    for c in facts.conditions:
        if c.condition.chronic:
            if c.onset <= w_end and r.random() < 0.85:
                known.add(c.key)
                if r.random() < 0.2:
                    month.add(c.key)
        elif r.random() < (0.9 if inside(c.onset) else 0.15):
            known.add(c.key)
    for m in facts.medications:
        overlaps = m.start <= w_end and (m.end is None or m.end >= w_start)
        if r.random() < (0.85 if overlaps and m.reason in known else 0.1):
            known.add(m.key)
    for a in facts.allergies:
        if r.random() < 0.8:
            known.add(a.key)
    for i in facts.immunizations:
        if r.random() < (0.85 if inside(i.when.date()) else 0.35):
            known.add(i.key)
    for p in facts.labs:
        if r.random() < (0.8 if inside(p.when.date()) else 0.15):
            known.add(p.key)
    for pr in facts.procedures:
        if r.random() < (0.9 if inside(pr.when.date()) else 0.3):
            known.add(pr.key)
    if facts.smoking is not None and r.random() < 0.85:
        known.add(facts.smoking.key)
    return OrgView(w_start, w_end, org_zone(org_id), frozenset(known), frozenset(month))
