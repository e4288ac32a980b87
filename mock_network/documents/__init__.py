"""Clinical documents for the mock network: FHIR Bundles, C-CDA R2.1, PDFs and plain text.

Everything is a pure function of its arguments (no wall clock, no global random state), so
the same Binary URL always returns the same bytes. Clinical facts come from the person
(``DocSubject.person_key`` and the seed); each organization's documents carry the subset of
them it knows, so the same fact often appears at two organizations.
"""

from .generate import (
    CCDA_XML,
    FHIR_JSON,
    PDF,
    PLAIN_XML,
    TEXT,
    document_count,
    make_doc_id,
    make_document,
    parse_doc_id,
)
from .model import DocSubject, DocumentMix, GeneratedDocument

__all__ = [
    "CCDA_XML",
    "FHIR_JSON",
    "PDF",
    "PLAIN_XML",
    "TEXT",
    "DocSubject",
    "DocumentMix",
    "GeneratedDocument",
    "document_count",
    "make_doc_id",
    "make_document",
    "parse_doc_id",
]
