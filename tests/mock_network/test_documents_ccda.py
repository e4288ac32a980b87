"""C-CDA R2.1 documents: header, sections by templateId, coded entries, narrative references."""

from __future__ import annotations

import datetime as dt
from collections import Counter

from lxml import etree

from mock_network.documents import CCDA_XML, PLAIN_XML, DocSubject, DocumentMix, make_document

SEED = 20250630
ONLY_CCDA = DocumentMix(0, 1, 0, 0)
NS = {
    "h": "urn:hl7-org:v3",
    "sdtc": "urn:hl7-org:sdtc",
    "xsi": "http://www.w3.org/2001/XMLSchema-instance",
}
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

SNOMED = "2.16.840.1.113883.6.96"
LOINC = "2.16.840.1.113883.6.1"
RXNORM = "2.16.840.1.113883.6.88"
CVX = "2.16.840.1.113883.12.292"
ICD10 = "2.16.840.1.113883.6.90"
NDC = "2.16.840.1.113883.6.69"

SECTIONS = {
    "allergies": "2.16.840.1.113883.10.20.22.2.6.1",
    "medications": "2.16.840.1.113883.10.20.22.2.1.1",
    "problems": "2.16.840.1.113883.10.20.22.2.5.1",
    "procedures": "2.16.840.1.113883.10.20.22.2.7.1",
    "results": "2.16.840.1.113883.10.20.22.2.3.1",
    "vitals": "2.16.840.1.113883.10.20.22.2.4.1",
    "immunizations": "2.16.840.1.113883.10.20.22.2.2.1",
    "social": "2.16.840.1.113883.10.20.22.2.17",
    "encounters": "2.16.840.1.113883.10.20.22.2.22.1",
}
DISCHARGE_ONLY = {
    "discharge_diagnosis": "2.16.840.1.113883.10.20.22.2.24",
    "discharge_medications": "2.16.840.1.113883.10.20.22.2.11.1",
    "hospital_course": "1.3.6.1.4.1.19376.1.5.3.1.3.5",
}
SAFE = etree.XMLParser(resolve_entities=False, no_network=True)


def subject(k: int) -> DocSubject:
    return DocSubject(
        k,
        f"PT-{k:05d}",
        "Jo",
        "Nguyen & Sons",
        dt.date(1930 + k % 90, 5, 9),
        ("female", "male", "other", "unknown")[k % 4],
    )


def _docs(n: int) -> list[tuple[DocSubject, etree._Element, str]]:
    out = []
    for k in range(n):
        s = subject(k)
        for i in (0, 4):
            doc = make_document(s, "org-c", "Cda Health", SEED, i, ONLY_CCDA)
            assert doc.content_type in (CCDA_XML, PLAIN_XML)
            out.append((s, etree.fromstring(doc.body, SAFE), doc.type_code))
    return out


DOCS = _docs(90)


def _section(root: etree._Element, template: str) -> etree._Element | None:
    found = root.xpath(f"//h:section[h:templateId/@root='{template}']", namespaces=NS)
    assert len(found) <= 1
    return found[0] if found else None


def _entries(section: etree._Element, template: str) -> list[etree._Element]:
    found: list[etree._Element] = section.xpath(
        f".//h:*[h:templateId/@root='{template}']", namespaces=NS
    )
    return found


def test_header_is_us_realm_r2_1_with_the_org_local_patient() -> None:
    kinds: Counter[str] = Counter()
    for s, root, type_code in DOCS:
        assert root.tag == "{urn:hl7-org:v3}ClinicalDocument"
        assert root.xpath("h:realmCode/@code", namespaces=NS) == ["US"]
        assert root.xpath("h:typeId/@extension", namespaces=NS) == ["POCD_HD000040"]
        templates = {
            (t.get("root"), t.get("extension")) for t in root.xpath("h:templateId", namespaces=NS)
        }
        assert ("2.16.840.1.113883.10.20.22.1.1", "2015-08-01") in templates
        ccd = ("2.16.840.1.113883.10.20.22.1.2", "2015-08-01") in templates
        discharge = ("2.16.840.1.113883.10.20.22.1.8", "2015-08-01") in templates
        assert ccd != discharge
        assert root.xpath("h:code/@code", namespaces=NS) == [type_code]
        assert type_code == ("18842-5" if discharge else "34133-9")
        kinds["discharge" if discharge else "ccd"] += 1
        role = root.xpath("h:recordTarget/h:patientRole", namespaces=NS)[0]
        assert role.xpath("h:id/@extension", namespaces=NS) == [s.patient_id]
        patient = role.xpath("h:patient", namespaces=NS)[0]
        assert patient.xpath("h:name/h:given/text()", namespaces=NS) == [s.given]
        assert patient.xpath("h:name/h:family/text()", namespaces=NS) == [s.family]
        assert patient.xpath("h:birthTime/@value", namespaces=NS) == [
            s.birth_date.strftime("%Y%m%d")
        ]
        gender = patient.xpath("h:administrativeGenderCode", namespaces=NS)[0]
        expected = {"female": "F", "male": "M", "other": "UN"}.get(s.sex)
        assert gender.get("code") == expected
        assert (gender.get("nullFlavor") == "UNK") == (expected is None)
        effective = root.xpath("h:effectiveTime/@value", namespaces=NS)[0]
        assert effective[-5] in "+-" and len(effective) in (17, 19)  # minutes or seconds + offset
        if discharge:
            assert root.xpath(
                "h:componentOf/h:encompassingEncounter/h:effectiveTime/h:high", namespaces=NS
            )
    assert kinds["ccd"] > 0 and kinds["discharge"] > 0


def test_every_section_kind_is_present_by_template_id() -> None:
    for _, root, type_code in DOCS:
        wanted = dict(SECTIONS)
        if type_code == "18842-5":
            wanted.pop("medications")
            wanted.update(DISCHARGE_ONLY)
        for name, template in wanted.items():
            section = _section(root, template)
            assert section is not None, name
            assert section.xpath("h:code/@codeSystem", namespaces=NS) == [LOINC]
            assert section.xpath("h:text", namespaces=NS), name


def _value_systems(elements: list[etree._Element], path: str) -> set[str]:
    return {system for e in elements for system in e.xpath(path, namespaces=NS)}


def test_section_entries_are_coded_in_the_right_code_systems() -> None:
    seen: Counter[str] = Counter()
    for _, root, _ in DOCS:
        problems = _entries(root, "2.16.840.1.113883.10.20.22.4.4")
        for obs in problems:
            value = obs.xpath("h:value", namespaces=NS)[0]
            assert value.get(XSI_TYPE) == "CD"
            pair = {
                value.get("codeSystem"),
                *value.xpath("h:translation/@codeSystem", namespaces=NS),
            }
            assert pair == {SNOMED, ICD10}
            assert obs.xpath("h:effectiveTime/h:low/@value", namespaces=NS)
            seen["problem"] += 1
        assert all(
            c == RXNORM
            for c in _value_systems(
                _entries(root, "2.16.840.1.113883.10.20.22.4.23"),
                "h:manufacturedMaterial/h:code/@codeSystem",
            )
        )
        seen["medication"] += len(_entries(root, "2.16.840.1.113883.10.20.22.4.16"))
        for med in _entries(root, "2.16.840.1.113883.10.20.22.4.16"):
            assert med.xpath("h:routeCode/@code", namespaces=NS)
            assert med.xpath("h:doseQuantity/@value", namespaces=NS)
            assert med.xpath("h:effectiveTime[@xsi:type='PIVL_TS']/h:period", namespaces=NS)
        for allergy in _entries(root, "2.16.840.1.113883.10.20.22.4.7"):
            assert allergy.xpath("h:value/@codeSystem", namespaces=NS) == [SNOMED]
            agent = allergy.xpath(".//h:playingEntity/h:code", namespaces=NS)[0]
            if allergy.get("negationInd") == "true":
                assert agent.get("nullFlavor") == "NA"
                seen["no-known-allergies"] += 1
            else:
                assert agent.get("codeSystem") in (RXNORM, SNOMED)
                assert _entries(allergy, "2.16.840.1.113883.10.20.22.4.9")
                assert _entries(allergy, "2.16.840.1.113883.10.20.22.4.8")
                seen["allergy"] += 1
        for organizer in _entries(root, "2.16.840.1.113883.10.20.22.4.1"):
            assert organizer.xpath("h:code/@codeSystem", namespaces=NS) == [LOINC]
            for obs in _entries(organizer, "2.16.840.1.113883.10.20.22.4.2"):
                assert obs.xpath("h:code/@codeSystem", namespaces=NS) == [LOINC]
                value = obs.xpath("h:value", namespaces=NS)[0]
                assert value.get(XSI_TYPE) == "PQ" and value.get("unit")
                float(value.get("value"))
                assert obs.xpath("h:interpretationCode/@code", namespaces=NS)[0] in "NHL"
                assert obs.xpath("h:referenceRange/h:observationRange/h:value/*", namespaces=NS)
                seen["result"] += 1
        for vital in _entries(root, "2.16.840.1.113883.10.20.22.4.27"):
            assert vital.xpath("h:code/@codeSystem", namespaces=NS) == [LOINC]
            assert vital.xpath("h:value/@unit", namespaces=NS)
            seen["vital"] += 1
        for imm in _entries(root, "2.16.840.1.113883.10.20.22.4.52"):
            code = imm.xpath(".//h:manufacturedMaterial/h:code", namespaces=NS)[0]
            assert code.get("codeSystem") == CVX
            if code.xpath(f"h:translation[@codeSystem='{NDC}']", namespaces=NS):
                seen["ndc"] += 1
            if imm.get("negationInd") == "true":
                assert _entries(imm, "2.16.840.1.113883.10.20.22.4.53")
                seen["not-given"] += 1
            seen["immunization"] += 1
        for proc in _entries(root, "2.16.840.1.113883.10.20.22.4.14"):
            assert proc.xpath("h:code/@codeSystem", namespaces=NS) == [SNOMED]
            seen["procedure"] += 1
        for enc in _entries(root, "2.16.840.1.113883.10.20.22.4.49"):
            assert enc.xpath("h:effectiveTime/h:low/@value", namespaces=NS)
            seen["encounter-diagnosis"] += len(_entries(enc, "2.16.840.1.113883.10.20.22.4.80"))
            seen["encounter"] += 1
        for smoke in _entries(root, "2.16.840.1.113883.10.20.22.4.78"):
            assert smoke.xpath("h:code/@code", namespaces=NS) == ["72166-2"]
            assert smoke.xpath("h:value/@codeSystem", namespaces=NS) == [SNOMED]
            seen["smoking"] += 1
        seen["null-flavored section"] += len(root.xpath("//h:section[@nullFlavor]", namespaces=NS))
    for kind in (
        "problem",
        "medication",
        "allergy",
        "no-known-allergies",
        "result",
        "vital",
        "immunization",
        "ndc",
        "not-given",
        "procedure",
        "encounter",
        "encounter-diagnosis",
        "smoking",
        "null-flavored section",
    ):
        assert seen[kind] > 0, kind


def test_narrative_references_resolve_and_times_carry_offsets() -> None:
    for _, root, _ in DOCS:
        ids = set(root.xpath("//@ID"))
        refs = root.xpath("//h:reference/@value", namespaces=NS)
        assert refs
        for ref in refs:
            assert ref.startswith("#") and ref[1:] in ids
        for value in root.xpath("//h:effectiveTime/@value | //h:time/@value", namespaces=NS):
            if len(value) > 8:  # anything finer than a day names its UTC offset
                assert value[-5] in "+-"


def test_unknown_sex_and_xml_escaping_do_not_break_the_document() -> None:
    s = DocSubject(3, "A&B<1>", "Zoë", 'D\'Arcy "Jr"', dt.date(1950, 1, 2), "unknown")
    doc = make_document(s, "org-x", "Smith & Jones <Clinic>", SEED, 1, ONLY_CCDA)
    root = etree.fromstring(doc.body, SAFE)
    assert root.xpath("//h:patientRole/h:id/@extension", namespaces=NS) == ["A&B<1>"]
    assert root.xpath("//h:patient/h:name/h:family/text()", namespaces=NS) == ['D\'Arcy "Jr"']
