"""FHIR R4 Bundles (collection or document) built as plain dicts and serialized with orjson.

Models from fhir.resources are used only in tests (R4B models there): constructing them here
would cost far more than the millisecond a document may take.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson

from . import codes
from .clock import fhir_date, fhir_datetime
from .facts import (
    AllergyFact,
    ConditionFact,
    ImmunizationFact,
    LabPanelFact,
    LabResultFact,
    MedicationFact,
    ProcedureFact,
)
from .snapshot import Snapshot

Json = dict[str, Any]
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ROUTE_URI = "http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration"


def _coding(system: str, code: codes.Code) -> Json:
    return {"system": system, "code": code.code, "display": code.display}


def _cc(system: str, code: codes.Code, text: str | None = None) -> Json:
    out: Json = {"coding": [_coding(system, code)]}
    if text:
        out["text"] = text
    return out


def _qty(value: float, unit: str, human: str | None = None) -> Json:
    return {"value": value, "unit": human or unit, "system": codes.UCUM_URI, "code": unit}


class _Builder:
    def __init__(self, snap: Snapshot) -> None:
        self.s = snap
        self.entries: list[Json] = []
        self.patient_ref = "urn:uuid:" + snap.fact_uuid("patient")
        self.org_ref = "urn:uuid:" + snap.fact_uuid("organization")
        self.author_ref = "urn:uuid:" + snap.fact_uuid("practitioner:" + snap.author.npi)
        self.encounter_ref = "urn:uuid:" + snap.doc_uuid("encounter")
        self.sections: dict[str, list[str]] = {}

    def add(self, uuid: str, resource: Json, section: str | None = None) -> str:
        resource["id"] = resource.get("id", uuid)
        ref = "urn:uuid:" + uuid
        self.entries.append({"fullUrl": ref, "resource": resource})
        if section:
            self.sections.setdefault(section, []).append(ref)
        return ref

    def dt(self, when_utc: dt.datetime) -> str:
        return fhir_datetime(self.s.local(when_utc))

    # -- administrative ------------------------------------------------------------------------
    def patient(self) -> None:
        s = self.s.subject
        pid = s.patient_id if _FHIR_ID.match(s.patient_id) else self.s.fact_uuid("patient")
        self.entries.append(
            {
                "fullUrl": self.patient_ref,
                "resource": {
                    "resourceType": "Patient",
                    "id": pid,
                    "identifier": [
                        {
                            "use": "usual",
                            "type": {
                                "coding": [
                                    {
                                        "system": codes.V2_0203_URI,
                                        "code": "MR",
                                        "display": "Medical record number",
                                    }
                                ]
                            },
                            "system": "urn:oid:" + self.s.mrn_oid,
                            "value": s.patient_id,
                        }
                    ],
                    "name": [{"use": "official", "family": s.family, "given": [s.given]}],
                    "gender": s.sex,
                    "birthDate": s.birth_date.isoformat(),
                    "managingOrganization": {"reference": self.org_ref, "display": self.s.org_name},
                },
            }
        )

    def organization(self) -> None:
        self.add(
            self.s.fact_uuid("organization"),
            {
                "resourceType": "Organization",
                "identifier": [
                    {"system": "urn:ietf:rfc:3986", "value": "urn:oid:" + self.s.org_oid}
                ],
                "active": True,
                "name": self.s.org_name,
            },
        )

    def practitioner(self) -> None:
        a = self.s.author
        self.add(
            self.s.fact_uuid("practitioner:" + a.npi),
            {
                "resourceType": "Practitioner",
                "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": a.npi}],
                "name": [{"family": a.family, "given": [a.given]}],
            },
        )

    def encounter(self, dx_refs: list[str]) -> None:
        e = self.s.encounter
        cls = {"AMB": "ambulatory", "IMP": "inpatient encounter", "EMER": "emergency"}
        res: Json = {
            "resourceType": "Encounter",
            "status": "finished",
            "identifier": [
                {
                    "system": "urn:oid:" + self.s.org_oid + ".3",
                    "value": self.s.doc_uuid("encounter-number")[:8],
                }
            ],
            "class": {
                "system": codes.ACTCODE_URI,
                "code": e.type.act_class,
                "display": cls[e.type.act_class],
            },
            "type": [_cc(codes.SNOMED_URI, e.type.snomed)],
            "subject": {"reference": self.patient_ref},
            "participant": [{"individual": {"reference": self.author_ref}}],
            "period": {"start": self.dt(e.start), "end": self.dt(e.end)},
            "serviceProvider": {"reference": self.org_ref},
        }
        if dx_refs:
            res["diagnosis"] = [
                {"condition": {"reference": r}, "rank": n + 1} for n, r in enumerate(dx_refs)
            ]
        if self.s.inpatient:
            res["hospitalization"] = {
                "dischargeDisposition": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/discharge-disposition",
                            "code": "home",
                            "display": "Home",
                        }
                    ]
                }
            }
        self.add(self.s.doc_uuid("encounter"), res, "encounters")

    # -- clinical ------------------------------------------------------------------------------
    def condition(self, c: ConditionFact, encounter_dx: bool) -> str:
        precision = "month" if c.key in self.s.month_precision else "day"
        resolved = c.abated is not None and c.abated <= self.s.encounter.end.date()
        res: Json = {
            "resourceType": "Condition",
            "clinicalStatus": {
                "coding": [
                    {
                        "system": codes.CONDITION_CLINICAL_URI,
                        "code": "resolved" if resolved else "active",
                    }
                ]
            },
            "verificationStatus": {
                "coding": [{"system": codes.CONDITION_VER_URI, "code": "confirmed"}]
            },
            "category": [
                {
                    "coding": [
                        {
                            "system": codes.CONDITION_CATEGORY_URI,
                            "code": "encounter-diagnosis" if encounter_dx else "problem-list-item",
                            "display": "Encounter Diagnosis"
                            if encounter_dx
                            else "Problem List Item",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [
                    _coding(codes.SNOMED_URI, c.condition.snomed),
                    _coding(codes.ICD10CM_URI, c.condition.icd10),
                ],
                "text": c.condition.label,
            },
            "subject": {"reference": self.patient_ref},
            "onsetDateTime": fhir_date(c.onset, precision),
            "recordedDate": fhir_date(c.onset + dt.timedelta(days=2)),
        }
        if resolved and c.abated is not None:
            res["abatementDateTime"] = fhir_date(c.abated)
        if encounter_dx:
            res["encounter"] = {"reference": self.encounter_ref}
        key = c.key + (":dx" if encounter_dx else "")
        return self.add(self.s.fact_uuid(key), res, "problems")

    def medication(self, m: MedicationFact, reason_ref: str | None) -> None:
        med = m.medication
        dosage: Json = {
            "text": med.sig,
            "timing": {
                "repeat": {
                    "frequency": med.frequency,
                    "period": med.period,
                    "periodUnit": med.period_unit,
                }
            },
            "asNeededBoolean": med.prn,
            "route": _cc(codes.SNOMED_URI, med.route.snomed),
            "doseAndRate": [
                {"doseQuantity": _qty(med.dose_value, med.dose_unit, med.dose_unit_text)}
            ],
        }
        active = m.end is None or m.end >= self.s.encounter.end.date()
        concept = _cc(codes.RXNORM_URI, med.rxnorm, med.label)
        ordered_here = self.s.encounter.start.date() - dt.timedelta(days=400) <= m.start
        if ordered_here:
            res: Json = {
                "resourceType": "MedicationRequest",
                "status": "active" if active else "completed",
                "intent": "order",
                "medicationCodeableConcept": concept,
                "subject": {"reference": self.patient_ref},
                "authoredOn": fhir_date(m.start),
                "requester": {"reference": self.author_ref},
                "dosageInstruction": [dosage],
            }
            if m.medication.course_days:
                res["dispenseRequest"] = {
                    "expectedSupplyDuration": {
                        "value": m.medication.course_days,
                        "unit": "days",
                        "system": codes.UCUM_URI,
                        "code": "d",
                    }
                }
        else:
            period: Json = {"start": fhir_date(m.start)}
            if m.end is not None:
                period["end"] = fhir_date(m.end)
            res = {
                "resourceType": "MedicationStatement",
                "status": "active" if active else "completed",
                "medicationCodeableConcept": concept,
                "subject": {"reference": self.patient_ref},
                "effectivePeriod": period,
                "dateAsserted": self.dt(self.s.encounter.start),
                "dosage": [dosage],
            }
        if reason_ref:
            res["reasonReference"] = [{"reference": reason_ref}]
        self.add(self.s.fact_uuid(m.key), res, "medications")

    def allergy(self, a: AllergyFact) -> None:
        system = codes.RXNORM_URI if a.allergen.system == "rxnorm" else codes.SNOMED_URI
        res: Json = {
            "resourceType": "AllergyIntolerance",
            "clinicalStatus": {
                "coding": [{"system": codes.ALLERGY_CLINICAL_URI, "code": "active"}]
            },
            "verificationStatus": {
                "coding": [{"system": codes.ALLERGY_VER_URI, "code": "confirmed"}]
            },
            "type": "allergy",
            "category": [a.allergen.category],
            "criticality": "high" if a.severity.fhir == "severe" else "low",
            "code": _cc(system, a.allergen.code),
            "patient": {"reference": self.patient_ref},
            "recordedDate": fhir_date(a.recorded),
            "reaction": [
                {"manifestation": [_cc(codes.SNOMED_URI, a.reaction)], "severity": a.severity.fhir}
            ],
        }
        if a.onset_year is not None:
            res["onsetDateTime"] = str(a.onset_year)
        self.add(self.s.fact_uuid(a.key), res, "allergies")

    def no_known_allergies(self) -> None:
        self.add(
            self.s.fact_uuid("nka"),
            {
                "resourceType": "AllergyIntolerance",
                "clinicalStatus": {
                    "coding": [{"system": codes.ALLERGY_CLINICAL_URI, "code": "active"}]
                },
                "verificationStatus": {
                    "coding": [{"system": codes.ALLERGY_VER_URI, "code": "confirmed"}]
                },
                "code": _cc(codes.SNOMED_URI, codes.NO_KNOWN_ALLERGY),
                "patient": {"reference": self.patient_ref},
                "recordedDate": self.dt(self.s.encounter.start),
            },
            "allergies",
        )

    def immunization(self, i: ImmunizationFact) -> None:
        v = i.vaccine
        coding = [_coding(codes.CVX_URI, v.cvx)]
        if v.ndc is not None:
            coding.append(_coding(codes.NDC_URI, v.ndc))
        res: Json = {
            "resourceType": "Immunization",
            "status": "not-done" if i.refusal else "completed",
            "vaccineCode": {"coding": coding, "text": v.cvx.display},
            "patient": {"reference": self.patient_ref},
            "occurrenceDateTime": self.dt(i.when),
            "primarySource": True,
        }
        if i.refusal is not None:
            res["statusReason"] = _cc(codes.ACTREASON_URI, i.refusal)
        else:
            res["lotNumber"] = i.lot
            res["route"] = {
                "coding": [
                    {"system": _ROUTE_URI, "code": "IM", "display": "Injection, intramuscular"}
                ]
            }
            res["doseQuantity"] = _qty(v.dose_ml, "mL")
        self.add(self.s.fact_uuid(i.key), res, "immunizations")

    def procedure(self, p: ProcedureFact) -> None:
        self.add(
            self.s.fact_uuid(p.key),
            {
                "resourceType": "Procedure",
                "status": "completed",
                "code": _cc(codes.SNOMED_URI, p.procedure.snomed, p.procedure.label),
                "subject": {"reference": self.patient_ref},
                "performedDateTime": self.dt(p.when),
            },
            "procedures",
        )

    def _lab_obs(self, panel: LabPanelFact, r: LabResultFact) -> str:
        t = r.test
        rng: Json = {}
        if t.low is not None:
            rng["low"] = _qty(t.low, t.unit)
        if t.high is not None:
            rng["high"] = _qty(t.high, t.unit)
        res: Json = {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": codes.OBS_CATEGORY_URI,
                            "code": "laboratory",
                            "display": "Laboratory",
                        }
                    ]
                }
            ],
            "code": _cc(codes.LOINC_URI, t.loinc, t.short),
            "subject": {"reference": self.patient_ref},
            "effectiveDateTime": self.dt(panel.when),
            "issued": self.dt(panel.when + dt.timedelta(hours=3)),
            "valueQuantity": _qty(r.value, t.unit),
            "interpretation": [
                {
                    "coding": [
                        {
                            "system": codes.INTERPRETATION_URI,
                            "code": r.interpretation,
                            "display": codes.INTERPRETATIONS[r.interpretation],
                        }
                    ]
                }
            ],
            "referenceRange": [rng],
        }
        return self.add(self.s.fact_uuid(f"{panel.key}:{t.loinc.code}"), res, "results")

    def lab_panel(self, panel: LabPanelFact) -> None:
        refs = [self._lab_obs(panel, r) for r in panel.results]
        if len(panel.results) > 1:
            self.add(
                self.s.fact_uuid(panel.key),
                {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": codes.V2_0074_URI,
                                    "code": "LAB",
                                    "display": "Laboratory",
                                }
                            ]
                        }
                    ],
                    "code": _cc(codes.LOINC_URI, panel.panel.loinc),
                    "subject": {"reference": self.patient_ref},
                    "effectiveDateTime": self.dt(panel.when),
                    "issued": self.dt(panel.when + dt.timedelta(hours=3)),
                    "result": [{"reference": r} for r in refs],
                },
                "results",
            )

    def _vital(self, key: str, code: codes.Code, extra: Json) -> None:
        res: Json = {
            "resourceType": "Observation",
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": codes.OBS_CATEGORY_URI,
                            "code": "vital-signs",
                            "display": "Vital Signs",
                        }
                    ]
                }
            ],
            "code": _cc(codes.LOINC_URI, code),
            "subject": {"reference": self.patient_ref},
            "encounter": {"reference": self.encounter_ref},
            "effectiveDateTime": self.dt(self.s.vitals.when),
        }
        res.update(extra)
        self.add(self.s.doc_uuid("vital", key), res, "vitals")

    def vitals(self) -> None:
        v = self.s.vitals
        m = v.measured
        if "bp" in m:
            self._vital(
                "bp",
                codes.BP_PANEL,
                {
                    "component": [
                        {
                            "code": _cc(codes.LOINC_URI, codes.SYSTOLIC),
                            "valueQuantity": _qty(v.systolic, "mm[Hg]", "mmHg"),
                        },
                        {
                            "code": _cc(codes.LOINC_URI, codes.DIASTOLIC),
                            "valueQuantity": _qty(v.diastolic, "mm[Hg]", "mmHg"),
                        },
                    ]
                },
            )
        simple = (
            ("hr", codes.HEART_RATE, v.heart_rate, "/min", "beats/minute"),
            ("rr", codes.RESP_RATE, v.resp_rate, "/min", "breaths/minute"),
            ("temp", codes.BODY_TEMP, v.temp_c, "Cel", "C"),
            ("weight", codes.BODY_WEIGHT, v.weight_kg, "kg", "kg"),
            ("height", codes.BODY_HEIGHT, v.height_cm, "cm", "cm"),
            ("bmi", codes.BMI, v.bmi, "kg/m2", "kg/m2"),
            ("spo2", codes.SPO2, v.spo2, "%", "%"),
        )
        for key, code, value, unit, human in simple:
            if key in m:
                self._vital(key, code, {"valueQuantity": _qty(value, unit, human)})

    def smoking(self) -> None:
        sm = self.s.smoking
        if sm is None:
            return
        self.add(
            self.s.fact_uuid(sm.key),
            {
                "resourceType": "Observation",
                "status": "final",
                "category": [
                    {
                        "coding": [
                            {
                                "system": codes.OBS_CATEGORY_URI,
                                "code": "social-history",
                                "display": "Social History",
                            }
                        ]
                    }
                ],
                "code": _cc(codes.LOINC_URI, codes.SMOKING_STATUS_LOINC),
                "subject": {"reference": self.patient_ref},
                "effectiveDateTime": fhir_date(sm.recorded),
                "valueCodeableConcept": _cc(codes.SNOMED_URI, sm.status),
            },
            "social",
        )


_SECTIONS = (
    ("problems", "Problem list", codes.Code("11450-4", "Problem list - Reported")),
    ("medications", "Medications", codes.Code("10160-0", "History of Medication use Narrative")),
    ("allergies", "Allergies", codes.Code("48765-2", "Allergies and adverse reactions Document")),
    ("immunizations", "Immunizations", codes.Code("11369-6", "History of Immunization Narrative")),
    (
        "results",
        "Results",
        codes.Code("30954-2", "Relevant diagnostic tests/laboratory data Narrative"),
    ),
    ("vitals", "Vital signs", codes.Code("8716-3", "Vital signs")),
    ("procedures", "Procedures", codes.Code("47519-4", "History of Procedures Document")),
    (
        "encounters",
        "Encounters",
        codes.Code("46240-8", "History of Hospitalizations+Outpatient visits Narrative"),
    ),
    ("social", "Social history", codes.Code("29762-2", "Social history Narrative")),
)


def _composition(b: _Builder, title: str) -> Json:
    sections = []
    for key, name, code in _SECTIONS:
        refs = b.sections.get(key)
        if not refs:
            continue
        sections.append(
            {
                "title": name,
                "code": _cc(codes.LOINC_URI, code),
                "text": {
                    "status": "generated",
                    "div": f'<div xmlns="http://www.w3.org/1999/xhtml"><p>{name}: '
                    f"{len(refs)} entries</p></div>",
                },
                "entry": [{"reference": r} for r in refs],
            }
        )
    return {
        "resourceType": "Composition",
        "id": b.s.doc_uuid("composition"),
        "status": "final",
        "type": _cc(codes.LOINC_URI, codes.DOC_CCD),
        "subject": {"reference": b.patient_ref},
        "encounter": {"reference": b.encounter_ref},
        "date": fhir_datetime(b.s.doc_date),
        "author": [{"reference": b.author_ref}],
        "title": title,
        "custodian": {"reference": b.org_ref},
        "section": sections,
    }


def render_bundle(snap: Snapshot, document: bool, title: str) -> bytes:
    b = _Builder(snap)
    b.patient()
    b.organization()
    b.practitioner()
    refs_by_key: dict[str, str] = {}
    dx_keys = {c.key for c in snap.encounter.reasons}
    for c in snap.problems:
        refs_by_key[c.key] = b.condition(c, encounter_dx=c.key.startswith("adm:"))
    dx_refs = [refs_by_key[k] for k in dx_keys if k in refs_by_key]
    b.encounter(sorted(dx_refs))
    for m in snap.medications:
        b.medication(m, refs_by_key.get(m.reason or ""))
    if snap.allergies:
        for a in snap.allergies:
            b.allergy(a)
    elif not snap.allergies_unknown:
        b.no_known_allergies()
    for i in snap.immunizations:
        b.immunization(i)
    for p in snap.procedures:
        b.procedure(p)
    for panel in snap.labs:
        b.lab_panel(panel)
    b.vitals()
    b.smoking()
    stamp = fhir_datetime(snap.doc_date)
    bundle: Json = {
        "resourceType": "Bundle",
        "id": snap.doc_uuid("bundle"),
        "meta": {"lastUpdated": stamp},
    }
    if document:
        comp = _composition(b, title)
        bundle.update(
            {
                "identifier": {
                    "system": "urn:ietf:rfc:3986",
                    "value": "urn:uuid:" + snap.doc_uuid("bundle-identifier"),
                },
                "type": "document",
                "timestamp": stamp,
                "entry": [{"fullUrl": "urn:uuid:" + comp["id"], "resource": comp}, *b.entries],
            }
        )
    else:
        bundle.update({"type": "collection", "timestamp": stamp, "entry": b.entries})
    return orjson.dumps(bundle)
