"""The C-CDA patient check, and XML parsing that refuses hostile documents."""

from __future__ import annotations

import pytest

from ehrfetch.errors import DocumentError, UnreadableDocument, WrongPatientError
from ehrfetch.normalize.ccda_header import check_ccda_patient

CCDA = b"""<?xml version="1.0"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <recordTarget><patientRole>
    <id root="2.16.840.1.113883.19.5" extension="MRN-1"/>
    <id root="2.16.840.1.113883.4.1" extension="999-99-9999"/>
  </patientRole></recordTarget>
</ClinicalDocument>"""


def test_document_about_the_linked_patient_passes() -> None:
    check_ccda_patient(CCDA, "MRN-1")


def test_document_about_someone_else_is_refused() -> None:
    with pytest.raises(WrongPatientError, match="not the linked patient"):
        check_ccda_patient(CCDA, "MRN-2")


def test_document_naming_no_patient_is_refused() -> None:
    body = b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>x</title></ClinicalDocument>'
    with pytest.raises(WrongPatientError, match="names no patient"):
        check_ccda_patient(body, "MRN-1")


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol3;</title></ClinicalDocument>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ClinicalDocument xmlns="urn:hl7-org:v3"><recordTarget><patientRole>
<id extension="&xxe;"/></patientRole></recordTarget></ClinicalDocument>"""


@pytest.mark.parametrize(
    ("body", "error"),
    [
        pytest.param(b"<ClinicalDocument", UnreadableDocument, id="malformed"),
        pytest.param(b"<html xmlns='x'/>", UnreadableDocument, id="not CDA"),
        pytest.param(BILLION_LAUGHS, WrongPatientError, id="billion laughs"),
        pytest.param(EXTERNAL_ENTITY, DocumentError, id="external entity"),
    ],
)
def test_hostile_and_broken_documents_are_refused(body: bytes, error: type[Exception]) -> None:
    # Entities are never expanded: such documents are refused (as unreadable, or as
    # naming no patient) without reading a file or growing in memory.
    with pytest.raises(error):
        check_ccda_patient(body, "MRN-1")
