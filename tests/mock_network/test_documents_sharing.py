"""The same clinical fact recurs at two organizations - in FHIR at one and C-CDA at the other -
while repeat measurements (same test, another day and value) stay distinct near misses."""

from __future__ import annotations

import datetime as dt

import orjson
from lxml import etree

from mock_network.documents import DocSubject, DocumentMix, document_count, make_document

SEED = 99
NS = {"h": "urn:hl7-org:v3"}
SAFE = etree.XMLParser(resolve_entities=False, no_network=True)
HALF = DocumentMix(1, 1, 0, 0)

Fact = tuple[str, str, str, str]  # kind, code, UTC instant or date, value


def _utc(text: str) -> str:
    """FHIR dateTime or HL7 TS with offset -> 'YYYY-MM-DDTHH:MM' in UTC."""
    if "-" in text[:8]:
        when = dt.datetime.fromisoformat(text)
    else:
        fmt = "%Y%m%d%H%M%S%z" if len(text) == 19 else "%Y%m%d%H%M%z"
        when = dt.datetime.strptime(text, fmt)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M")


def _fhir_facts(body: bytes) -> set[Fact]:
    facts: set[Fact] = set()
    for entry in orjson.loads(body)["entry"]:
        r = entry["resource"]
        if r["resourceType"] == "Condition":
            sct = next(c["code"] for c in r["code"]["coding"] if "snomed" in c["system"])
            facts.add(("condition", sct, r["onsetDateTime"][:7], ""))
        elif (
            r["resourceType"] == "Observation"
            and "valueQuantity" in r
            and r["category"][0]["coding"][0]["code"] == "laboratory"
        ):
            facts.add(
                (
                    "lab",
                    r["code"]["coding"][0]["code"],
                    _utc(r["effectiveDateTime"]),
                    f"{r['valueQuantity']['value']:g}",
                )
            )
        elif r["resourceType"] == "Immunization":
            facts.add(
                (
                    "immunization",
                    r["vaccineCode"]["coding"][0]["code"],
                    _utc(r["occurrenceDateTime"])[:10],
                    r["status"],
                )
            )
    return facts


def _ccda_facts(body: bytes) -> set[Fact]:
    root = etree.fromstring(body, SAFE)
    facts: set[Fact] = set()
    problems = root.xpath(
        "//h:section[h:templateId/@root='2.16.840.1.113883.10.20.22.2.5.1']"
        "//h:observation[h:templateId/@root='2.16.840.1.113883.10.20.22.4.4']",
        namespaces=NS,
    )
    for obs in problems:
        value = obs.xpath("h:value", namespaces=NS)[0]
        codes = [(value.get("codeSystem"), value.get("code"))] + [
            (t.get("codeSystem"), t.get("code"))
            for t in value.xpath("h:translation", namespaces=NS)
        ]
        sct = next(c for system, c in codes if system == "2.16.840.1.113883.6.96")
        low = obs.xpath("h:effectiveTime/h:low/@value", namespaces=NS)[0]
        facts.add(("condition", sct, f"{low[:4]}-{low[4:6]}", ""))
    for obs in root.xpath(
        "//h:observation[h:templateId/@root='2.16.840.1.113883.10.20.22.4.2']", namespaces=NS
    ):
        facts.add(
            (
                "lab",
                obs.xpath("h:code/@code", namespaces=NS)[0],
                _utc(obs.xpath("h:effectiveTime/@value", namespaces=NS)[0]),
                f"{float(obs.xpath('h:value/@value', namespaces=NS)[0]):g}",
            )
        )
    for imm in root.xpath(
        "//h:substanceAdministration[h:templateId/@root='2.16.840.1.113883.10.20.22.4.52']",
        namespaces=NS,
    ):
        facts.add(
            (
                "immunization",
                imm.xpath(".//h:manufacturedMaterial/h:code/@code", namespaces=NS)[0],
                _utc(imm.xpath("h:effectiveTime/@value", namespaces=NS)[0])[:10],
                "not-done" if imm.get("negationInd") == "true" else "completed",
            )
        )
    return facts


def _org_facts(s: DocSubject, org: str) -> dict[str, set[Fact]]:
    """Facts an org's documents carry, by format."""
    out: dict[str, set[Fact]] = {"fhir": set(), "ccda": set()}
    for i in range(document_count(s, org, SEED, 2, 8)):
        doc = make_document(s, org, org.upper(), SEED, i, HALF)
        if doc.content_type == "application/fhir+json":
            out["fhir"] |= _fhir_facts(doc.body)
        else:
            out["ccda"] |= _ccda_facts(doc.body)
    return out


def test_facts_recur_across_organizations_and_formats() -> None:
    persons = 200
    shared = cross_format = shared_lab = near_miss = 0
    for k in range(persons):
        birth = dt.date(1940 + k % 60, 1 + k % 12, 10)
        # Each org holds its own MRN and its own version of the birth date (day/month swapped).
        a = DocSubject(k, f"A{k}", "Sam", "Lee", birth, "female")
        b = DocSubject(
            k, f"B-{k:07d}", "Samantha", "Lee", birth.replace(month=10, day=1 + k % 12), "female"
        )
        fa, fb = _org_facts(a, "org-a"), _org_facts(b, "org-b")
        all_a, all_b = fa["fhir"] | fa["ccda"], fb["fhir"] | fb["ccda"]
        common = all_a & all_b
        shared += bool(common)
        cross_format += bool((fa["fhir"] & fb["ccda"]) | (fa["ccda"] & fb["fhir"]))
        shared_lab += any(f[0] == "lab" for f in common)
        labs_a = {(f[1], f[2][:10]): f[3] for f in all_a if f[0] == "lab"}
        near_miss += any(
            f[0] == "lab" and f not in all_a and any(code == f[1] for code, _ in labs_a)
            for f in all_b
        )
    assert shared / persons >= 0.75  # measured 0.92
    assert cross_format / persons >= 0.6  # measured 0.86
    assert shared_lab / persons >= 0.06  # measured 0.12
    assert near_miss / persons >= 0.08  # measured 0.17


def test_org_local_identity_does_not_change_the_person_history() -> None:
    birth = dt.date(1970, 4, 3)
    one = DocSubject(77, "X1", "Pat", "Kim", birth, "male")
    other = DocSubject(77, "X2", "Patrick", "Kim", birth.replace(day=4, month=3), "male")
    facts_one = _org_facts(one, "org-z")
    facts_other = _org_facts(other, "org-z")
    conditions_one = {f for f in facts_one["fhir"] | facts_one["ccda"] if f[0] == "condition"}
    conditions_other = {f for f in facts_other["fhir"] | facts_other["ccda"] if f[0] == "condition"}
    assert conditions_one and conditions_one & conditions_other
