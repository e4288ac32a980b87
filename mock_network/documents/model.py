"""The public value types of the document generator (the other mock-network modules use these)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class DocSubject:
    """Who a document is about, as one organization knows them."""

    person_key: int  # stable per true person: the same clinical facts recur across orgs
    patient_id: str  # the org-local Patient id the documents are about
    given: str
    family: str
    birth_date: datetime.date
    sex: str  # FHIR administrative gender: male|female|other|unknown


@dataclass(frozen=True)
class DocumentMix:
    """Relative weights of the document kinds an organization serves."""

    fhir: float = 0.5
    ccda: float = 0.33
    pdf: float = 0.09
    text: float = 0.08


@dataclass(frozen=True)
class GeneratedDocument:
    doc_id: str
    content_type: str
    body: bytes
    title: str
    type_code: str  # LOINC document type (34133-9, 18842-5, 11506-3, ...)
    date: datetime.datetime  # timezone-aware
