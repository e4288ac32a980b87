"""C-CDA R2.1 documents (CCD and Discharge Summary) from string templates.

Shapes follow HL7's C-CDA R2.1 examples: paired templateIds (root-only and root+extension),
concern acts around problem and allergy observations, organizers around results and vital
signs, narrative blocks whose IDs the entries reference. Some organizations put ICD-10-CM in
the problem value and SNOMED CT in the translation (others the reverse), and some write
timestamps without seconds, because real senders differ in exactly these ways.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from . import codes
from ._rand import derive_int
from .clock import hl7_date, hl7_ts, human_date
from .facts import ConditionFact, LabPanelFact, MedicationFact
from .snapshot import Snapshot

R21 = "2015-08-01"
R20 = "2014-06-09"


def esc(text: str) -> str:
    # str.replace, '&' first: 5-10x faster than str.translate with a dict (which was ~7 %
    # of document generation), the same bytes.
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def tid(root: str, ext: str | None = None) -> str:
    if ext is None:
        return f'<templateId root="{root}"/>'
    return f'<templateId root="{root}"/><templateId root="{root}" extension="{ext}"/>'


def cd(
    tag: str, code: codes.Code, system: str, system_name: str, inner: str = "", xsi: bool = False
) -> str:
    xsi_type = ' xsi:type="CD"' if xsi else ""
    head = (
        f'<{tag}{xsi_type} code="{esc(code.code)}" '
        f'codeSystem="{system}" codeSystemName="{system_name}" '
        f'displayName="{esc(code.display)}"'
    )
    return f"{head}>{inner}</{tag}>" if inner else head + "/>"


def _ref(anchor: str) -> str:
    return f'<reference value="#{anchor}"/>'


class _Doc:
    def __init__(self, snap: Snapshot) -> None:
        self.s = snap
        style = derive_int("ccda-style", snap.org_id)
        self.seconds = style % 2 == 0
        self.icd_primary = style % 5 == 0

    def ts(self, when_utc: dt.datetime) -> str:
        return hl7_ts(self.s.local(when_utc), self.seconds)

    def author(self, when_utc: dt.datetime) -> str:
        a = self.s.author
        return (
            f'<author typeCode="AUT">{tid("2.16.840.1.113883.10.20.22.4.119")}'
            f'<time value="{self.ts(when_utc)}"/><assignedAuthor>'
            f'<id extension="{a.npi}" root="{codes.NPI_OID}"/>'
            f"{cd('code', a.taxonomy, codes.NUCC_OID, 'NUCC')}"
            f"</assignedAuthor></author>"
        )

    # -- header --------------------------------------------------------------------------------
    def header(self, doc_tid: str, doc_code: codes.Code, title: str) -> str:
        s = self.s
        subj = s.subject
        gender = {
            "male": ("M", "Male"),
            "female": ("F", "Female"),
            "other": ("UN", "Undifferentiated"),
        }
        if subj.sex in gender:
            g_code, g_name = gender[subj.sex]
            gender_xml = (
                f'<administrativeGenderCode code="{g_code}" codeSystem='
                f'"{codes.GENDER_OID}" codeSystemName="AdministrativeGender" '
                f'displayName="{g_name}"/>'
            )
        else:
            gender_xml = '<administrativeGenderCode nullFlavor="UNK"/>'
        a = s.author
        org = (
            f'<id root="{s.org_oid}"/><name>{esc(s.org_name)}</name>'
            f'<telecom nullFlavor="UNK"/><addr nullFlavor="UNK"/>'
        )
        enc = s.encounter
        when = self.ts(enc.end)
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<ClinicalDocument xmlns="urn:hl7-org:v3" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:sdtc="urn:hl7-org:sdtc">'
            '<realmCode code="US"/>'
            '<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>'
            f"{tid('2.16.840.1.113883.10.20.22.1.1', R21)}{doc_tid}"
            f'<id root="{s.org_oid}.2" extension="{s.doc_uuid("ccda-id")}"/>'
            f"{cd('code', doc_code, codes.LOINC_OID, 'LOINC')}"
            f"<title>{esc(title)}</title>"
            f'<effectiveTime value="{when}"/>'
            f'<confidentialityCode code="N" codeSystem="{codes.CONFIDENTIALITY_OID}" '
            'displayName="normal"/><languageCode code="en-US"/>'
            f'<setId root="{s.org_oid}.2" extension="{s.doc_uuid("ccda-set")}"/>'
            '<versionNumber value="1"/>'
            "<recordTarget><patientRole>"
            f'<id extension="{esc(subj.patient_id)}" root="{s.mrn_oid}"/>'
            '<addr use="HP" nullFlavor="UNK"/><telecom nullFlavor="UNK"/>'
            f'<patient><name use="L"><given>{esc(subj.given)}</given>'
            f"<family>{esc(subj.family)}</family></name>{gender_xml}"
            f'<birthTime value="{hl7_date(subj.birth_date)}"/>'
            '<raceCode nullFlavor="UNK"/><ethnicGroupCode nullFlavor="UNK"/>'
            '<languageCommunication><languageCode code="en"/>'
            '<preferenceInd value="true"/></languageCommunication></patient>'
            f"<providerOrganization>{org}</providerOrganization>"
            "</patientRole></recordTarget>"
            f'<author><time value="{when}"/><assignedAuthor>'
            f'<id extension="{a.npi}" root="{codes.NPI_OID}"/>'
            f"{cd('code', a.taxonomy, codes.NUCC_OID, 'NUCC')}"
            '<addr nullFlavor="UNK"/><telecom nullFlavor="UNK"/>'
            f"<assignedPerson><name><given>{esc(a.given)}</given><family>{esc(a.family)}"
            "</family></name></assignedPerson>"
            f"<representedOrganization>{org}</representedOrganization>"
            "</assignedAuthor></author>"
            "<custodian><assignedCustodian><representedCustodianOrganization>"
            f"{org}</representedCustodianOrganization></assignedCustodian></custodian>"
            '<documentationOf><serviceEvent classCode="PCPR"><effectiveTime>'
            f'<low value="{self.ts(enc.start)}"/><high value="{when}"/>'
            "</effectiveTime></serviceEvent></documentationOf>"
            "<componentOf><encompassingEncounter>"
            f'<id root="{s.org_oid}.3" extension="{s.doc_uuid("encounter-number")[:8]}"/>'
            f'<effectiveTime><low value="{self.ts(enc.start)}"/>'
            f'<high value="{when}"/></effectiveTime>'
            + (
                '<dischargeDispositionCode code="01" codeSystem="'
                f'{codes.DISCHARGE_DISPOSITION_OID}" displayName="Discharged to home or self '
                'care (routine discharge)"/>'
                if s.inpatient
                else ""
            )
            + f'<location><healthCareFacility><id root="{s.org_oid}.4"/>'
            "</healthCareFacility></location></encompassingEncounter></componentOf>"
            "<component><structuredBody>"
        )

    @staticmethod
    def section(
        template: str,
        code: codes.Code,
        title: str,
        text: str,
        entries: str,
        null_flavor: bool = False,
    ) -> str:
        nf = ' nullFlavor="NI"' if null_flavor else ""
        return (
            f"<component><section{nf}>{template}"
            f"{cd('code', code, codes.LOINC_OID, 'LOINC')}<title>{esc(title)}</title>"
            f"<text>{text}</text>{entries}</section></component>"
        )

    @staticmethod
    def table(headers: tuple[str, ...], rows: list[tuple[str, list[str]]]) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in headers)
        body = "".join(
            f'<tr ID="{rid}">'
            + "".join(
                f'<td ID="{rid}-{n}">{esc(c)}</td>' if n == 0 else f"<td>{esc(c)}</td>"
                for n, c in enumerate(cells)
            )
            + "</tr>"
            for rid, cells in rows
        )
        return (
            f'<table border="1" width="100%"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>"
        )

    # -- problems ------------------------------------------------------------------------------
    def problem_value(self, c: ConditionFact, anchor: str) -> str:
        sct, icd = c.condition.snomed, c.condition.icd10
        original = f"<originalText>{_ref(anchor)}</originalText>"
        if self.icd_primary:
            inner = original + cd("translation", sct, codes.SNOMED_OID, "SNOMED CT")
            return cd("value", icd, codes.ICD10CM_OID, "ICD-10-CM", inner, xsi=True)
        inner = original + cd("translation", icd, codes.ICD10CM_OID, "ICD-10-CM")
        return cd("value", sct, codes.SNOMED_OID, "SNOMED CT", inner, xsi=True)

    def problem_obs(self, c: ConditionFact, anchor: str, diagnosis: bool) -> str:
        day = self.s.encounter.end.date()
        resolved = c.abated is not None and c.abated <= day
        precision = "month" if c.key in self.s.month_precision else "day"
        high = f'<high value="{hl7_date(c.abated)}"/>' if resolved and c.abated else ""
        status = (
            codes.Code("413322009", "Problem resolved")
            if resolved
            else codes.Code("55561003", "Active")
        )
        kind = (
            cd(
                "code",
                codes.Code("282291009", "Diagnosis interpretation"),
                codes.SNOMED_OID,
                "SNOMED CT",
                cd("translation", codes.Code("29308-4", "Diagnosis"), codes.LOINC_OID, "LOINC"),
            )
            if diagnosis
            else cd(
                "code",
                codes.Code("55607006", "Problem"),
                codes.SNOMED_OID,
                "SNOMED CT",
                cd("translation", codes.Code("75326-9", "Problem"), codes.LOINC_OID, "LOINC"),
            )
        )
        return (
            '<observation classCode="OBS" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.4', R21)}"
            f'<id root="{self.s.fact_uuid(c.key + ":obs")}"/>{kind}'
            f'<text>{_ref(anchor)}</text><statusCode code="completed"/>'
            f'<effectiveTime><low value="{hl7_date(c.onset, precision)}"/>{high}'
            f"</effectiveTime>{self.problem_value(c, anchor + '-0')}"
            '<entryRelationship typeCode="REFR"><observation classCode="OBS" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.6')}"
            f"{cd('code', codes.Code('33999-4', 'Status'), codes.LOINC_OID, 'LOINC')}"
            '<statusCode code="completed"/>'
            f"{cd('value', status, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
            "</observation></entryRelationship></observation>"
        )

    def problems(self, conditions: tuple[ConditionFact, ...]) -> str:
        rows, entries = [], []
        day = self.s.encounter.end.date()
        for n, c in enumerate(conditions):
            anchor = f"problem{n + 1}"
            resolved = c.abated is not None and c.abated <= day
            rows.append(
                (
                    anchor,
                    [c.condition.label, human_date(c.onset), "Resolved" if resolved else "Active"],
                )
            )
            recorded = dt.datetime.combine(c.onset, dt.time(15, 30)) + dt.timedelta(days=2)
            high = f'<high value="{self.ts(recorded)}"/>' if resolved else ""
            entries.append(
                '<entry typeCode="DRIV"><act classCode="ACT" moodCode="EVN">'
                f"{tid('2.16.840.1.113883.10.20.22.4.3', R21)}"
                f'<id root="{self.s.fact_uuid(c.key)}"/>'
                f'<code code="CONC" codeSystem="{codes.ACTCLASS_CONCERN_OID}" '
                'displayName="Concern"/>'
                f'<statusCode code="{"completed" if resolved else "active"}"/>'
                f'<effectiveTime><low value="{self.ts(recorded)}"/>{high}</effectiveTime>'
                f"{self.author(recorded)}"
                f'<entryRelationship typeCode="SUBJ">{self.problem_obs(c, anchor, False)}'
                "</entryRelationship></act></entry>"
            )
        text = (
            self.table(("Problem", "Onset", "Status"), rows)
            if rows
            else "<paragraph>No known problems.</paragraph>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.5.1", R21),
            codes.Code("11450-4", "Problem list - Reported"),
            "Problems",
            text,
            "".join(entries),
            null_flavor=not rows,
        )

    # -- allergies -----------------------------------------------------------------------------
    def allergies(self) -> str:
        s = self.s
        template = tid("2.16.840.1.113883.10.20.22.2.6.1", R21)
        code = codes.Code("48765-2", "Allergies and adverse reactions Document")
        title = "Allergies and Adverse Reactions"
        if s.allergies_unknown:
            return self.section(
                template,
                code,
                title,
                "<paragraph>No information about allergies.</paragraph>",
                "",
                null_flavor=True,
            )
        concern_open = (
            f"{tid('2.16.840.1.113883.10.20.22.4.30', R21)}"
            f'<code code="CONC" codeSystem="{codes.ACTCLASS_CONCERN_OID}"/>'
        )
        obs_tid = tid("2.16.840.1.113883.10.20.22.4.7", R20)
        recorded_nka = s.encounter.start
        if not s.allergies:
            text = '<paragraph ID="nka">No known allergies</paragraph>'
            entry = (
                '<entry typeCode="DRIV"><act classCode="ACT" moodCode="EVN">'
                f'{concern_open}<id root="{s.fact_uuid("nka")}"/><text>{_ref("nka")}</text>'
                f'<statusCode code="active"/><effectiveTime><low value="'
                f'{self.ts(recorded_nka)}"/></effectiveTime>'
                '<entryRelationship typeCode="SUBJ">'
                f'<observation classCode="OBS" moodCode="EVN" negationInd="true">{obs_tid}'
                f'<id root="{s.fact_uuid("nka:obs")}"/>'
                f'<code code="ASSERTION" codeSystem="{codes.ACTCODE_OID}"/>'
                f'<text>{_ref("nka")}</text><statusCode code="completed"/>'
                '<effectiveTime><low nullFlavor="NI"/></effectiveTime>'
                f"{cd('value', codes.SUBSTANCE_ALLERGY, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
                '<participant typeCode="CSM"><participantRole classCode="MANU">'
                '<playingEntity classCode="MMAT"><code nullFlavor="NA"/></playingEntity>'
                "</participantRole></participant></observation></entryRelationship>"
                "</act></entry>"
            )
            return self.section(template, code, title, text, entry)
        rows, entries = [], []
        for n, a in enumerate(s.allergies):
            anchor = f"allergy{n + 1}"
            rows.append(
                (anchor, [a.allergen.code.display, a.reaction.display, a.severity.snomed.display])
            )
            recorded = dt.datetime.combine(a.recorded, dt.time(16, 10))
            system = (
                (codes.RXNORM_OID, "RxNorm")
                if a.allergen.system == "rxnorm"
                else (codes.SNOMED_OID, "SNOMED CT")
            )
            onset = f'<low value="{a.onset_year}"/>' if a.onset_year else '<low nullFlavor="UNK"/>'
            entries.append(
                '<entry typeCode="DRIV"><act classCode="ACT" moodCode="EVN">'
                f'{concern_open}<id root="{s.fact_uuid(a.key)}"/>'
                f'<statusCode code="active"/><effectiveTime><low value="{self.ts(recorded)}"/>'
                f"</effectiveTime>{self.author(recorded)}"
                f'<entryRelationship typeCode="SUBJ"><observation classCode="OBS" '
                f'moodCode="EVN">{obs_tid}<id root="{s.fact_uuid(a.key + ":obs")}"/>'
                f'<code code="ASSERTION" codeSystem="{codes.ACTCODE_OID}"/>'
                f'<text>{_ref(anchor)}</text><statusCode code="completed"/>'
                f"<effectiveTime>{onset}</effectiveTime>"
                f"{cd('value', a.allergen.allergy_type, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
                '<participant typeCode="CSM"><participantRole classCode="MANU">'
                '<playingEntity classCode="MMAT">'
                f"{cd('code', a.allergen.code, system[0], system[1], '<originalText>' + _ref(anchor + '-0') + '</originalText>')}"  # noqa: E501
                "</playingEntity></participantRole></participant>"
                '<entryRelationship typeCode="MFST" inversionInd="true">'
                '<observation classCode="OBS" moodCode="EVN">'
                f"{tid('2.16.840.1.113883.10.20.22.4.9', R20)}"
                f'<id root="{s.fact_uuid(a.key + ":reaction")}"/>'
                f'<code code="ASSERTION" codeSystem="{codes.ACTCODE_OID}"/>'
                '<statusCode code="completed"/>'
                f"{cd('value', a.reaction, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
                '<entryRelationship typeCode="SUBJ" inversionInd="true">'
                '<observation classCode="OBS" moodCode="EVN">'
                f"{tid('2.16.840.1.113883.10.20.22.4.8', R20)}"
                f'<code code="SEV" codeSystem="{codes.ACTCODE_OID}" codeSystemName="ActCode"/>'
                '<statusCode code="completed"/>'
                f"{cd('value', a.severity.snomed, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
                "</observation></entryRelationship></observation></entryRelationship>"
                "</observation></entryRelationship></act></entry>"
            )
        return self.section(
            template,
            code,
            title,
            self.table(("Substance", "Reaction", "Severity"), rows),
            "".join(entries),
        )

    # -- medications ---------------------------------------------------------------------------
    def med_activity(self, m: MedicationFact, anchor: str, mood: str) -> str:
        med = m.medication
        hours = med.period * (24 if med.period_unit == "d" else 1) / med.frequency
        hours_text = f"{hours:g}"
        active = m.end is None or m.end >= self.s.encounter.end.date()
        high = f'<high value="{hl7_date(m.end)}"/>' if m.end else '<high nullFlavor="NI"/>'
        indication = ""
        reason = next((c for c in self.s.problems if c.key == m.reason), None)
        if reason is not None:
            indication = (
                '<entryRelationship typeCode="RSON"><observation classCode="OBS" '
                f'moodCode="EVN">{tid("2.16.840.1.113883.10.20.22.4.19", R20)}'
                f'<id root="{self.s.fact_uuid(m.key + ":indication")}"/>'
                f"{cd('code', codes.Code('75321-0', 'Clinical finding'), codes.LOINC_OID, 'LOINC')}"
                '<statusCode code="completed"/>'
                f"{cd('value', reason.condition.snomed, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
                "</observation></entryRelationship>"
            )
        return (
            f'<substanceAdministration classCode="SBADM" moodCode="{mood}">'
            f"{tid('2.16.840.1.113883.10.20.22.4.16', R20)}"
            f'<id root="{self.s.fact_uuid(m.key)}"/><text>{_ref(anchor)}</text>'
            f'<statusCode code="{"active" if active else "completed"}"/>'
            f'<effectiveTime xsi:type="IVL_TS"><low value="{hl7_date(m.start)}"/>{high}'
            "</effectiveTime>"
            '<effectiveTime xsi:type="PIVL_TS" institutionSpecified="true" operator="A">'
            f'<period value="{hours_text}" unit="h"/></effectiveTime>'
            f"{cd('routeCode', med.route.nci, codes.NCI_OID, 'NCI Thesaurus')}"
            f'<doseQuantity value="{med.dose_value:g}"/>'
            '<consumable><manufacturedProduct classCode="MANU">'
            f"{tid('2.16.840.1.113883.10.20.22.4.23', R20)}<manufacturedMaterial>"
            f"{cd('code', med.rxnorm, codes.RXNORM_OID, 'RxNorm', '<originalText>' + _ref(anchor + '-0') + '</originalText>')}"  # noqa: E501
            "</manufacturedMaterial></manufacturedProduct></consumable>"
            f"{indication}</substanceAdministration>"
        )

    def _med_rows(self) -> list[tuple[str, list[str]]]:
        day = self.s.encounter.end.date()
        return [
            (
                f"med{n + 1}",
                [
                    m.medication.rxnorm.display,
                    m.medication.sig,
                    human_date(m.start),
                    "Active" if m.end is None or m.end >= day else "Completed",
                ],
            )
            for n, m in enumerate(self.s.medications)
        ]

    def medications(self) -> str:
        rows = self._med_rows()
        entries = "".join(
            f'<entry typeCode="DRIV">{self.med_activity(m, f"med{n + 1}", "EVN")}</entry>'
            for n, m in enumerate(self.s.medications)
        )
        text = (
            self.table(("Medication", "Directions", "Start date", "Status"), rows)
            if rows
            else "<paragraph>No medications.</paragraph>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.1.1", R20),
            codes.Code("10160-0", "History of Medication use Narrative"),
            "Medications",
            text,
            entries,
            null_flavor=not rows,
        )

    def discharge_medications(self) -> str:
        rows = self._med_rows()
        act_code = cd(
            "code",
            codes.Code("10183-2", "Hospital discharge medications Narrative"),
            codes.LOINC_OID,
            "LOINC",
            cd(
                "translation",
                codes.Code("75311-1", "Discharge medications Narrative"),
                codes.LOINC_OID,
                "LOINC",
            ),
        )
        entries = "".join(
            '<entry typeCode="DRIV"><act classCode="ACT" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.35', '2016-03-01')}{act_code}"
            '<statusCode code="completed"/><entryRelationship typeCode="SUBJ">'
            f"{self.med_activity(m, f'med{n + 1}', 'INT')}</entryRelationship></act></entry>"
            for n, m in enumerate(self.s.medications)
        )
        text = (
            self.table(("Medication", "Directions", "Start date", "Status"), rows)
            if rows
            else "<paragraph>No discharge medications.</paragraph>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.11.1", R21),
            codes.Code("10183-2", "Hospital discharge medications Narrative"),
            "Discharge Medications",
            text,
            entries,
            null_flavor=not rows,
        )

    # -- results and vital signs ---------------------------------------------------------------
    def result_obs(self, panel: LabPanelFact, n: int, anchor: str) -> str:
        r = panel.results[n]
        t = r.test
        bounds = ""
        if t.low is not None:
            bounds += f'<low value="{t.low:g}" unit="{t.unit}"/>'
        if t.high is not None:
            bounds += f'<high value="{t.high:g}" unit="{t.unit}"/>'
        low = "" if t.low is None else f"{t.low:g}"
        high = "" if t.high is None else f"{t.high:g}"
        range_text = (
            f"{low}-{high} {t.unit}"
            if low and high
            else (f"&gt;{low} {t.unit}" if low else f"&lt;{high} {t.unit}")
        )
        interp = codes.Code(r.interpretation, codes.INTERPRETATIONS[r.interpretation])
        return (
            '<component><observation classCode="OBS" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.2', R21)}"
            f'<id root="{self.s.fact_uuid(f"{panel.key}:{t.loinc.code}")}"/>'
            f"{cd('code', t.loinc, codes.LOINC_OID, 'LOINC')}<text>{_ref(anchor)}</text>"
            f'<statusCode code="completed"/><effectiveTime value="{self.ts(panel.when)}"/>'
            f'<value xsi:type="PQ" value="{r.value:g}" unit="{t.unit}"/>'
            f"{cd('interpretationCode', interp, codes.INTERPRETATION_OID, 'ObservationInterpretation')}"  # noqa: E501
            f"<referenceRange><observationRange><text>{range_text}</text>"
            f'<value xsi:type="IVL_PQ">{bounds}</value></observationRange></referenceRange>'
            "</observation></component>"
        )

    def results(self) -> str:
        rows: list[tuple[str, list[str]]] = []
        entries = []
        for p_n, panel in enumerate(self.s.labs):
            comps = []
            for n, r in enumerate(panel.results):
                anchor = f"result{p_n + 1}-{n + 1}"
                when = self.s.local(panel.when).strftime("%m/%d/%Y %H:%M")
                rows.append(
                    (
                        anchor,
                        [
                            r.test.short,
                            f"{r.value:g} {r.test.unit}",
                            codes.INTERPRETATIONS[r.interpretation],
                            when,
                        ],
                    )
                )
                comps.append(self.result_obs(panel, n, anchor))
            entries.append(
                '<entry typeCode="DRIV"><organizer classCode="BATTERY" moodCode="EVN">'
                f"{tid('2.16.840.1.113883.10.20.22.4.1', R21)}"
                f'<id root="{self.s.fact_uuid(panel.key)}"/>'
                f"{cd('code', panel.panel.loinc, codes.LOINC_OID, 'LOINC')}"
                f'<statusCode code="completed"/><effectiveTime><low value="'
                f'{self.ts(panel.when)}"/><high value="{self.ts(panel.when)}"/></effectiveTime>'
                f"{''.join(comps)}</organizer></entry>"
            )
        text = (
            self.table(("Test", "Value", "Interpretation", "Date"), rows)
            if rows
            else "<paragraph>No results.</paragraph>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.3.1", R21),
            codes.Code("30954-2", "Relevant diagnostic tests/laboratory data Narrative"),
            "Results",
            text,
            "".join(entries),
            null_flavor=not rows,
        )

    def vitals(self) -> str:
        v = self.s.vitals
        when = self.ts(v.when)
        items = (
            ("bp", codes.SYSTOLIC, v.systolic, "mm[Hg]"),
            ("bp", codes.DIASTOLIC, v.diastolic, "mm[Hg]"),
            ("hr", codes.HEART_RATE, v.heart_rate, "/min"),
            ("rr", codes.RESP_RATE, v.resp_rate, "/min"),
            ("temp", codes.BODY_TEMP, v.temp_c, "Cel"),
            ("weight", codes.BODY_WEIGHT, v.weight_kg, "kg"),
            ("height", codes.BODY_HEIGHT, v.height_cm, "cm"),
            ("bmi", codes.BMI, v.bmi, "kg/m2"),
            ("spo2", codes.SPO2, v.spo2, "%"),
        )
        rows, comps = [], []
        for n, (key, code, value, unit) in enumerate(items):
            if key not in v.measured:
                continue
            anchor = f"vital{n + 1}"
            rows.append((anchor, [code.display, f"{value:g} {unit}"]))
            comps.append(
                '<component><observation classCode="OBS" moodCode="EVN">'
                f"{tid('2.16.840.1.113883.10.20.22.4.27', R20)}"
                f'<id root="{self.s.doc_uuid("vital", code.code)}"/>'
                f"{cd('code', code, codes.LOINC_OID, 'LOINC')}<text>{_ref(anchor)}</text>"
                f'<statusCode code="completed"/><effectiveTime value="{when}"/>'
                f'<value xsi:type="PQ" value="{value:g}" unit="{unit}"/>'
                "</observation></component>"
            )
        panel_code = cd(
            "code",
            codes.VITAL_SIGNS_SNOMED,
            codes.SNOMED_OID,
            "SNOMED CT",
            cd(
                "translation",
                codes.Code(
                    "74728-7",
                    "Vital signs, weight, height, "
                    "head circumference, oximetry, BMI, and "
                    "BSA panel - HL7.CCDAr1.1",
                ),
                codes.LOINC_OID,
                "LOINC",
            ),
        )
        entry = (
            '<entry typeCode="DRIV"><organizer classCode="CLUSTER" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.26', R21)}"
            f'<id root="{self.s.doc_uuid("vitals-organizer")}"/>{panel_code}'
            f'<statusCode code="completed"/><effectiveTime value="{when}"/>'
            f"{''.join(comps)}</organizer></entry>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.4.1", R21),
            codes.Code("8716-3", "Vital signs"),
            "Vital Signs",
            self.table(("Measurement", "Value"), rows),
            entry,
        )

    # -- immunizations, procedures, encounters, social history ---------------------------------
    def immunizations(self) -> str:
        rows, entries = [], []
        for n, i in enumerate(self.s.immunizations):
            anchor = f"immun{n + 1}"
            v = i.vaccine
            rows.append(
                (
                    anchor,
                    [
                        v.cvx.display,
                        human_date(self.s.local(i.when).date()),
                        f"Not given: {i.refusal.display}" if i.refusal else "Completed",
                    ],
                )
            )
            translation = cd("translation", v.ndc, codes.NDC_OID, "NDC") if v.ndc else ""
            product = cd(
                "code",
                v.cvx,
                codes.CVX_OID,
                "CVX",
                f"<originalText>{_ref(anchor + '-0')}</originalText>{translation}",
            )
            lot = "" if i.refusal else f"<lotNumberText>{esc(i.lot)}</lotNumberText>"
            refusal = ""
            if i.refusal is not None:
                refusal = (
                    '<entryRelationship typeCode="RSON"><observation classCode="OBS" '
                    f'moodCode="EVN">{tid("2.16.840.1.113883.10.20.22.4.53")}'
                    f'<id root="{self.s.fact_uuid(i.key + ":refusal")}"/>'
                    f"{cd('code', i.refusal, codes.NO_IMMUNIZATION_REASON_OID, 'HL7 ActNoImmunizationReason')}"  # noqa: E501
                    '<statusCode code="completed"/></observation></entryRelationship>'
                )
            entries.append(
                '<entry typeCode="DRIV"><substanceAdministration classCode="SBADM" '
                f'moodCode="EVN" negationInd="{"true" if i.refusal else "false"}">'
                f"{tid('2.16.840.1.113883.10.20.22.4.52', R21)}"
                f'<id root="{self.s.fact_uuid(i.key)}"/><text>{_ref(anchor)}</text>'
                f'<statusCode code="completed"/><effectiveTime value="{self.ts(i.when)}"/>'
                f"{cd('routeCode', v.route.nci, codes.NCI_OID, 'NCI Thesaurus')}"
                f'<doseQuantity value="{v.dose_ml:g}" unit="mL"/>'
                '<consumable><manufacturedProduct classCode="MANU">'
                f"{tid('2.16.840.1.113883.10.20.22.4.54', R20)}"
                f"<manufacturedMaterial>{product}{lot}</manufacturedMaterial>"
                f"</manufacturedProduct></consumable>{refusal}</substanceAdministration></entry>"
            )
        text = (
            self.table(("Vaccine", "Date", "Status"), rows)
            if rows
            else "<paragraph>No immunizations on record.</paragraph>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.2.1", R21),
            codes.Code("11369-6", "History of Immunization Narrative"),
            "Immunizations",
            text,
            "".join(entries),
            null_flavor=not rows,
        )

    def procedures(self) -> str:
        rows, entries = [], []
        for n, p in enumerate(self.s.procedures):
            anchor = f"proc{n + 1}"
            rows.append((anchor, [p.procedure.label, human_date(self.s.local(p.when).date())]))
            entries.append(
                '<entry typeCode="DRIV"><procedure classCode="PROC" moodCode="EVN">'
                f"{tid('2.16.840.1.113883.10.20.22.4.14', R20)}"
                f'<id root="{self.s.fact_uuid(p.key)}"/>'
                f"{cd('code', p.procedure.snomed, codes.SNOMED_OID, 'SNOMED CT', '<originalText>' + _ref(anchor + '-0') + '</originalText>')}"  # noqa: E501
                f'<statusCode code="completed"/><effectiveTime value="{self.ts(p.when)}"/>'
                "</procedure></entry>"
            )
        text = (
            self.table(("Procedure", "Date"), rows)
            if rows
            else "<paragraph>No procedures on record.</paragraph>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.7.1", R20),
            codes.Code("47519-4", "History of Procedures Document"),
            "Procedures",
            text,
            "".join(entries),
            null_flavor=not rows,
        )

    def encounters(self) -> str:
        e = self.s.encounter
        anchor = "encounter1"
        if e.type.cpt is not None:
            code = cd(
                "code",
                e.type.cpt,
                codes.CPT_OID,
                "CPT-4",
                f"<originalText>{_ref(anchor + '-0')}</originalText>"
                + cd("translation", e.type.snomed, codes.SNOMED_OID, "SNOMED CT"),
            )
        else:
            code = cd(
                "code",
                e.type.snomed,
                codes.SNOMED_OID,
                "SNOMED CT",
                f"<originalText>{_ref(anchor + '-0')}</originalText>",
            )
        diagnoses = "".join(
            '<entryRelationship typeCode="REFR"><act classCode="ACT" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.80', R21)}"
            f"{cd('code', codes.Code('29308-4', 'Diagnosis'), codes.LOINC_OID, 'LOINC')}"
            f'<entryRelationship typeCode="SUBJ">'
            f"{self.problem_obs(c, f'encdx{n + 1}', True)}</entryRelationship></act>"
            "</entryRelationship>"
            for n, c in enumerate(e.reasons)
        )
        dx_rows = [(f"encdx{n + 1}", [c.condition.label]) for n, c in enumerate(e.reasons)]
        rows = [
            (anchor, [e.type.snomed.display, human_date(self.s.local(e.start).date()), e.location])
        ]
        text = self.table(("Encounter", "Date", "Location"), rows)
        if dx_rows:
            text += self.table(("Diagnosis",), dx_rows)
        a = self.s.author
        entry = (
            '<entry typeCode="DRIV"><encounter classCode="ENC" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.49', R21)}"
            f'<id root="{self.s.doc_uuid("encounter")}"/>{code}<text>{_ref(anchor)}</text>'
            f'<effectiveTime><low value="{self.ts(e.start)}"/><high value="{self.ts(e.end)}"/>'
            "</effectiveTime><performer><assignedEntity>"
            f'<id extension="{a.npi}" root="{codes.NPI_OID}"/>'
            f"{cd('code', a.taxonomy, codes.NUCC_OID, 'NUCC')}</assignedEntity></performer>"
            f"{diagnoses}</encounter></entry>"
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.22.1", R21),
            codes.Code("46240-8", "History of Hospitalizations+Outpatient visits Narrative"),
            "Encounters",
            text,
            entry,
        )

    def social(self) -> str:
        sm = self.s.smoking
        template = tid("2.16.840.1.113883.10.20.22.2.17", R21)
        code = codes.Code("29762-2", "Social history Narrative")
        if sm is None:
            return self.section(
                template,
                code,
                "Social History",
                "<paragraph>Not recorded.</paragraph>",
                "",
                null_flavor=True,
            )
        recorded = dt.datetime.combine(sm.recorded, dt.time(15, 0))
        text = self.table(
            ("Social history", "Status", "Recorded"),
            [("smoking1", ["Tobacco smoking status", sm.status.display, human_date(sm.recorded)])],
        )
        entry = (
            '<entry typeCode="DRIV"><observation classCode="OBS" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.78', R20)}"
            f'<id root="{self.s.fact_uuid(sm.key)}"/>'
            f"{cd('code', codes.SMOKING_STATUS_LOINC, codes.LOINC_OID, 'LOINC')}"
            f'<text>{_ref("smoking1")}</text><statusCode code="completed"/>'
            f'<effectiveTime value="{self.ts(recorded)}"/>'
            f"{cd('value', sm.status, codes.SNOMED_OID, 'SNOMED CT', xsi=True)}"
            f"{self.author(recorded)}</observation></entry>"
        )
        return self.section(template, code, "Social History", text, entry)

    # -- discharge-summary sections ------------------------------------------------------------
    def discharge_diagnosis(self) -> str:
        dx = self.s.encounter.reasons
        rows = [(f"dischargedx{n + 1}", [c.condition.label]) for n, c in enumerate(dx)]
        entries = "".join(
            '<entry><act classCode="ACT" moodCode="EVN">'
            f"{tid('2.16.840.1.113883.10.20.22.4.33', R21)}"
            f'<id root="{self.s.fact_uuid(c.key + ":dischargedx")}"/>'
            f"{cd('code', codes.Code('11535-2', 'Hospital discharge Dx Narrative'), codes.LOINC_OID, 'LOINC')}"  # noqa: E501
            '<statusCode code="active"/>'
            f'<entryRelationship typeCode="SUBJ">'
            f"{self.problem_obs(c, f'dischargedx{n + 1}', True)}</entryRelationship>"
            "</act></entry>"
            for n, c in enumerate(dx)
        )
        return self.section(
            tid("2.16.840.1.113883.10.20.22.2.24", R21),
            codes.Code("11535-2", "Hospital discharge Dx Narrative"),
            "Discharge Diagnosis",
            self.table(("Diagnosis",), rows),
            entries,
        )

    def narrative(self, template: str, code: codes.Code, title: str, text: str) -> str:
        return self.section(template, code, title, f"<paragraph>{esc(text)}</paragraph>", "")


def _hospital_course(snap: Snapshot) -> str:
    dx = (
        snap.encounter.reasons[0].condition.label.lower()
        if snap.encounter.reasons
        else "an acute illness"
    )
    days = (snap.encounter.end.date() - snap.encounter.start.date()).days
    return (
        f"Patient was admitted with {dx}. Treated per protocol with supportive care and "
        f"monitoring over a {days}-day stay. Clinically improved, tolerating diet, "
        "ambulating independently, and stable for discharge home."
    )


def render_ccda(snap: Snapshot, discharge: bool, title: str) -> bytes:
    d = _Doc(snap)
    if discharge:
        doc_tid = tid("2.16.840.1.113883.10.20.22.1.8", R21)
        parts: list[Callable[[], str]] = [
            d.allergies,
            lambda: d.narrative(
                tid("1.3.6.1.4.1.19376.1.5.3.1.3.5", R20),
                codes.Code("8648-8", "Hospital course Narrative"),
                "Hospital Course",
                _hospital_course(snap),
            ),
            d.discharge_diagnosis,
            d.discharge_medications,
            lambda: d.problems(tuple(c for c in snap.problems if not c.key.startswith("adm:"))),
            d.procedures,
            d.results,
            d.vitals,
            d.immunizations,
            d.social,
            d.encounters,
            lambda: d.narrative(
                tid("2.16.840.1.113883.10.20.22.2.10", R20),
                codes.Code("18776-5", "Plan of care note"),
                "Plan of Treatment",
                "Follow up with primary care within 7 days. Repeat labs at follow-up visit.",
            ),
            lambda: d.narrative(
                tid("2.16.840.1.113883.10.20.22.2.41"),
                codes.Code("8653-8", "Hospital Discharge instructions"),
                "Hospital Discharge Instructions",
                "Take medications as directed. Return for fever, worsening "
                "pain, or shortness of breath.",
            ),
        ]
        head = d.header(doc_tid, codes.DOC_DISCHARGE, title)
    else:
        doc_tid = tid("2.16.840.1.113883.10.20.22.1.2", R21)
        parts = [
            d.allergies,
            d.medications,
            lambda: d.problems(snap.problems),
            d.procedures,
            d.results,
            d.vitals,
            d.immunizations,
            d.social,
            d.encounters,
        ]
        head = d.header(doc_tid, codes.DOC_CCD, title)
    body = "".join(p() for p in parts)
    return (head + body + "</structuredBody></component></ClinicalDocument>\n").encode("utf-8")
