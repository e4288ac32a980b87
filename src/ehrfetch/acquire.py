"""One participant, end to end: discover, decide, retrieve, normalize, record.

Plain async Python: no orchestration here (``batch.py`` runs many participants, flows
run batches). The network client is the only thing that speaks HTTP; the store
functions are the only things that speak SQL.

What is sent to the network is the minimum that matching needs: names (current and
previous), sex, birth date, addresses (current and previous), phone and e-mail. The
SSN's last four digits stay at home: they are used to judge candidates, never sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy.orm import Session, sessionmaker

from ehrfetch.cohort.records import ParticipantRecord, PersonName, PostalAddress
from ehrfetch.errors import (
    ConsentNotInForce,
    DocumentError,
    DocumentMismatch,
    ForeignHostError,
    NetworkError,
    ResponseTooLarge,
    WrongPatientError,
)
from ehrfetch.matching.person import MatchPerson
from ehrfetch.matching.policy import Candidate, MatchPolicy, decide
from ehrfetch.network import (
    AttachmentRef,
    DocumentRefEntry,
    FetchedAttachment,
    NetworkClient,
    Organization,
    verify,
)
from ehrfetch.normalize.ccda import normalize_ccda
from ehrfetch.normalize.fhir_bundle import normalize_bundle
from ehrfetch.provenance import SourceDocument, build_provenance, provenance_id
from ehrfetch.store.batches import AttemptResult, Member
from ehrfetch.store.cohort import CohortRules
from ehrfetch.store.documents import (
    DerivedResource,
    DocumentToSave,
    FetchedDocument,
    SaveOutcome,
    quarantine_document,
    save_documents,
    stored_document_ids,
)
from ehrfetch.store.links import LinkRow, accepted_links, links_of, save_links
from ehrfetch.store.purge import consent_gate, consent_in_force_among
from ehrfetch.store.tables import AttemptOutcome, DocumentStatus, LinkDecision, PatientLink

log = logging.getLogger(__name__)
T = TypeVar("T")

FHIR_JSON = ("application/fhir+json", "application/json+fhir", "application/json")
CDA_XML = ("application/hl7-v3+xml", "application/xml", "text/xml", "application/cda+xml")
# A body whose size or hash disagrees with its reference may have been cut short on the
# way (proxies do that): it is fetched this many more times before it is quarantined.
REFETCHES_ON_MISMATCH = 2
# Documents of one participant waiting to be written are written early past this size,
# so a participant with many large documents does not hold them all in memory.
PENDING_BYTES = 8 * 1024 * 1024
# Attachments in the order ehrfetch prefers when a DocumentReference offers several
# renditions of one document: structured first.
_PREFERENCE = ("application/fhir+json", "application/hl7-v3+xml", "application/xml", "text/xml")


@dataclass(frozen=True)
class AcquireContext:
    """What every participant of a batch shares."""

    sessions: sessionmaker[Session]
    network: NetworkClient
    organizations: tuple[Organization, ...]
    rules: CohortRules
    """For the consent re-check in each store transaction."""
    policy: MatchPolicy
    purpose_of_use: str
    match_count: int
    clock: Callable[[], datetime]
    store_threads: Executor
    """Where store transactions run (``in_store``): the batch's own threads."""
    consent: ConsentWatch
    """Whose consent is still in force, read for the batch's waiting participants."""
    linked: frozenset[int]
    """The batch's participants with links stored when it began. Links are made only
    by a participant's own attempt, and a participant is in one running batch at most,
    so the others have none to read."""
    region: str = "US"
    retrieve: bool = True


class ConsentWatch:
    """Whose consent is in force among a batch's participants not yet looked up.

    A withdrawal can come while a batch runs; a participant whose consent is no longer
    in force when their turn comes is not looked up (their demographics go nowhere).
    Reading that per participant was one store round trip each; this reads it for the
    next ``window`` waiting participants at once (they start in the batch's order), and
    again for a participant the last reading did not cover or that began more than
    ``max_age_s`` before they asked. Writes do not rely on it: each re-checks under the
    participant's lock (``consent_gate``).
    """

    def __init__(
        self,
        participant_ids: Iterable[int],
        max_age_s: float,
        *,
        window: int = 1000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        # A dict for its order: readings take the next ones to start, so one of a large
        # batch stays one statement and does not re-read those far from their turn.
        self._waiting = dict.fromkeys(participant_ids)
        self._max_age_s = max_age_s
        self._window = window
        self._monotonic = monotonic
        self._read: frozenset[int] = frozenset()
        self._in_force: frozenset[int] = frozenset()
        self._read_at = -math.inf
        # One reading at a time; those who asked while it ran use it if it is fresh
        # enough for them, or start the next one.
        self._lock = asyncio.Lock()

    async def in_force(self, ctx: AcquireContext, participant_id: int) -> bool:
        asked = self._monotonic()
        async with self._lock:
            if participant_id not in self._read or self._read_at < asked - self._max_age_s:
                began = self._monotonic()
                ids = frozenset(islice(self._waiting, self._window)) | {participant_id}
                self._in_force = await in_store(
                    ctx,
                    lambda session: consent_in_force_among(session, ids, ctx.rules),
                    write=False,
                )
                self._read, self._read_at = ids, began
            self._waiting.pop(participant_id, None)
            return participant_id in self._in_force


@dataclass
class _Tally:
    documents: int = 0
    resources: int = 0
    stored_before: int = 0
    """Documents the organizations still list that an earlier attempt stored: a run that
    died after storing them but before recording the attempt's outcome (outcomes are
    written about once a second) must not call the retry "no documents"."""
    errors: list[str] = field(default_factory=list)
    withdrawn: bool = False
    saves: list[DocumentToSave] = field(default_factory=list)
    quarantines: list[Callable[[Session], None]] = field(default_factory=list)
    """Fetched documents to save or quarantine, written in one transaction."""
    pending_bytes: int = 0


# SQLite has one writer. Its busy handler makes a blocked writer sleep 1, 2, 5 … 100 ms
# before it looks again, so writers of one process queue here instead and each gets the
# file the moment the last one commits (PostgreSQL locks rows and needs none of this).
_SQLITE_WRITER = threading.Lock()


def _transaction(
    sessions: sessionmaker[Session], work: Callable[[Session], T], *, write: bool
) -> T:
    bind = sessions.kw.get("bind")
    if write and bind is not None and bind.dialect.name == "sqlite":
        with _SQLITE_WRITER, sessions.begin() as session:
            return work(session)
    with sessions.begin() as session:
        return work(session)


async def in_store(ctx: AcquireContext, work: Callable[[Session], T], *, write: bool = True) -> T:
    """Run ``work`` in one transaction on a worker thread.

    The event loop carries every network call of the batch: it must never wait for the
    database (SQLite's single writer lock held by another batch, a slow PostgreSQL).
    ``write=False``: the work only reads (no queueing for SQLite's writer).
    """
    call = partial(_transaction, ctx.sessions, work, write=write)
    # As asyncio.to_thread does, with the context copied (logging and Prefect read it).
    return await asyncio.get_running_loop().run_in_executor(
        ctx.store_threads, contextvars.copy_context().run, call
    )


async def acquire_participant(
    ctx: AcquireContext,
    member: Member,
    record: ParticipantRecord,
    *,
    housemates: tuple[str, ...] = (),
) -> AttemptResult:
    rid = member.research_id
    pid = member.participant_id
    # Withdrawn since the batch was selected: their demographics are not sent anywhere.
    # (A read: every write below re-checks under the participant's lock.)
    if not await ctx.consent.in_force(ctx, pid):
        return AttemptResult(AttemptOutcome.WITHDRAWN)
    person = MatchPerson.from_record(record)
    answers = await ctx.network.match_everywhere(
        ctx.organizations, match_query(record), count=ctx.match_count, research_id=rid
    )
    links: list[LinkRow] = []
    tally = _Tally()
    for answer in answers:
        if answer.error is not None:
            log.warning(
                "%s: $match at %s failed: %s", rid, answer.organization.id, answer.error.code
            )
            tally.errors.append(answer.error.code)
            continue
        candidates = [
            Candidate(
                MatchPerson.from_fhir_patient(c.resource, region=ctx.region), c.score, c.grade
            )
            for c in answer.candidates
        ]
        decision = decide(person, candidates, ctx.policy, housemates=housemates)
        for verdict, candidate in zip(decision.candidates, answer.candidates, strict=True):
            links.append(
                LinkRow(
                    organization_id=answer.organization.id,
                    network_patient_id=candidate.network_patient_id,
                    grade=candidate.grade,
                    network_score=candidate.score,
                    score=verdict.score,
                    decision=verdict.decision,
                    reasons=verdict.reasons,
                )
            )

    def store_links(
        session: Session,
    ) -> tuple[dict[Any, PatientLink], list[PatientLink], dict[tuple[str, str], DocumentStatus]]:
        if links:
            saved = save_links(session, pid, links, ctx.clock(), rules=ctx.rules)
        else:
            # No candidate now, but links from before (an operator may have accepted
            # one since): nothing to write, so no lock and no consent gate (every write
            # re-checks), only what is stored.
            saved = links_of(session, pid)
        # Accepted links include an operator's accept from the review queue.
        accepted = accepted_links(saved.values())
        known = stored_document_ids(session, pid) if accepted and ctx.retrieve else {}
        return saved, accepted, known

    try:
        if links or pid in ctx.linked:
            saved, accepted, known = await in_store(ctx, store_links, write=bool(links))
        else:
            # No candidate now, no link from before: nothing to write or read.
            saved, accepted, known = {}, [], {}
    except ConsentNotInForce:
        log.info("%s: consent withdrawn during acquisition; nothing is stored", rid)
        return AttemptResult(AttemptOutcome.WITHDRAWN)
    in_review = any(link.decision is LinkDecision.REVIEW for link in saved.values())

    orgs = {org.id: org for org in ctx.organizations}
    for link in accepted if ctx.retrieve else []:
        org = orgs.get(link.organization_id)
        if org is None:
            continue  # the organization left the network
        await _retrieve(ctx, member, link, org, known, tally)
        if tally.withdrawn:
            break
    await _write_pending(ctx, member, tally)
    if tally.withdrawn:
        return AttemptResult(AttemptOutcome.WITHDRAWN, links_accepted=len(accepted))
    return _outcome(accepted, in_review, tally)


async def _write_pending(ctx: AcquireContext, member: Member, tally: _Tally) -> None:
    """Write the fetched documents in one transaction (one per participant, or more
    when they are large): per-transaction cost, not per-row, dominated the store."""
    if not tally.saves and not tally.quarantines:
        return
    saves, quarantines = tally.saves, tally.quarantines
    tally.saves, tally.quarantines, tally.pending_bytes = [], [], 0

    def write(session: Session) -> bool:
        # The participant's lock and consent check once, for all of their documents.
        if not consent_gate(session, member.participant_id, ctx.rules):
            return False
        for quarantine in quarantines:
            quarantine(session)
        for result in save_documents(session, saves, ctx.rules, consent_checked=True):
            if result.outcome is SaveOutcome.STORED:
                tally.documents += 1
                tally.resources += result.resources
        return True

    if not await in_store(ctx, write):
        tally.withdrawn = True
        log.info(
            "%s: consent withdrawn during acquisition; nothing more is stored", member.research_id
        )


def _outcome(accepted: list[PatientLink], in_review: bool, tally: _Tally) -> AttemptResult:
    if accepted:
        stored = tally.documents or tally.stored_before
        outcome = AttemptOutcome.RETRIEVED if stored else AttemptOutcome.NO_DOCUMENTS
    elif in_review:
        outcome = AttemptOutcome.NEEDS_REVIEW
    elif tally.errors:
        # Not every organization could be asked: "found nowhere" would be a guess.
        outcome = AttemptOutcome.FAILED
    else:
        outcome = AttemptOutcome.NO_MATCH
    return AttemptResult(
        outcome,
        error_code=tally.errors[0] if tally.errors else None,
        error_detail=", ".join(sorted(set(tally.errors))) if tally.errors else None,
        links_accepted=len(accepted),
        documents=tally.documents,
        resources=tally.resources,
    )


async def _retrieve(
    ctx: AcquireContext,
    member: Member,
    link: PatientLink,
    org: Organization,
    known: dict[tuple[str, str], DocumentStatus],
    tally: _Tally,
) -> None:
    rid = member.research_id
    try:
        async for entry in ctx.network.documents(org, link.network_patient_id, rid):
            state = known.get((org.id, entry.id))
            if state is not None:  # fetched by an earlier run (stored or quarantined)
                if state == DocumentStatus.STORED:
                    tally.stored_before += 1
                continue
            await _one_document(ctx, member, link, org, entry, tally)
            if tally.pending_bytes > PENDING_BYTES:
                await _write_pending(ctx, member, tally)
            if tally.withdrawn:
                return
    except NetworkError as error:
        # Paging loops, a dead search: the documents read so far are kept.
        log.warning("%s: document search at %s stopped: %s", rid, org.id, error.code)
        tally.errors.append(error.code)


async def _one_document(
    ctx: AcquireContext,
    member: Member,
    link: PatientLink,
    org: Organization,
    entry: DocumentRefEntry,
    tally: _Tally,
) -> None:
    rid = member.research_id
    ref = _preferred(entry.attachments)
    if ref is None:
        tally.errors.append("no_attachment")
        return
    base = FetchedDocument(
        participant_id=member.participant_id,
        organization_id=org.id,
        link_id=link.id,
        document_reference_id=entry.id,
        url=ref.url,
        content_type=ref.content_type or "application/octet-stream",
        declared_size=ref.size,
        declared_sha1=ref.sha1,
        computed_sha1=None,
        sha256=None,
        size=None,
        content=None,
    )
    if not _about(entry, link.network_patient_id):
        _quarantine(
            ctx, tally, base, "the DocumentReference is about another patient", "wrong_patient"
        )
        return
    try:
        fetched = await _fetch_verified(ctx, org, ref, rid)
    except (ForeignHostError, ResponseTooLarge) as error:
        _quarantine(ctx, tally, base, str(error), error.code)
        return
    except NetworkError as error:
        # Transient or server-side: nothing recorded, so the next run tries again.
        log.warning("%s: fetching a document at %s failed: %s", rid, org.id, error.code)
        tally.errors.append(error.code)
        return
    except DocumentMismatch as error:
        _quarantine(ctx, tally, base, str(error), error.code)
        return
    document = _with_bytes(base, fetched)
    try:
        resources = _normalize(document, fetched, rid, link.network_patient_id)
    except WrongPatientError as error:
        _quarantine(ctx, tally, document, str(error), error.code)
        return
    except DocumentError as error:
        _quarantine(ctx, tally, document, str(error), error.code, keep_content=True)
        return
    source = SourceDocument(
        organization_id=org.id,
        organization_name=org.name,
        document_reference_id=entry.id,
        url=ref.url,
        sha256=fetched.sha256_hex,
        sha1=fetched.sha1_b64,
        content_type=document.content_type,
    )
    now = ctx.clock()

    def provenance(targets: Sequence[tuple[str, str]]) -> tuple[str, dict[str, Any]]:
        body = build_provenance(
            research_id=rid,
            source=source,
            targets=targets,
            purpose_of_use=ctx.purpose_of_use,
            recorded=now,
        )
        return provenance_id(rid, source), body

    tally.saves.append(DocumentToSave(document, resources, provenance, now))
    tally.pending_bytes += fetched.size


async def _fetch_verified(
    ctx: AcquireContext, org: Organization, ref: AttachmentRef, rid: str
) -> FetchedAttachment:
    for tries_left in range(REFETCHES_ON_MISMATCH, -1, -1):
        fetched = await ctx.network.fetch_attachment(org, ref, rid)
        try:
            verify(fetched)
        except DocumentMismatch:
            if not tries_left:
                raise
            log.info("%s: document at %s does not match its reference; fetching again", rid, org.id)
        else:
            return fetched
    raise AssertionError("unreachable")


def _normalize(
    document: FetchedDocument, fetched: FetchedAttachment, rid: str, patient_id: str
) -> list[DerivedResource]:
    """Resources from a FHIR Bundle or a C-CDA document, each checked first to be about
    the linked patient; PDF and text are stored as they are."""
    kind = document.content_type.split(";")[0].strip().lower()
    if kind in CDA_XML:
        normalized = normalize_ccda(fetched.body, research_id=rid, patient_id=patient_id)
    elif kind in FHIR_JSON:
        normalized = normalize_bundle(fetched.body, research_id=rid, patient_id=patient_id)
    else:
        return []  # PDF and text: stored and referenced, not parsed
    for skipped in normalized.skipped:
        log.info("%s: skipped entry %d of a document: %s", rid, skipped.index, skipped.reason)
    return [
        DerivedResource(r.resource_type, r.fhir_id, r.dedup_key, r.body, r.source_id)
        for r in normalized.resources
    ]


def _preferred(attachments: tuple[AttachmentRef, ...]) -> AttachmentRef | None:
    if not attachments:
        return None

    def rank(ref: AttachmentRef) -> int:
        kind = (ref.content_type or "").split(";")[0].strip().lower()
        return _PREFERENCE.index(kind) if kind in _PREFERENCE else len(_PREFERENCE)

    return min(attachments, key=rank)


def _about(entry: DocumentRefEntry, patient_id: str) -> bool:
    reference = entry.subject_reference
    if reference is None:
        return True  # nothing claimed; the document's own content is checked later
    return reference.rstrip("/").split("/")[-1] == patient_id


def _with_bytes(base: FetchedDocument, fetched: FetchedAttachment) -> FetchedDocument:
    return replace(
        base,
        computed_sha1=fetched.sha1_b64,
        sha256=fetched.sha256_hex,
        size=fetched.size,
        content=fetched.body,
    )


def _quarantine(
    ctx: AcquireContext,
    tally: _Tally,
    document: FetchedDocument,
    reason: str,
    code: str,
    *,
    keep_content: bool = False,
) -> None:
    """Queue the refusal with the participant's other writes."""
    log.warning("document quarantined: %s", code)
    now = ctx.clock()

    def write(session: Session) -> None:
        quarantine_document(
            session,
            document,
            reason=reason,
            code=code,
            now=now,
            keep_content=keep_content,
            rules=ctx.rules,
            consent_checked=True,
        )

    tally.quarantines.append(write)
    tally.pending_bytes += len(document.content or b"")


def match_query(record: ParticipantRecord) -> dict[str, Any]:
    """The FHIR Patient sent to ``$match``: what matching needs and no more."""
    names = [_human_name(record.name, "official")]
    names += [_human_name(n, "old") for n in record.previous_names]
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "name": names,
        "gender": record.sex.value,
        "birthDate": record.birth_date.isoformat(),
    }
    addresses = [_address(record.address, "home")] if record.address else []
    addresses += [_address(a, "old") for a in record.previous_addresses]
    if addresses:
        resource["address"] = addresses
    telecom = []
    if record.phone:
        telecom.append({"system": "phone", "value": record.phone})
    if record.email:
        telecom.append({"system": "email", "value": record.email})
    if telecom:
        resource["telecom"] = telecom
    return resource


def _human_name(name: PersonName, use: str) -> dict[str, Any]:
    given = [part for part in (name.given, name.middle) if part]
    out: dict[str, Any] = {"use": use, "family": name.family}
    if given:
        out["given"] = given
    if name.suffix:
        out["suffix"] = [name.suffix]
    return out


def _address(address: PostalAddress, use: str) -> dict[str, Any]:
    out: dict[str, Any] = {"use": use}
    lines = [line for line in (address.line1, address.line2) if line]
    if lines:
        out["line"] = lines
    parts = {"city": address.city, "state": address.state, "postalCode": address.postal_code}
    out.update({key: value for key, value in parts.items() if value})
    return out
