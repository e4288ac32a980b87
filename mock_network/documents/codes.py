"""A small curated table of real codes.

Every code here is a real code with its real display name (SNOMED CT preferred terms, ICD-10-CM
short titles, LOINC long common names, RxNorm normalized names, CVX short descriptions). The
table is deliberately small: a code we were not sure of was left out rather than guessed,
because ehrfetch's normalizer is judged on these documents and a wrong code teaches it wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

# Code system OIDs (C-CDA) and canonical URIs (FHIR).
SNOMED_OID = "2.16.840.1.113883.6.96"
LOINC_OID = "2.16.840.1.113883.6.1"
RXNORM_OID = "2.16.840.1.113883.6.88"
CVX_OID = "2.16.840.1.113883.12.292"
ICD10CM_OID = "2.16.840.1.113883.6.90"
NDC_OID = "2.16.840.1.113883.6.69"
CPT_OID = "2.16.840.1.113883.6.12"
NCI_OID = "2.16.840.1.113883.3.26.1.1"
ACTCODE_OID = "2.16.840.1.113883.5.4"
ACTCLASS_CONCERN_OID = "2.16.840.1.113883.5.6"
INTERPRETATION_OID = "2.16.840.1.113883.5.83"
NO_IMMUNIZATION_REASON_OID = "2.16.840.1.113883.5.8"
GENDER_OID = "2.16.840.1.113883.5.1"
CONFIDENTIALITY_OID = "2.16.840.1.113883.5.25"
NUCC_OID = "2.16.840.1.113883.6.101"
NPI_OID = "2.16.840.1.113883.4.6"
HSLOC_OID = "2.16.840.1.113883.6.259"
DISCHARGE_DISPOSITION_OID = "2.16.840.1.113883.12.112"

SNOMED_URI = "http://snomed.info/sct"
LOINC_URI = "http://loinc.org"
RXNORM_URI = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX_URI = "http://hl7.org/fhir/sid/cvx"
ICD10CM_URI = "http://hl7.org/fhir/sid/icd-10-cm"
NDC_URI = "http://hl7.org/fhir/sid/ndc"
UCUM_URI = "http://unitsofmeasure.org"
CPT_URI = "http://www.ama-assn.org/go/cpt"
ACTCODE_URI = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACTREASON_URI = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
INTERPRETATION_URI = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
OBS_CATEGORY_URI = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CLINICAL_URI = "http://terminology.hl7.org/CodeSystem/condition-clinical"
CONDITION_VER_URI = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDITION_CATEGORY_URI = "http://terminology.hl7.org/CodeSystem/condition-category"
ALLERGY_CLINICAL_URI = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical"
ALLERGY_VER_URI = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"
V2_0074_URI = "http://terminology.hl7.org/CodeSystem/v2-0074"
V2_0203_URI = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(frozen=True, slots=True)
class Code:
    code: str
    display: str


@dataclass(frozen=True, slots=True)
class Condition:
    key: str
    snomed: Code
    icd10: Code
    chronic: bool
    min_age: int
    label: str  # what a clinician writes in a note


@dataclass(frozen=True, slots=True)
class Route:
    nci: Code
    snomed: Code


@dataclass(frozen=True, slots=True)
class Medication:
    key: str
    rxnorm: Code
    label: str
    dose_value: float
    dose_unit: str  # UCUM (annotations for countable forms, as real systems send them)
    dose_unit_text: str
    frequency: int  # administrations per period
    period: float
    period_unit: str  # UCUM time unit: h | d
    prn: bool
    route: Route
    sig: str
    indications: tuple[str, ...]  # Condition keys
    course_days: int | None  # None: chronic


@dataclass(frozen=True, slots=True)
class LabTest:
    loinc: Code
    unit: str  # UCUM
    low: float | None
    high: float | None
    decimals: int
    short: str


@dataclass(frozen=True, slots=True)
class LabPanel:
    key: str
    loinc: Code
    tests: tuple[LabTest, ...]


@dataclass(frozen=True, slots=True)
class Vaccine:
    key: str
    cvx: Code
    ndc: Code | None
    route: Route
    dose_ml: float


@dataclass(frozen=True, slots=True)
class Allergen:
    key: str
    code: Code
    system: str  # "rxnorm" | "snomed"
    category: str  # FHIR AllergyIntolerance.category
    allergy_type: Code  # SNOMED value of the C-CDA Allergy Intolerance Observation


@dataclass(frozen=True, slots=True)
class Procedure:
    key: str
    snomed: Code
    label: str


@dataclass(frozen=True, slots=True)
class EncounterType:
    key: str
    snomed: Code
    act_class: str  # v3 ActCode: AMB | IMP | EMER
    cpt: Code | None


@dataclass(frozen=True, slots=True)
class Severity:
    snomed: Code
    fhir: str


# --- routes -------------------------------------------------------------------------------------
ORAL = Route(Code("C38288", "Oral Route of Administration"), Code("26643006", "Oral route"))
INHALED = Route(
    Code("C38216", "Inhalation Route of Administration"),
    Code("447694001", "Respiratory tract route"),
)
INTRAMUSCULAR = Route(
    Code("C28161", "Intramuscular Route of Administration"),
    Code("78421000", "Intramuscular route"),
)


# --- conditions ---------------------------------------------------------------------------------
def _c(
    key: str, sct: str, sct_d: str, icd: str, icd_d: str, chronic: bool, min_age: int, label: str
) -> Condition:
    return Condition(key, Code(sct, sct_d), Code(icd, icd_d), chronic, min_age, label)


CONDITIONS: dict[str, Condition] = {
    c.key: c
    for c in (
        _c(
            "htn",
            "59621000",
            "Essential hypertension",
            "I10",
            "Essential (primary) hypertension",
            True,
            25,
            "Hypertension",
        ),
        _c(
            "t2dm",
            "44054006",
            "Diabetes mellitus type 2",
            "E11.9",
            "Type 2 diabetes mellitus without complications",
            True,
            30,
            "Type 2 diabetes",
        ),
        _c(
            "prediabetes",
            "714628002",
            "Prediabetes",
            "R73.03",
            "Prediabetes",
            True,
            25,
            "Prediabetes",
        ),
        _c(
            "hld",
            "55822004",
            "Hyperlipidemia",
            "E78.5",
            "Hyperlipidemia, unspecified",
            True,
            25,
            "Hyperlipidemia",
        ),
        _c(
            "asthma",
            "195967001",
            "Asthma",
            "J45.909",
            "Unspecified asthma, uncomplicated",
            True,
            3,
            "Asthma",
        ),
        _c(
            "mdd",
            "370143000",
            "Major depressive disorder",
            "F32.9",
            "Major depressive disorder, single episode, unspecified",
            True,
            14,
            "Depression",
        ),
        _c(
            "gad",
            "21897009",
            "Generalized anxiety disorder",
            "F41.1",
            "Generalized anxiety disorder",
            True,
            14,
            "Anxiety",
        ),
        _c(
            "hypothyroid",
            "40930008",
            "Hypothyroidism",
            "E03.9",
            "Hypothyroidism, unspecified",
            True,
            20,
            "Hypothyroidism",
        ),
        _c(
            "oa_knee",
            "239873007",
            "Osteoarthritis of knee",
            "M17.9",
            "Osteoarthritis of knee, unspecified",
            True,
            45,
            "Knee osteoarthritis",
        ),
        _c("obesity", "414916001", "Obesity", "E66.9", "Obesity, unspecified", True, 18, "Obesity"),
        _c(
            "gerd",
            "235595009",
            "Gastroesophageal reflux disease",
            "K21.9",
            "Gastro-esophageal reflux disease without esophagitis",
            True,
            18,
            "GERD",
        ),
        _c(
            "migraine",
            "37796009",
            "Migraine",
            "G43.909",
            "Migraine, unspecified, not intractable, without status migrainosus",
            True,
            12,
            "Migraine",
        ),
        _c(
            "ckd",
            "709044004",
            "Chronic kidney disease",
            "N18.9",
            "Chronic kidney disease, unspecified",
            True,
            50,
            "Chronic kidney disease",
        ),
        _c(
            "copd",
            "13645005",
            "Chronic obstructive lung disease",
            "J44.9",
            "Chronic obstructive pulmonary disease, unspecified",
            True,
            45,
            "COPD",
        ),
        # acute, self-limited episodes
        _c(
            "bronchitis",
            "10509002",
            "Acute bronchitis",
            "J20.9",
            "Acute bronchitis, unspecified",
            False,
            1,
            "Acute bronchitis",
        ),
        _c(
            "uti",
            "68566005",
            "Urinary tract infectious disease",
            "N39.0",
            "Urinary tract infection, site not specified",
            False,
            1,
            "Urinary tract infection",
        ),
        _c(
            "sinusitis",
            "15805002",
            "Acute sinusitis",
            "J01.90",
            "Acute sinusitis, unspecified",
            False,
            1,
            "Acute sinusitis",
        ),
        _c(
            "strep",
            "43878008",
            "Streptococcal sore throat",
            "J02.0",
            "Streptococcal pharyngitis",
            False,
            1,
            "Strep throat",
        ),
        # reasons for a hospital stay (discharge summaries)
        _c(
            "pneumonia",
            "385093006",
            "Community acquired pneumonia",
            "J18.9",
            "Pneumonia, unspecified organism",
            False,
            1,
            "Community-acquired pneumonia",
        ),
        _c(
            "appendicitis",
            "85189001",
            "Acute appendicitis",
            "K35.80",
            "Unspecified acute appendicitis",
            False,
            5,
            "Acute appendicitis",
        ),
        _c(
            "cellulitis",
            "128045006",
            "Cellulitis",
            "L03.90",
            "Cellulitis, unspecified",
            False,
            1,
            "Cellulitis",
        ),
        _c(
            "chest_pain",
            "29857009",
            "Chest pain",
            "R07.9",
            "Chest pain, unspecified",
            False,
            18,
            "Chest pain",
        ),
    )
}
CHRONIC_KEYS = tuple(k for k, c in CONDITIONS.items() if c.chronic)
ACUTE_KEYS = ("bronchitis", "uti", "sinusitis", "strep")
INPATIENT_KEYS = ("pneumonia", "appendicitis", "cellulitis", "chest_pain")


# --- medications --------------------------------------------------------------------------------
def _m(
    key: str,
    rx: str,
    rx_d: str,
    label: str,
    dose: float,
    unit: str,
    unit_text: str,
    freq: int,
    period: float,
    period_unit: str,
    prn: bool,
    route: Route,
    sig: str,
    indications: tuple[str, ...],
    course_days: int | None = None,
) -> Medication:
    return Medication(
        key,
        Code(rx, rx_d),
        label,
        dose,
        unit,
        unit_text,
        freq,
        period,
        period_unit,
        prn,
        route,
        sig,
        indications,
        course_days,
    )


MEDICATIONS: dict[str, Medication] = {
    m.key: m
    for m in (
        _m(
            "lisinopril",
            "314076",
            "lisinopril 10 MG Oral Tablet",
            "Lisinopril 10 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth once daily",
            ("htn",),
        ),
        _m(
            "amlodipine",
            "197361",
            "amlodipine 5 MG Oral Tablet",
            "Amlodipine 5 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth once daily",
            ("htn",),
        ),
        _m(
            "hctz",
            "310798",
            "hydrochlorothiazide 25 MG Oral Tablet",
            "Hydrochlorothiazide 25 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth every morning",
            ("htn",),
        ),
        _m(
            "metformin",
            "860975",
            "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
            "Metformin ER 500 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth daily with the evening meal",
            ("t2dm",),
        ),
        _m(
            "simvastatin",
            "312961",
            "simvastatin 20 MG Oral Tablet",
            "Simvastatin 20 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth at bedtime",
            ("hld",),
        ),
        _m(
            "atorvastatin",
            "259255",
            "atorvastatin 80 MG Oral Tablet",
            "Atorvastatin 80 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth once daily",
            ("hld",),
        ),
        _m(
            "levothyroxine",
            "966222",
            "levothyroxine sodium 0.075 MG Oral Tablet",
            "Levothyroxine 75 mcg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth every morning on an empty stomach",
            ("hypothyroid",),
        ),
        _m(
            "sertraline",
            "312940",
            "sertraline 50 MG Oral Tablet",
            "Sertraline 50 mg tablet",
            1,
            "{tbl}",
            "tablet",
            1,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth once daily",
            ("mdd", "gad"),
        ),
        _m(
            "albuterol",
            "745679",
            "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
            "Albuterol HFA inhaler",
            2,
            "{puff}",
            "puff",
            1,
            4,
            "h",
            True,
            INHALED,
            "Inhale 2 puffs every 4 to 6 hours as needed for wheezing",
            ("asthma", "copd"),
        ),
        _m(
            "fluticasone",
            "895994",
            "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
            "Fluticasone HFA 44 mcg inhaler",
            2,
            "{puff}",
            "puff",
            2,
            1,
            "d",
            False,
            INHALED,
            "Inhale 2 puffs twice daily; rinse mouth after use",
            ("asthma",),
        ),
        _m(
            "acetaminophen",
            "313782",
            "acetaminophen 325 MG Oral Tablet",
            "Acetaminophen 325 mg tablet",
            2,
            "{tbl}",
            "tablet",
            1,
            6,
            "h",
            True,
            ORAL,
            "Take 2 tablets by mouth every 6 hours as needed for pain",
            ("oa_knee", "appendicitis"),
        ),
        _m(
            "amoxicillin",
            "308182",
            "amoxicillin 250 MG Oral Capsule",
            "Amoxicillin 250 mg capsule",
            2,
            "{cap}",
            "capsule",
            3,
            1,
            "d",
            False,
            ORAL,
            "Take 2 capsules by mouth three times daily for 10 days",
            ("sinusitis", "pneumonia"),
            10,
        ),
        _m(
            "penicillin_v",
            "834061",
            "penicillin V potassium 250 MG Oral Tablet",
            "Penicillin VK 250 mg tablet",
            1,
            "{tbl}",
            "tablet",
            4,
            1,
            "d",
            False,
            ORAL,
            "Take 1 tablet by mouth four times daily for 10 days",
            ("strep",),
            10,
        ),
    )
}
# Which medications a condition is treated with (first choice first).
TREATMENTS: dict[str, tuple[str, ...]] = {
    "htn": ("lisinopril", "amlodipine", "hctz"),
    "t2dm": ("metformin",),
    "hld": ("simvastatin", "atorvastatin"),
    "hypothyroid": ("levothyroxine",),
    "mdd": ("sertraline",),
    "gad": ("sertraline",),
    "asthma": ("albuterol", "fluticasone"),
    "copd": ("albuterol",),
    "oa_knee": ("acetaminophen",),
    "sinusitis": ("amoxicillin",),
    "strep": ("penicillin_v",),
    "pneumonia": ("amoxicillin",),
    "appendicitis": ("acetaminophen",),
}


# --- laboratory ---------------------------------------------------------------------------------
def _t(
    code: str,
    display: str,
    unit: str,
    low: float | None,
    high: float | None,
    decimals: int,
    short: str,
) -> LabTest:
    return LabTest(Code(code, display), unit, low, high, decimals, short)


GLUCOSE = _t("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 70, 99, 0, "Glucose")
BUN = _t("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma", "mg/dL", 7, 20, 0, "BUN")
CREATININE = _t(
    "2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.6, 1.3, 2, "Creatinine"
)
SODIUM = _t("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 136, 145, 0, "Sodium")
POTASSIUM = _t(
    "2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.1, 1, "Potassium"
)
CHLORIDE = _t(
    "2075-0", "Chloride [Moles/volume] in Serum or Plasma", "mmol/L", 98, 107, 0, "Chloride"
)
CO2 = _t(
    "2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma", "mmol/L", 22, 29, 0, "CO2"
)
CHOLESTEROL = _t(
    "2093-3",
    "Cholesterol [Mass/volume] in Serum or Plasma",
    "mg/dL",
    None,
    200,
    0,
    "Total cholesterol",
)
TRIGLYCERIDE = _t(
    "2571-8",
    "Triglyceride [Mass/volume] in Serum or Plasma",
    "mg/dL",
    None,
    150,
    0,
    "Triglycerides",
)
HDL = _t(
    "2085-9",
    "Cholesterol in HDL [Mass/volume] in Serum or Plasma",
    "mg/dL",
    40,
    None,
    0,
    "HDL cholesterol",
)
LDL = _t(
    "13457-7",
    "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
    "mg/dL",
    None,
    100,
    0,
    "LDL cholesterol (calc)",
)
WBC = _t(
    "6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 4.5, 11.0, 1, "WBC"
)
HGB = _t("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 12.0, 17.5, 1, "Hemoglobin")
HCT = _t(
    "4544-3",
    "Hematocrit [Volume Fraction] of Blood by Automated count",
    "%",
    36,
    51,
    1,
    "Hematocrit",
)
PLT = _t(
    "777-3", "Platelets [#/volume] in Blood by Automated count", "10*3/uL", 150, 400, 0, "Platelets"
)
HBA1C = _t("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 5.6, 1, "HbA1c")
TSH = _t("3016-3", "Thyrotropin [Units/volume] in Serum or Plasma", "m[IU]/L", 0.4, 4.0, 2, "TSH")

LAB_PANELS: dict[str, LabPanel] = {
    p.key: p
    for p in (
        LabPanel(
            "bmp",
            Code("51990-0", "Basic metabolic panel - Blood"),
            (GLUCOSE, BUN, CREATININE, SODIUM, POTASSIUM, CHLORIDE, CO2),
        ),
        LabPanel(
            "lipid",
            Code("24331-1", "Lipid 1996 panel - Serum or Plasma"),
            (CHOLESTEROL, TRIGLYCERIDE, HDL, LDL),
        ),
        LabPanel(
            "cbc", Code("58410-2", "CBC panel - Blood by Automated count"), (WBC, HGB, HCT, PLT)
        ),
        LabPanel("a1c", HBA1C.loinc, (HBA1C,)),
        LabPanel("tsh", TSH.loinc, (TSH,)),
    )
}
# Which panels follow a condition.
MONITORING: dict[str, tuple[str, ...]] = {
    "t2dm": ("a1c", "bmp"),
    "prediabetes": ("a1c",),
    "htn": ("bmp",),
    "ckd": ("bmp",),
    "hld": ("lipid",),
    "hypothyroid": ("tsh",),
}

# --- vital signs (LOINC, UCUM) ------------------------------------------------------------------
VITALS_PANEL = Code(
    "85353-1", "Vital signs, weight, height, head circumference, oxygen saturation and BMI panel"
)
BP_PANEL = Code("85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = Code("8480-6", "Systolic blood pressure")
DIASTOLIC = Code("8462-4", "Diastolic blood pressure")
HEART_RATE = Code("8867-4", "Heart rate")
RESP_RATE = Code("9279-1", "Respiratory rate")
BODY_TEMP = Code("8310-5", "Body temperature")
BODY_WEIGHT = Code("29463-7", "Body weight")
BODY_HEIGHT = Code("8302-2", "Body height")
BMI = Code("39156-5", "Body mass index (BMI) [Ratio]")
SPO2 = Code("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
VITAL_SIGNS_SNOMED = Code("46680005", "Vital signs")

# --- immunizations (CVX; NDC where the package code is known) ----------------------------------
VACCINES: dict[str, Vaccine] = {
    v.key: v
    for v in (
        Vaccine(
            "flu",
            Code("141", "Influenza, seasonal, injectable"),
            Code("49281-0394-15", "FLUZONE"),
            INTRAMUSCULAR,
            0.5,
        ),
        Vaccine(
            "flu_pf",
            Code("140", "Influenza, seasonal, injectable, preservative free"),
            None,
            INTRAMUSCULAR,
            0.5,
        ),
        Vaccine(
            "flu_quad",
            Code("150", "Influenza, injectable, quadrivalent, preservative free"),
            None,
            INTRAMUSCULAR,
            0.5,
        ),
        Vaccine("tdap", Code("115", "Tdap"), None, INTRAMUSCULAR, 0.5),
        Vaccine("td", Code("113", "Td (adult) preservative free"), None, INTRAMUSCULAR, 0.5),
        Vaccine(
            "ppsv23", Code("33", "pneumococcal polysaccharide PPV23"), None, INTRAMUSCULAR, 0.5
        ),
        Vaccine("pcv13", Code("133", "Pneumococcal conjugate PCV 13"), None, INTRAMUSCULAR, 0.5),
        Vaccine("hepb", Code("43", "Hep B, adult"), None, INTRAMUSCULAR, 1.0),
        Vaccine("zoster", Code("187", "zoster vaccine recombinant"), None, INTRAMUSCULAR, 0.5),
        Vaccine("hpv9", Code("165", "HPV9"), None, INTRAMUSCULAR, 0.5),
        Vaccine(
            "covid",
            Code(
                "208",
                "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, "
                "preservative free, 30 mcg/0.3mL dose",
            ),
            None,
            INTRAMUSCULAR,
            0.3,
        ),
    )
}
# HL7 v3 ActNoImmunizationReason (C-CDA) = v3 ActReason codes (FHIR Immunization.statusReason).
REFUSAL_REASONS = (
    Code("PATOBJ", "patient objection"),
    Code("PHILISOP", "philosophical objection"),
    Code("RELIG", "religious objection"),
    Code("MEDPREC", "medical precaution"),
    Code("OSTOCK", "product out of stock"),
)

# --- allergies ----------------------------------------------------------------------------------
DRUG_ALLERGY = Code("416098002", "Allergy to drug")
FOOD_ALLERGY = Code("414285001", "Allergy to food")
SUBSTANCE_ALLERGY = Code("419199007", "Allergy to substance")
NO_KNOWN_ALLERGY = Code("716186003", "No known allergy")

ALLERGENS: dict[str, Allergen] = {
    a.key: a
    for a in (
        Allergen("penicillin", Code("7980", "penicillin G"), "rxnorm", "medication", DRUG_ALLERGY),
        Allergen("codeine", Code("2670", "codeine"), "rxnorm", "medication", DRUG_ALLERGY),
        Allergen(
            "sulfamethoxazole",
            Code("10180", "sulfamethoxazole"),
            "rxnorm",
            "medication",
            DRUG_ALLERGY,
        ),
        Allergen("aspirin", Code("1191", "aspirin"), "rxnorm", "medication", DRUG_ALLERGY),
        Allergen("amoxicillin", Code("723", "amoxicillin"), "rxnorm", "medication", DRUG_ALLERGY),
        Allergen("peanut", Code("762952008", "Peanut"), "snomed", "food", FOOD_ALLERGY),
        Allergen("latex", Code("111088007", "Latex"), "snomed", "environment", SUBSTANCE_ALLERGY),
        Allergen(
            "bee_venom", Code("288328004", "Bee venom"), "snomed", "environment", SUBSTANCE_ALLERGY
        ),
    )
}
REACTIONS = (
    Code("126485001", "Urticaria"),
    Code("271807003", "Eruption of skin"),
    Code("422587007", "Nausea"),
    Code("56018004", "Wheezing"),
    Code("41291007", "Angioedema"),
    Code("39579001", "Anaphylaxis"),
    Code("422400008", "Vomiting"),
)
SEVERITIES = (
    Severity(Code("255604002", "Mild"), "mild"),
    Severity(Code("6736007", "Moderate"), "moderate"),
    Severity(Code("24484000", "Severe"), "severe"),
)

# --- procedures ---------------------------------------------------------------------------------
PROCEDURES: dict[str, Procedure] = {
    p.key: p
    for p in (
        Procedure("colonoscopy", Code("73761001", "Colonoscopy"), "Colonoscopy"),
        Procedure("polypectomy", Code("274025005", "Colonic polypectomy"), "Colonic polypectomy"),
        Procedure("ecg", Code("29303009", "Electrocardiographic procedure"), "12-lead ECG"),
        Procedure("cxr", Code("399208008", "Plain chest X-ray"), "Chest X-ray"),
        Procedure("appendectomy", Code("80146002", "Appendectomy"), "Appendectomy"),
        Procedure("cholecystectomy", Code("38102005", "Cholecystectomy"), "Cholecystectomy"),
        Procedure("spirometry", Code("127783003", "Spirometry"), "Spirometry"),
    )
}

# --- encounters ---------------------------------------------------------------------------------
CPT_99213 = Code(
    "99213",
    "Office or other outpatient visit for the evaluation and management "
    "of an established patient, low level of medical decision making",
)
CPT_99214 = Code(
    "99214",
    "Office or other outpatient visit for the evaluation and management "
    "of an established patient, moderate level of medical decision making",
)
ENCOUNTER_TYPES: dict[str, EncounterType] = {
    e.key: e
    for e in (
        EncounterType("checkup", Code("185349003", "Encounter for check up"), "AMB", CPT_99213),
        EncounterType("followup", Code("390906007", "Follow-up encounter"), "AMB", CPT_99214),
        EncounterType("symptom", Code("185345009", "Encounter for symptom"), "AMB", CPT_99213),
        EncounterType("admission", Code("32485007", "Hospital admission"), "IMP", None),
    )
}

# --- social history -----------------------------------------------------------------------------
SMOKING_STATUS_LOINC = Code("72166-2", "Tobacco smoking status")
SMOKING_STATUSES = (
    (Code("266919005", "Never smoked tobacco"), 0.55),
    (Code("8517006", "Ex-smoker"), 0.25),
    (Code("449868002", "Smokes tobacco daily"), 0.12),
    (Code("428041000124106", "Occasional tobacco smoker"), 0.05),
    (Code("266927001", "Tobacco smoking consumption unknown"), 0.03),
)
SMOKER_CODES = frozenset({"8517006", "449868002", "428041000124106"})

# --- C-CDA/LOINC document and section codes -----------------------------------------------------
DOC_CCD = Code("34133-9", "Summary of episode note")
DOC_DISCHARGE = Code("18842-5", "Discharge summary")
DOC_PROGRESS = Code("11506-3", "Progress note")

INTERPRETATIONS = {"N": "Normal", "H": "High", "L": "Low"}
