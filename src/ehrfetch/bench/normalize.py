"""``ehrfetch bench normalize``: how fast documents become the participant's resources.

Two inputs, each run through the function acquisition calls (``acquire._normalize``), with
the linked patient's id so the patient check runs as it does for a fetched document:

* FHIR Bundles: synthetic ones of the kind the mock network serves (about 15 entries:
  Patient, Organization, Practitioner, Encounter, Conditions, medications, an allergy,
  an immunization, a procedure, lab Observations with reference ranges, vital signs with
  components), half ``collection`` Bundles with ``urn:uuid`` references, half
  ``searchset`` Bundles with absolute fullUrls, relative references, ``meta`` and
  narratives. Every document differs (ids, codes, dates, values). ehrfetch never imports
  the mock network, whose generator has no command that writes documents out, so they
  are generated here; ``--fhir-dir`` reads a folder of Bundles (``*.json``) instead.
* C-CDA: every ``*.xml`` under a folder (the HL7 examples in ``../shared/ccda-examples``),
  in two groups: whole ClinicalDocuments, read as they are, and section fragments,
  wrapped as ``ehrfetch bench ccda`` wraps them plus a ``recordTarget``, so the patient
  check runs for them too.

For each group: documents/s, resources/s and MB/s (MB = 10^6 bytes of input) by the wall
clock; documents and resources per second of the process's CPU time (what a core gives,
steadier than the wall clock on a shared machine); the median per-document CPU time; and
the same bytes through the parser alone — ``orjson.loads`` for Bundles,
``lxml.etree.fromstring`` with ehrfetch's hardened parser and with lxml's default one for
C-CDA — with the ratio normalize/parse (0.02: normalizing costs 50 parses).
``validation_share`` is the time ``model_validate`` alone takes over the resources
produced, as a share of the normalization time.

Single process. Each measurement has one warm-up pass over the group (fhir.resources
imports its model classes lazily, on first use); then each timed round is one pass of
every measurement over the whole group, by count (``rounds``) or until a time budget per
group is spent (``seconds``, at least three rounds). Figures are from the median pass.
Normalization validates each distinct resource once per process (``validation.py``); the
cache is emptied before every timed pass, so a pass is timed as the first sight of its
documents, not as a replay the cache answers.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from lxml import etree

from ehrfetch.bench.ccda_coverage import as_document
from ehrfetch.errors import DocumentError
from ehrfetch.fhir_models import model_class
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.fhir_bundle import NormalizedDocument, normalize_bundle
from ehrfetch.normalize.validation import clear_validation_cache
from ehrfetch.normalize.xml import parse_xml

RESEARCH_ID = "BENCH0001"
FRAGMENT_PATIENT_ID = "bench-patient"
DEFAULT_SECONDS = 10.0
_MIN_ROUNDS_BY_TIME = 3
"""With a time budget, at least this many timed passes, so there is a median to take."""

Normalizer = Callable[..., NormalizedDocument]


@dataclass(frozen=True, slots=True)
class BenchInput:
    body: bytes
    patient_id: str | None
    """The site's patient id the document is checked against (None: no check)."""


@dataclass(frozen=True)
class Budget:
    """Timed rounds per input group: exactly ``rounds``, or until ``seconds`` are spent."""

    rounds: int | None = None
    seconds: float | None = None

    def done(self, rounds: int, elapsed: float) -> bool:
        if self.rounds is not None:
            return rounds >= self.rounds
        return rounds >= _MIN_ROUNDS_BY_TIME and elapsed >= self.budget_seconds

    @property
    def budget_seconds(self) -> float:
        return self.seconds if self.seconds is not None else DEFAULT_SECONDS

    def describe(self) -> str:
        if self.rounds is not None:
            return f"{self.rounds} timed rounds per group"
        return f"{self.budget_seconds:g} s per group"


@dataclass(frozen=True)
class GroupFigures:
    documents: int
    resources: int
    """Resources one pass produces (each validated, as acquisition validates them)."""
    megabytes: float
    rounds: int
    """Timed passes of normalization (the warm-up pass not counted)."""
    docs_per_s: float
    resources_per_s: float
    mb_per_s: float
    docs_per_cpu_s: float
    resources_per_cpu_s: float
    """Per second of this process's CPU time: what a core gives when nothing else runs."""
    cpu_ms_per_doc_median: float
    parser: str
    parse_docs_per_s: float
    ratio_to_parse: float
    validate_resources_per_s: float
    validation_share: float
    """``model_validate`` alone over the resources produced / the whole normalization."""
    plain_parser: str | None = None
    plain_parse_docs_per_s: float | None = None
    ratio_to_plain_parse: float | None = None


@dataclass(frozen=True)
class NormalizeBenchResult:
    fhir: GroupFigures
    ccda_documents: GroupFigures
    ccda_sections: GroupFigures
    fhir_source: str
    ccda_dir: str
    budget: str
    load_average_at_start: str
    cpu_over_wall: float
    """This process's CPU time over the bench's wall time: below ~0.95, other work on the
    machine took cores from it, and the wall-clock rates are low by about that much."""
    python: str
    machine: str


def as_dict(result: NormalizeBenchResult) -> dict[str, Any]:
    return asdict(result)


def flat(figures: dict[str, Any]) -> dict[str, Any]:
    """``{"fhir": {"docs_per_s": …}}`` as ``{"fhir.docs_per_s": …}``, for a terminal table."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if v is not None})
        else:
            out[key] = value
    return out


def run_normalize_bench(
    ccda_dir: Path,
    *,
    budget: Budget,
    bundles: int = 200,
    fhir_dir: Path | None = None,
) -> NormalizeBenchResult:
    """Measure both formats; ``bundles`` synthetic Bundles unless ``fhir_dir`` is given."""
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    fhir_inputs = read_bundles(fhir_dir) if fhir_dir is not None else synthetic_bundles(bundles)
    documents, sections = ccda_inputs(ccda_dir)
    if not fhir_inputs or not documents or not sections:
        raise ValueError("nothing to measure: a group of inputs is empty")
    fhir = measure_group(fhir_inputs, normalize_bundle, "orjson.loads", _orjson_parse, budget)
    hardened = "lxml.etree.fromstring (ehrfetch's hardened parser)"
    plain = ("lxml.etree.fromstring (default parser)", _plain_parse)
    ccda_docs = measure_group(documents, normalize_ccda, hardened, _hardened_parse, budget, plain)
    ccda_sec = measure_group(sections, normalize_ccda, hardened, _hardened_parse, budget, plain)
    cpu_over_wall = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    return NormalizeBenchResult(
        fhir=fhir,
        ccda_documents=ccda_docs,
        ccda_sections=ccda_sec,
        fhir_source=str(fhir_dir) if fhir_dir is not None else f"{bundles} synthetic Bundles",
        ccda_dir=str(ccda_dir),
        budget=budget.describe(),
        load_average_at_start=load,
        cpu_over_wall=round(cpu_over_wall, 3),
        python=platform.python_version(),
        machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
    )


def measure_group(
    inputs: Sequence[BenchInput],
    normalize: Normalizer,
    parser: str,
    parse: Callable[[bytes], object],
    budget: Budget,
    plain: tuple[str, Callable[[bytes], object]] | None = None,
) -> GroupFigures:
    """Normalize, parse and validate ``inputs`` with ``budget``; the group's figures."""
    bodies = [item.body for item in inputs]

    def normalize_one(item: BenchInput) -> NormalizedDocument:
        return normalize(item.body, research_id=RESEARCH_ID, patient_id=item.patient_id)

    # The warm-up pass also collects what one pass produces (the same every pass).
    produced = [r.body for item in inputs for r in normalize_one(item).resources]
    baselines: list[tuple[Sequence[Any], Callable[[Any], object]]] = [
        (bodies, parse),
        (produced, _model_validate),
    ]
    if plain is not None:
        baselines.append((bodies, plain[1]))
    for items, work in baselines:
        for item in items:
            work(item)

    # One pass of each measurement per round, not all of one then all of the next: on a
    # shared machine the load drifts, and the ratios should compare like with like.
    passes: list[float] = []
    cpu_passes: list[float] = []
    cpu: list[float] = []
    others: list[list[float]] = [[] for _ in baselines]
    started = time.perf_counter()
    while not budget.done(len(passes), time.perf_counter() - started):
        # Every pass re-reads the same documents for the same participant, so a warm
        # validation cache would skip all validation after the first: each pass starts
        # cold, as a participant's first documents do (repeats *within* a pass still hit).
        clear_validation_cache()
        before, pass_cpu = time.perf_counter(), time.process_time()
        for item in inputs:
            cpu_before = time.process_time()
            normalize_one(item)
            cpu.append(time.process_time() - cpu_before)
        passes.append(time.perf_counter() - before)
        cpu_passes.append(time.process_time() - pass_cpu)
        for (items, work), walls in zip(baselines, others, strict=True):
            before = time.perf_counter()
            for item in items:  # no per-item clock: on a ~50 µs parse its cost would show
                work(item)
            walls.append(time.perf_counter() - before)

    wall = statistics.median(passes)
    cpu_wall = statistics.median(cpu_passes)
    parse_wall, validate_wall, *plain_walls = (statistics.median(w) for w in others)
    size = sum(len(b) for b in bodies) / 1e6
    plain_figures: dict[str, Any] = {}
    if plain is not None:
        plain_figures = {
            "plain_parser": plain[0],
            "plain_parse_docs_per_s": _round(len(bodies) / plain_walls[0]),
            "ratio_to_plain_parse": round(plain_walls[0] / wall, 5),
        }
    return GroupFigures(
        documents=len(inputs),
        resources=len(produced),
        megabytes=round(size, 3),
        rounds=len(passes),
        docs_per_s=_round(len(inputs) / wall),
        resources_per_s=_round(len(produced) / wall),
        mb_per_s=round(size / wall, 3),
        docs_per_cpu_s=_round(len(inputs) / cpu_wall),
        resources_per_cpu_s=_round(len(produced) / cpu_wall),
        cpu_ms_per_doc_median=round(statistics.median(cpu) * 1000, 3),
        parser=parser,
        parse_docs_per_s=_round(len(bodies) / parse_wall),
        # docs/s of normalize over docs/s of parse is the inverse ratio of their times.
        ratio_to_parse=round(parse_wall / wall, 5),
        validate_resources_per_s=_round(len(produced) / validate_wall) if produced else 0.0,
        validation_share=round(validate_wall / wall, 3) if produced else 0.0,
        **plain_figures,
    )


def _round(value: float) -> float:
    return round(value, 1)


def _orjson_parse(body: bytes) -> object:
    return orjson.loads(body)


def _hardened_parse(body: bytes) -> object:
    return parse_xml(body)


_PLAIN_PARSER = etree.XMLParser()


def _plain_parse(body: bytes) -> object:
    return etree.fromstring(body, _PLAIN_PARSER)


def _model_validate(body: dict[str, Any]) -> object:
    return model_class(body["resourceType"]).model_validate(body)


# --- inputs -------------------------------------------------------------------------


def ccda_inputs(folder: Path) -> tuple[list[BenchInput], list[BenchInput]]:
    """(whole documents, wrapped section fragments) under ``folder``, each with the
    patient id its check is run against. Files the reader refuses are left out."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
    documents: list[BenchInput] = []
    sections: list[BenchInput] = []
    for path in paths:
        raw = path.read_bytes()
        body = as_document(raw)
        if body is raw:
            item = BenchInput(body, _record_target_id(body))
            group = documents
        else:
            # The envelope's first <component> opens its body: the recordTarget goes before.
            body = body.replace(b"<component>", _FRAGMENT_RECORD_TARGET + b"<component>", 1)
            item = BenchInput(body, FRAGMENT_PATIENT_ID)
            group = sections
        try:
            normalize_ccda(item.body, research_id=RESEARCH_ID, patient_id=item.patient_id)
        except DocumentError:
            continue  # refused documents are not normalized: nothing to time
        group.append(item)
    return documents, sections


_FRAGMENT_RECORD_TARGET = (
    b"<recordTarget><patientRole><id root='2.16.840.1.113883.19.5' extension='"
    + FRAGMENT_PATIENT_ID.encode()
    + b"'/></patientRole></recordTarget>"
)


def _record_target_id(body: bytes) -> str | None:
    try:
        root = parse_xml(body)
    except DocumentError:
        return None
    ids = root.xpath(
        "cda:recordTarget/cda:patientRole/cda:id/@extension", namespaces={"cda": "urn:hl7-org:v3"}
    )
    return str(ids[0]).strip() if isinstance(ids, list) and ids else None


def read_bundles(folder: Path) -> list[BenchInput]:
    """Every ``*.json`` Bundle under ``folder``, checked against its own first Patient."""
    inputs: list[BenchInput] = []
    for path in sorted(folder.rglob("*.json")):
        body = path.read_bytes()
        bundle = orjson.loads(body)
        patient_id = next(
            (
                e["resource"].get("id")
                for e in bundle.get("entry") or []
                if isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == "Patient"
            ),
            None,
        )
        inputs.append(BenchInput(body, patient_id))
    return inputs


# Code pools: plausible, varied content, so no two documents are alike and the dedup,
# canonicalization and validation work is what a real Bundle costs.
_SNOMED = "http://snomed.info/sct"
_ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
_LOINC = "http://loinc.org"
_RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
_CVX = "http://hl7.org/fhir/sid/cvx"
_UCUM = "http://unitsofmeasure.org"
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
_CONDITIONS = [
    ("44054006", "E11.9", "Type 2 diabetes mellitus"),
    ("38341003", "I10", "Essential hypertension"),
    ("195967001", "J45.909", "Asthma"),
    ("13645005", "J44.9", "Chronic obstructive pulmonary disease"),
    ("49436004", "I48.91", "Atrial fibrillation"),
    ("35489007", "F32.9", "Depressive disorder"),
    ("55822004", "E78.5", "Hyperlipidemia"),
    ("709044004", "N18.9", "Chronic kidney disease"),
    ("68566005", "N39.0", "Urinary tract infection"),
    ("40930008", "E03.9", "Hypothyroidism"),
]
_MEDICATIONS = [
    ("314076", "lisinopril 10 MG Oral Tablet", 1, "1 tablet by mouth daily"),
    ("860975", "metformin 500 MG Extended Release Oral Tablet", 2, "1 tablet twice daily"),
    ("617310", "atorvastatin 20 MG Oral Tablet", 1, "1 tablet at bedtime"),
    ("197361", "amlodipine 5 MG Oral Tablet", 1, "1 tablet by mouth daily"),
    ("966247", "levothyroxine 0.05 MG Oral Tablet", 1, "1 tablet before breakfast"),
    ("312961", "simvastatin 20 MG Oral Tablet", 1, "1 tablet in the evening"),
]
_ALLERGENS = [
    (_RXNORM, "7980", "Penicillin G", "medication"),
    (_RXNORM, "2670", "Codeine", "medication"),
    (_SNOMED, "91935009", "Allergy to peanuts", "food"),
    (_SNOMED, "300916003", "Latex allergy", "environment"),
]
_REACTIONS = [("247472004", "Hives"), ("39579001", "Anaphylaxis"), ("271807003", "Rash")]
_VACCINES = [
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("208", "SARS-COV-2 (COVID-19) vaccine, mRNA, 30 mcg/0.3 mL"),
    ("115", "Tdap"),
    ("33", "pneumococcal polysaccharide PPV23"),
    ("187", "zoster vaccine recombinant"),
]
_PROCEDURES = [
    ("73761001", "Colonoscopy"),
    ("80146002", "Appendectomy"),
    ("71651007", "Mammography"),
    ("29303009", "Electrocardiographic procedure"),
]
_LABS = [
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70.0, 99.0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136.0, 145.0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 16.0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6),
]
_VITALS = [
    ("8867-4", "Heart rate", "/min", 55.0, 100.0),
    ("29463-7", "Body weight", "kg", 50.0, 110.0),
    ("8310-5", "Body temperature", "Cel", 36.1, 37.9),
    ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%", 92.0, 100.0),
]


def synthetic_bundles(n: int, seed: int = 20261129) -> list[BenchInput]:
    """``n`` Bundles, each about a different patient, none identical."""
    rng = random.Random(seed)
    return [_bundle(rng, k) for k in range(n)]


def _bundle(rng: random.Random, k: int) -> BenchInput:
    searchset = k % 2 == 1
    base = f"https://ehr{k % 7}.example.org/fhir"
    patient_id = f"mrn{k:06d}"
    visit = datetime(2018, 1, 1, 8, tzinfo=UTC) + timedelta(
        days=rng.randrange(2500), minutes=15 * rng.randrange(40)
    )
    b = _BundleBuilder(rng, searchset, base, visit)
    b.add("Patient", _patient(rng, patient_id, k), resource_id=patient_id)
    org = b.add("Organization", {"name": f"Clinic {k % 7}", "active": True})
    doc = b.add(
        "Practitioner",
        {
            "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": _npi(rng)}],
            "name": [{"family": rng.choice(["Ng", "Okafor", "Silva"]), "given": ["Dana"]}],
        },
    )
    conditions = [b.add("Condition", _condition(rng, b)) for _ in range(rng.randint(2, 3))]
    b.add("Encounter", _encounter(rng, b, conditions, doc, org))
    for _ in range(rng.randint(1, 2)):
        b.add("MedicationStatement", _medication(rng, b, rng.choice(conditions)))
    b.add("AllergyIntolerance", _allergy(rng, b))
    b.add("Immunization", _immunization(rng, b))
    if rng.random() < 0.6:
        b.add("Procedure", _procedure(rng, b, doc))
    for code in rng.sample(_LABS, 3):
        b.add("Observation", _lab(rng, b, code))
    b.add("Observation", _blood_pressure(rng, b))
    for code in rng.sample(_VITALS, 2):
        b.add("Observation", _vital(rng, b, code))
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": b.uuid(),
        "meta": {"lastUpdated": b.instant(visit + timedelta(days=1))},
        "type": "searchset" if searchset else "collection",
        "entry": b.entries,
    }
    if searchset:
        bundle["total"] = len(b.entries)
        bundle["link"] = [{"relation": "self", "url": f"{base}/Patient/{patient_id}/$everything"}]
    return BenchInput(orjson.dumps(bundle), patient_id)


class _BundleBuilder:
    """Entries and references in one of the two styles sites use."""

    def __init__(self, rng: random.Random, searchset: bool, base: str, visit: datetime) -> None:
        self.rng = rng
        self.searchset = searchset
        self.base = base
        self.visit = visit
        self.entries: list[dict[str, Any]] = []
        self.patient_ref = ""
        self.encounter_ref = ""

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def instant(self, when: datetime) -> str:
        return when.isoformat().replace("+00:00", "Z")

    def day(self, before_visit_days: int) -> str:
        return (self.visit.date() - timedelta(days=before_visit_days)).isoformat()

    def add(self, kind: str, body: dict[str, Any], resource_id: str | None = None) -> str:
        """Add a resource; returns how other resources refer to it."""
        rid = resource_id or (str(self.rng.randrange(10**6, 10**8)) if self.searchset else "")
        rid = rid or self.uuid()
        resource = {"resourceType": kind, "id": rid, **body}
        if self.searchset:
            # What a FHIR server adds and normalize strips: version metadata and narrative.
            resource["meta"] = {"versionId": "1", "lastUpdated": self.instant(self.visit)}
            resource["text"] = {
                "status": "generated",
                "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{kind} {rid}</div>',
            }
            entry = {"fullUrl": f"{self.base}/{kind}/{rid}", "resource": resource}
            entry["search"] = {"mode": "match" if kind != "Patient" else "include"}
            reference = f"{kind}/{rid}"
        else:
            entry = {"fullUrl": f"urn:uuid:{rid}", "resource": resource}
            reference = f"urn:uuid:{rid}"
        self.entries.append(entry)
        if kind == "Patient":
            self.patient_ref = reference
        elif kind == "Encounter":
            self.encounter_ref = reference
        return reference


def _cc(system: str, code: str, display: str, text: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"coding": [{"system": system, "code": code, "display": display}]}
    if text:
        out["text"] = text
    return out


def _qty(value: float, unit: str) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": _UCUM, "code": unit}


def _npi(rng: random.Random) -> str:
    return str(rng.randrange(10**9, 2 * 10**9))


def _patient(rng: random.Random, patient_id: str, k: int) -> dict[str, Any]:
    born = date(1935, 1, 1) + timedelta(days=rng.randrange(25000))
    return {
        "identifier": [
            {
                "use": "usual",
                "type": _cc(_TERMINOLOGY + "v2-0203", "MR", "Medical record number"),
                "system": f"urn:oid:2.16.840.1.113883.19.{k % 7}",
                "value": patient_id,
            }
        ],
        "name": [{"use": "official", "family": f"Family{k}", "given": [f"Given{k}"]}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": born.isoformat(),
    }


def _condition(rng: random.Random, b: _BundleBuilder) -> dict[str, Any]:
    snomed, icd, label = rng.choice(_CONDITIONS)
    return {
        "clinicalStatus": _cc(_TERMINOLOGY + "condition-clinical", "active", "Active"),
        "verificationStatus": _cc(_TERMINOLOGY + "condition-ver-status", "confirmed", "Confirmed"),
        "category": [
            _cc(_TERMINOLOGY + "condition-category", "problem-list-item", "Problem List Item")
        ],
        "code": {
            "coding": [
                {"system": _SNOMED, "code": snomed, "display": label},
                {"system": _ICD10, "code": icd, "display": label},
            ],
            "text": label,
        },
        "subject": {"reference": b.patient_ref},
        "onsetDateTime": b.day(rng.randrange(30, 4000)),
        "recordedDate": b.day(rng.randrange(0, 30)),
    }


def _encounter(
    rng: random.Random, b: _BundleBuilder, conditions: list[str], doc: str, org: str
) -> dict[str, Any]:
    return {
        "status": "finished",
        "class": {"system": _TERMINOLOGY + "v3-ActCode", "code": "AMB", "display": "ambulatory"},
        "type": [_cc(_SNOMED, "185349003", "Encounter for check up")],
        "subject": {"reference": b.patient_ref},
        "participant": [{"individual": {"reference": doc}}],
        "period": {
            "start": b.instant(b.visit),
            "end": b.instant(b.visit + timedelta(minutes=rng.choice([20, 30, 45]))),
        },
        "diagnosis": [
            {"condition": {"reference": c}, "rank": n + 1} for n, c in enumerate(conditions)
        ],
        "serviceProvider": {"reference": org},
    }


def _medication(rng: random.Random, b: _BundleBuilder, reason: str) -> dict[str, Any]:
    code, label, per_day, sig = rng.choice(_MEDICATIONS)
    return {
        "status": "active",
        "medicationCodeableConcept": _cc(_RXNORM, code, label, label),
        "subject": {"reference": b.patient_ref},
        "effectivePeriod": {"start": b.day(rng.randrange(10, 2000))},
        "dateAsserted": b.instant(b.visit),
        "reasonReference": [{"reference": reason}],
        "dosage": [
            {
                "text": sig,
                "timing": {"repeat": {"frequency": per_day, "period": 1, "periodUnit": "d"}},
                "route": _cc(_SNOMED, "26643006", "Oral route"),
                "doseAndRate": [{"doseQuantity": {"value": 1, "unit": "tablet"}}],
            }
        ],
    }


def _allergy(rng: random.Random, b: _BundleBuilder) -> dict[str, Any]:
    system, code, label, category = rng.choice(_ALLERGENS)
    reaction, reaction_label = rng.choice(_REACTIONS)
    return {
        "clinicalStatus": _cc(_TERMINOLOGY + "allergyintolerance-clinical", "active", "Active"),
        "verificationStatus": _cc(
            _TERMINOLOGY + "allergyintolerance-verification", "confirmed", "Confirmed"
        ),
        "type": "allergy",
        "category": [category],
        "criticality": rng.choice(["low", "high"]),
        "code": _cc(system, code, label),
        "patient": {"reference": b.patient_ref},
        "recordedDate": b.day(rng.randrange(100, 5000)),
        "reaction": [
            {
                "manifestation": [_cc(_SNOMED, reaction, reaction_label)],
                "severity": rng.choice(["mild", "moderate", "severe"]),
            }
        ],
    }


def _immunization(rng: random.Random, b: _BundleBuilder) -> dict[str, Any]:
    cvx, label = rng.choice(_VACCINES)
    return {
        "status": "completed",
        "vaccineCode": _cc(_CVX, cvx, label, label),
        "patient": {"reference": b.patient_ref},
        "encounter": {"reference": b.encounter_ref},
        "occurrenceDateTime": b.day(rng.randrange(0, 1500)),
        "primarySource": True,
        "lotNumber": f"L{rng.randrange(10**5, 10**6)}",
        "route": _cc(_TERMINOLOGY + "v3-RouteOfAdministration", "IM", "Injection, intramuscular"),
        "doseQuantity": _qty(rng.choice([0.3, 0.5]), "mL"),
    }


def _procedure(rng: random.Random, b: _BundleBuilder, doc: str) -> dict[str, Any]:
    code, label = rng.choice(_PROCEDURES)
    return {
        "status": "completed",
        "code": _cc(_SNOMED, code, label, label),
        "subject": {"reference": b.patient_ref},
        "performedDateTime": b.day(rng.randrange(0, 3000)),
        "performer": [{"actor": {"reference": doc}}],
    }


def _observation(
    b: _BundleBuilder, category: str, code: dict[str, Any], when: datetime
) -> dict[str, Any]:
    return {
        "status": "final",
        "category": [
            _cc(_TERMINOLOGY + "observation-category", category, category.replace("-", " ").title())
        ],
        "code": code,
        "subject": {"reference": b.patient_ref},
        "encounter": {"reference": b.encounter_ref},
        "effectiveDateTime": b.instant(when),
    }


def _lab(
    rng: random.Random, b: _BundleBuilder, lab: tuple[str, str, str, float, float]
) -> dict[str, Any]:
    loinc, label, unit, low, high = lab
    value = round(rng.uniform(low * 0.8, high * 1.2), 1)
    flag = "L" if value < low else ("H" if value > high else "N")
    when = b.visit + timedelta(minutes=rng.randrange(5, 60))
    res = _observation(b, "laboratory", _cc(_LOINC, loinc, label, label), when)
    res["issued"] = b.instant(when + timedelta(hours=3))
    res["valueQuantity"] = _qty(value, unit)
    res["interpretation"] = [_cc(_TERMINOLOGY + "v3-ObservationInterpretation", flag, flag)]
    res["referenceRange"] = [{"low": _qty(low, unit), "high": _qty(high, unit)}]
    return res


def _blood_pressure(rng: random.Random, b: _BundleBuilder) -> dict[str, Any]:
    res = _observation(b, "vital-signs", _cc(_LOINC, "85354-9", "Blood pressure panel"), b.visit)
    res["component"] = [
        {
            "code": _cc(_LOINC, "8480-6", "Systolic blood pressure"),
            "valueQuantity": _qty(rng.randrange(100, 170), "mm[Hg]"),
        },
        {
            "code": _cc(_LOINC, "8462-4", "Diastolic blood pressure"),
            "valueQuantity": _qty(rng.randrange(60, 100), "mm[Hg]"),
        },
    ]
    return res


def _vital(
    rng: random.Random, b: _BundleBuilder, vital: tuple[str, str, str, float, float]
) -> dict[str, Any]:
    loinc, label, unit, low, high = vital
    res = _observation(b, "vital-signs", _cc(_LOINC, loinc, label), b.visit)
    res["valueQuantity"] = _qty(round(rng.uniform(low, high), 1), unit)
    return res
