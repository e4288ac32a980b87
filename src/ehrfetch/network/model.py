"""What the network client hands back: plain frozen values, no HTTP objects.

FHIR resources stay JSON dicts (as the network sent them, after validation): the
matching and normalizing stages read them as data and must not depend on a model
library's object graph.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from ehrfetch.errors import NetworkError

Operation = Literal["token", "directory", "match", "search_documents", "fetch_document", "metadata"]


@dataclass(frozen=True, slots=True)
class Organization:
    """A member organization as the directory lists it."""

    id: str
    name: str
    base_url: str
    """FHIR base URL (``Endpoint.address``), without a trailing slash."""
    host: str
    """``host[:port]`` of ``base_url``: the only place its attachments may come from."""


@dataclass(frozen=True, slots=True)
class MatchCandidate:
    """One entry of a ``$match`` answer."""

    network_patient_id: str
    resource: dict[str, Any]
    """The organization's FHIR Patient, as JSON."""
    score: float | None
    grade: str | None
    """The ``match-grade`` code: certain, probable, possible, certainly-not."""
    rank: int
    """1 for the best candidate."""


@dataclass(frozen=True, slots=True)
class OrgMatch:
    """One organization's answer to a participant's lookup: candidates, or why not."""

    organization: Organization
    candidates: tuple[MatchCandidate, ...] = ()
    error: NetworkError | None = None
    """Set when the call failed after its retries; the other organizations went on."""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class AttachmentRef:
    """An attachment as a DocumentReference declares it (nothing fetched yet)."""

    url: str
    content_type: str | None
    size: int | None
    sha1: str | None
    """Base64 SHA-1 of the raw bytes (FHIR R4 ``Attachment.hash``), as declared."""


@dataclass(frozen=True, slots=True)
class DocumentRefEntry:
    """One DocumentReference found by a search."""

    id: str
    resource: dict[str, Any]
    attachments: tuple[AttachmentRef, ...]
    subject_reference: str | None
    """``subject.reference`` as sent (``Patient/123``), for the wrong-patient check."""


@dataclass(frozen=True, slots=True)
class FetchedAttachment:
    """The bytes behind an attachment URL, with the digests computed from them."""

    ref: AttachmentRef
    body: bytes = field(repr=False)
    sha1_b64: str = field(init=False)
    sha256_hex: str = field(init=False)
    size: int = field(init=False)

    def __post_init__(self) -> None:
        # Computed here, not passed in, so a FetchedAttachment can never carry digests
        # that disagree with its bytes.
        sha1 = hashlib.sha1(self.body, usedforsecurity=False).digest()
        object.__setattr__(self, "sha1_b64", base64.b64encode(sha1).decode("ascii"))
        object.__setattr__(self, "sha256_hex", hashlib.sha256(self.body).hexdigest())
        object.__setattr__(self, "size", len(self.body))


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One outbound call, after all its tries, for the audit trail.

    Deliberately poor: no URL (queries carry patient ids), no body, no demographics,
    no token. ``outcome`` is ``"ok"`` or the error's stable code (``http_503``,
    ``transport``, ``foreign_host`` …).
    """

    organization_id: str | None
    """None for the network's own endpoints (directory, token)."""
    operation: Operation
    status: int | None
    """The last HTTP status received; None when no answer came (or nothing was sent)."""
    outcome: str
    duration_ms: int
    """Wall time of the whole call: tries, backoff waits and rate-limit pacing included."""
    tries: int
    """HTTP requests sent (0 when the call was refused before sending anything)."""
    research_id: str | None
    started_at: datetime | None = None
    """When the call began (UTC)."""
    purpose_of_use: str | None = None
    """The purpose of use the call's token was bound to (None for the directory)."""
