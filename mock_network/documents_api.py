"""Documents as an organization serves them: references, attachments, hashes and paging.

The bytes come from `mock_network.documents` (a pure function of subject, org, seed and
index); this module owns everything around them: Binary ids, declared size and SHA-1,
pages, and the document faults, which it applies itself (a wrong hash or size in the
reference, another patient's document behind the URL, a foreign host, an oversized file,
a `next` link that loops).

Binary ids are `{patient_id}-{index}` plus `-wp` (wrong patient) or `-ov` (oversized) when
that document carries the fault, so the reference and the attachment agree without state.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from mock_network.config import NetworkConfig, OrgConfig
from mock_network.documents import DocSubject, DocumentMix, document_count, make_document
from mock_network.population import Population
from mock_network.rand import int_for

_FILLER = (
    b"Addendum: dictation continued. Vital signs reviewed, medications reconciled, "
    b"plan discussed with the patient, who voiced understanding and agreement.\n"
)


@dataclass(frozen=True)
class Served:
    """One attachment exactly as served: content type, bytes (or a size for streamed
    oversized bodies), SHA-1, and the facts its DocumentReference tells."""

    doc_id: str
    content_type: str
    body: bytes
    size: int
    sha1: bytes
    title: str
    type_code: str
    date: dt.datetime
    streamed: bool


@dataclass(frozen=True)
class BinaryId:
    patient_id: str
    index: int
    wrong_patient: bool
    oversized: bool

    def __str__(self) -> str:
        return (
            f"{self.patient_id}-{self.index}"
            + ("-wp" if self.wrong_patient else "")
            + ("-ov" if self.oversized else "")
        )

    @classmethod
    def parse(cls, text: str) -> BinaryId | None:
        parts = text.split("-")
        if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
            return None
        flags = set(parts[2:])
        if not flags <= {"wp", "ov"} or len(flags) != len(parts) - 2:
            return None
        return cls(parts[0], int(parts[1]), "wp" in flags, "ov" in flags)


class DocumentStore:
    def __init__(self, config: NetworkConfig, population: Population) -> None:
        self.config = config
        self.population = population
        docs = config.documents
        self.mix = DocumentMix(fhir=docs.fhir, ccda=docs.ccda, pdf=docs.pdf, text=docs.text)
        self.served = functools.lru_cache(maxsize=2048)(self._served)
        self._oversized_sha1 = functools.lru_cache(maxsize=64)(self._oversized_digest)

    def subject(self, index: int, org_id: str) -> DocSubject:
        record = self.population.record(index, org_id)
        if record is not None:
            return DocSubject(
                index, record.patient_id, record.given, record.family, record.birth_date, record.sex
            )
        person = self.population.person(index)  # another patient, for wrong_patient
        return DocSubject(
            index,
            self.population.patient_id(index, org_id),
            person.given,
            person.family,
            person.birth_date,
            person.sex,
        )

    def count(self, index: int, org_id: str) -> int:
        docs = self.config.documents
        return document_count(
            self.subject(index, org_id), org_id, self.config.population.seed, docs.low, docs.high
        )

    def other_patient(self, index: int, org_id: str, doc_index: int) -> int:
        size = self.population.size
        step = 1 + int_for(
            self.config.population.seed, "other-patient", org_id, index, doc_index
        ) % (size - 1)
        return (index + step) % size

    def _served(
        self, org: OrgConfig, index: int, doc_index: int, wrong_patient: bool, oversized: bool
    ) -> Served:
        about = self.other_patient(index, org.id, doc_index) if wrong_patient else index
        generated = make_document(
            self.subject(about, org.id),
            org.id,
            org.name,
            self.config.population.seed,
            doc_index,
            self.mix,
        )
        if oversized:
            size = self.config.documents.oversized_bytes
            return Served(
                generated.doc_id,
                "text/plain",
                b"",
                size,
                self._oversized_sha1(size),
                generated.title,
                generated.type_code,
                generated.date,
                True,
            )
        return Served(
            generated.doc_id,
            generated.content_type,
            generated.body,
            len(generated.body),
            hashlib.sha1(generated.body).digest(),  # noqa: S324 (FHIR R4 Attachment.hash is SHA-1)
            generated.title,
            generated.type_code,
            generated.date,
            False,
        )

    @staticmethod
    def oversized_chunks(size: int) -> Iterator[bytes]:
        """The same bytes every time: the filler line repeated, cut at `size`."""
        chunk = _FILLER * (65_536 // len(_FILLER))
        sent = 0
        while sent < size:
            part = chunk[: size - sent]
            sent += len(part)
            yield part

    def _oversized_digest(self, size: int) -> bytes:
        digest = hashlib.sha1()  # noqa: S324 (FHIR R4 Attachment.hash is SHA-1)
        for part in self.oversized_chunks(size):
            digest.update(part)
        return digest.digest()
