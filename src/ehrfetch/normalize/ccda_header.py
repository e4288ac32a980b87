"""Who a C-CDA document is about, checked before it is kept.

The document's ``recordTarget/patientRole/id`` elements must include the linked
patient's id at the organization; a C-CDA about anyone else is a stranger's record
and is refused whole. (Reading the document's entries is the C-CDA reader's job.)
"""

from __future__ import annotations

from lxml import etree

from ehrfetch.errors import UnreadableDocument, WrongPatientError
from ehrfetch.normalize.xml import parse_xml

CDA_NS = "urn:hl7-org:v3"
_NS = {"cda": CDA_NS}
# Compiled once: an XPath string is otherwise compiled again on every document.
_PATIENT_IDS = etree.XPath("cda:recordTarget/cda:patientRole/cda:id/@extension", namespaces=_NS)


def check_ccda_patient(body: bytes, patient_id: str) -> None:
    check_ccda_patient_root(parse_xml(body), patient_id)


def check_ccda_patient_root(root: etree._Element, patient_id: str) -> None:
    """:func:`check_ccda_patient` on a document already parsed (the reader's own parse)."""
    if root.tag != f"{{{CDA_NS}}}ClinicalDocument":
        raise UnreadableDocument("not a CDA document (no ClinicalDocument root)")
    ids = _PATIENT_IDS(root)
    if not ids:
        raise WrongPatientError("the document names no patient (no recordTarget id)")
    if patient_id not in {str(value).strip() for value in ids}:
        raise WrongPatientError("the document's patient is not the linked patient")
