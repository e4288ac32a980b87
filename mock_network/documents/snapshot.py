"""What one document says: the facts an organization knows, as of one of its encounters.

A document at ``index`` belongs to one encounter of the organization, on a day inside the
organization's period of care. It carries what the organization knew on that day: the problem
list, active medications, allergies, immunization history, the latest results, procedures, and
the vital signs taken at that visit (vitals are the encounter's own, never shared).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass

from . import codes
from ._rand import det_oid, det_uuid, rng
from .clock import REFERENCE_DATE, OrgZone, local, utc_from_local
from .facts import (
    AllergyFact,
    ConditionFact,
    ImmunizationFact,
    LabPanelFact,
    MedicationFact,
    OrgView,
    PersonFacts,
    ProcedureFact,
    SmokingFact,
    org_view,
    person_facts,
)
from .model import DocSubject

_DAY = dt.timedelta(days=1)

_CLINICIAN_GIVEN = (
    "Maria",
    "James",
    "Priya",
    "David",
    "Aisha",
    "Robert",
    "Linda",
    "Wei",
    "Carlos",
    "Susan",
    "Ahmed",
    "Emily",
    "Thomas",
    "Grace",
    "Daniel",
    "Nora",
)
_CLINICIAN_FAMILY = (
    "Alvarez",
    "Bennett",
    "Chen",
    "Okafor",
    "Patel",
    "Nguyen",
    "Kowalski",
    "Rahman",
    "Fischer",
    "Morales",
    "Sullivan",
    "Haddad",
    "Lindqvist",
    "Osei",
)


@dataclass(frozen=True, slots=True)
class Clinician:
    given: str
    family: str
    npi: str
    taxonomy: codes.Code


@dataclass(frozen=True, slots=True)
class Vitals:
    when: dt.datetime  # naive UTC
    systolic: int
    diastolic: int
    heart_rate: int
    resp_rate: int
    temp_c: float
    weight_kg: float
    height_cm: float
    spo2: int
    measured: frozenset[str]  # which of: bp hr rr temp weight height bmi spo2

    @property
    def bmi(self) -> float:
        return round(self.weight_kg / (self.height_cm / 100) ** 2, 1)


@dataclass(frozen=True, slots=True)
class Encounter:
    key: str
    type: codes.EncounterType
    start: dt.datetime  # naive UTC
    end: dt.datetime
    reasons: tuple[ConditionFact, ...]
    location: str


@dataclass(frozen=True, slots=True)
class Snapshot:
    subject: DocSubject
    org_id: str
    org_name: str
    org_oid: str
    zone: OrgZone
    index: int
    seed: int
    encounter: Encounter
    author: Clinician
    problems: tuple[ConditionFact, ...]
    medications: tuple[MedicationFact, ...]
    allergies: tuple[AllergyFact, ...]
    allergies_unknown: bool  # the org recorded nothing about allergies (nullFlavor NI)
    immunizations: tuple[ImmunizationFact, ...]
    labs: tuple[LabPanelFact, ...]
    procedures: tuple[ProcedureFact, ...]
    vitals: Vitals
    smoking: SmokingFact | None
    month_precision: frozenset[str]

    def local(self, when_utc: dt.datetime) -> dt.datetime:
        return local(self.zone, when_utc)

    def fact_uuid(self, key: str) -> str:
        # Stable per organization and patient: the same fact keeps its id across this org's
        # documents (as a real EHR's resource ids do) but differs between organizations.
        return det_uuid("fact", self.seed, self.org_id, self.subject.patient_id, key)

    def doc_uuid(self, *parts: object) -> str:
        return det_uuid("doc", self.seed, self.org_id, self.subject.patient_id, self.index, *parts)

    @property
    def doc_date(self) -> dt.datetime:
        return self.local(self.encounter.end)

    @property
    def inpatient(self) -> bool:
        return self.encounter.type.act_class == "IMP"

    @property
    def mrn_oid(self) -> str:
        return self.org_oid + ".1"


def _clinician(r: random.Random, org_id: str, seed: int) -> Clinician:
    # A handful of clinicians per organization, so author names recur realistically.
    n = r.randrange(4)
    cr = rng("clinician", seed, org_id, n)
    npi = "1" + "".join(str(cr.randrange(10)) for _ in range(9))
    taxonomy = cr.choice(
        (
            codes.Code("207Q00000X", "Family Medicine Physician"),
            codes.Code("207R00000X", "Internal Medicine Physician"),
            codes.Code("363LF0000X", "Family Nurse Practitioner"),
        )
    )
    return Clinician(cr.choice(_CLINICIAN_GIVEN), cr.choice(_CLINICIAN_FAMILY), npi, taxonomy)


def _vitals(
    r: random.Random, subject: DocSubject, when: dt.datetime, problems: tuple[ConditionFact, ...]
) -> Vitals:
    keys = {p.condition.key for p in problems}
    age = max(0, when.year - subject.birth_date.year)
    pr = rng("body", subject.person_key)
    male = subject.sex == "male"
    adult_height = pr.gauss(176 if male else 163, 6.5)
    height = adult_height if age >= 18 else max(55.0, adult_height * min(1.0, 0.42 + age * 0.034))
    bmi_target = pr.uniform(31, 38) if "obesity" in keys else pr.uniform(20.5, 29)
    if age < 18:
        bmi_target = pr.uniform(15, 21)
    weight = bmi_target * (height / 100) ** 2 + r.uniform(-1.5, 1.5)
    hypertensive = "htn" in keys
    measured = {"bp", "hr", "weight"}
    for item, p in (("rr", 0.7), ("temp", 0.6), ("height", 0.6), ("bmi", 0.5), ("spo2", 0.6)):
        if r.random() < p:
            measured.add(item)
    return Vitals(
        when=when,
        systolic=r.randint(132, 158) if hypertensive else r.randint(104, 129),
        diastolic=r.randint(82, 96) if hypertensive else r.randint(62, 81),
        heart_rate=r.randint(58, 96),
        resp_rate=r.randint(12, 20),
        temp_c=round(r.uniform(36.3, 37.3), 1),
        weight_kg=round(weight, 1),
        height_cm=round(height, 1),
        spo2=r.randint(94, 100),
        measured=frozenset(measured),
    )


def _active_at(m: MedicationFact, day: dt.date) -> bool:
    return m.start <= day and (m.end is None or m.end >= day - 30 * _DAY)


def _encounter(
    r: random.Random,
    view: OrgView,
    subject: DocSubject,
    org_name: str,
    index: int,
    inpatient: bool,
    problems: tuple[ConditionFact, ...],
) -> tuple[
    Encounter, tuple[ConditionFact, ...], tuple[ProcedureFact, ...], tuple[MedicationFact, ...]
]:
    day = view.window_start + r.randint(0, (view.window_end - view.window_start).days) * _DAY
    if day < subject.birth_date:
        day = min(REFERENCE_DATE, subject.birth_date + 30 * _DAY)
    extra_dx: tuple[ConditionFact, ...] = ()
    extra_proc: tuple[ProcedureFact, ...] = ()
    extra_med: tuple[MedicationFact, ...] = ()
    if inpatient:
        stay = r.randint(2, 6)
        admit = day - stay * _DAY
        start = utc_from_local(view.zone, admit, r.randint(0, 23), r.randrange(60))
        end = utc_from_local(view.zone, day, r.randint(10, 16), r.randrange(60))
        age = day.year - subject.birth_date.year
        options = [k for k in codes.INPATIENT_KEYS if codes.CONDITIONS[k].min_age <= age] or [
            "pneumonia"
        ]
        cond = codes.CONDITIONS[r.choice(options)]
        dx = ConditionFact(f"adm:{index}:{cond.key}", cond, admit, day)
        extra_dx = (dx,)
        proc_key = {"pneumonia": "cxr", "appendicitis": "appendectomy", "chest_pain": "ecg"}
        if cond.key in proc_key:
            proc = codes.PROCEDURES[proc_key[cond.key]]
            extra_proc = (
                ProcedureFact(
                    f"adm:{index}:{proc.key}", proc, start + dt.timedelta(hours=r.randint(3, 20))
                ),
            )
        for med_key in codes.TREATMENTS.get(cond.key, ()):
            med = codes.MEDICATIONS[med_key]
            course = med.course_days or 7
            extra_med = (
                MedicationFact(f"adm:{index}:{med.key}", med, day, day + course * _DAY, dx.key),
            )
            break
        etype = codes.ENCOUNTER_TYPES["admission"]
        return (
            Encounter(f"enc:{index}", etype, start, end, extra_dx, f"{org_name} Inpatient Unit"),
            extra_dx,
            extra_proc,
            extra_med,
        )
    start = utc_from_local(view.zone, day, r.randint(8, 16), r.choice((0, 15, 20, 30, 40, 45)))
    end = start + dt.timedelta(minutes=r.choice((20, 25, 30, 40)))
    current = [p for p in problems if p.onset <= day]
    acute = [p for p in current if not p.condition.chronic and abs((p.onset - day).days) <= 10]
    reasons: tuple[ConditionFact, ...]
    if acute:
        etype, reasons = codes.ENCOUNTER_TYPES["symptom"], (acute[0],)
    elif current and r.random() < 0.6:
        etype, reasons = codes.ENCOUNTER_TYPES["followup"], (r.choice(current),)
    else:
        etype, reasons = codes.ENCOUNTER_TYPES["checkup"], ()
    return (
        Encounter(f"enc:{index}", etype, start, end, reasons, f"{org_name} Clinic"),
        extra_dx,
        extra_proc,
        extra_med,
    )


def build_snapshot(
    subject: DocSubject,
    org_id: str,
    org_name: str,
    seed: int,
    index: int,
    inpatient: bool,
    limits: dict[str, int],
) -> Snapshot:
    birth_year = subject.birth_date.year
    facts: PersonFacts = person_facts(subject.person_key, seed, birth_year)
    view = org_view(subject.person_key, seed, birth_year, org_id)
    r = rng("snapshot", seed, org_id, subject.patient_id, index)
    known = view.known

    def mine(key: str) -> bool:
        return key in known

    all_problems = tuple(c for c in facts.conditions if mine(c.key))
    encounter, extra_dx, extra_proc, extra_med = _encounter(
        r, view, subject, org_name, index, inpatient, all_problems
    )
    day = encounter.end.date()

    problems = [
        c
        for c in all_problems
        if c.onset <= day
        and (c.condition.chronic or (c.abated is not None and (day - c.abated).days <= 540))
    ]
    problems = problems[-limits["problems"] :] + list(extra_dx)
    meds = [m for m in facts.medications if mine(m.key) and _active_at(m, day)]
    meds = meds[-limits["medications"] :] + list(extra_med)
    allergies = tuple(a for a in facts.allergies if mine(a.key) and a.recorded <= day)
    # An org that holds none of a person's allergies either says "no known allergies" (true
    # when the person has none) or recorded nothing at all.
    allergies_unknown = not allergies and (bool(facts.allergies) or r.random() < 0.1)
    imms = [i for i in facts.immunizations if mine(i.key) and i.when.date() <= day]
    labs = [p for p in facts.labs if mine(p.key) and p.when.date() <= day]
    procs = [p for p in facts.procedures if mine(p.key) and p.when.date() <= day]
    procs = procs[-limits["procedures"] :] + list(extra_proc)
    smoking = (
        facts.smoking
        if facts.smoking is not None and mine(facts.smoking.key) and facts.smoking.recorded <= day
        else None
    )
    vitals_time = encounter.start + dt.timedelta(minutes=r.randint(3, 12))
    return Snapshot(
        subject=subject,
        org_id=org_id,
        org_name=org_name,
        org_oid=det_oid("org", org_id),
        zone=view.zone,
        index=index,
        seed=seed,
        encounter=encounter,
        author=_clinician(r, org_id, seed),
        problems=tuple(problems),
        medications=tuple(meds),
        allergies=allergies,
        allergies_unknown=allergies_unknown,
        immunizations=tuple(imms[-limits["immunizations"] :]),
        labs=tuple(labs[-limits["labs"] :]),
        procedures=tuple(procs),
        vitals=_vitals(r, subject, vitals_time, tuple(problems)),
        smoking=smoking,
        month_precision=view.month_precision,
    )
