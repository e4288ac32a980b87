"""The network client: one per batch.

Every outbound call goes the same way::

    retry policy (tenacity, retry.py) around each try:
        rate limiter (per organization)  ->  token (cached; once more after a 401)
        ->  send (no redirects across origins)  ->  read with the size cap
        ->  status check  ->  parse (JSON, FHIR validation)
    ->  one CallRecord to ``on_call`` (which must not raise: it is the audit trail)

Retried: 429, 500/502/503/504, transport errors (refused, reset, timed out, dropped
mid-body) and a JSON body cut short. Not retried: other statuses, JSON broken in the
middle, invalid FHIR, a body past the size cap, a foreign host.

Pacing sits inside the retry loop on purpose: a retry is a request too, and counting it
is what keeps ehrfetch under an organization's limit while it recovers.

Refusals made without sending anything (an attachment or ``next`` link on a foreign
host, a ``next`` link already followed) are recorded as calls with ``tries=0``, so the
audit trail shows what was not asked as well as what was.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urljoin

import httpx
import orjson

from ehrfetch.errors import (
    AuthError,
    DocumentMismatch,
    ForeignHostError,
    HTTPStatusError,
    InvalidResponse,
    NetworkError,
    PagingLoopError,
    TransportError,
    sanitize_url,
)
from ehrfetch.network import _fhir, retry
from ehrfetch.network._urls import canonical, host_of, resolve, same_origin
from ehrfetch.network.auth import AccessToken, TokenSource
from ehrfetch.network.directory import parse_directory
from ehrfetch.network.model import (
    AttachmentRef,
    CallRecord,
    DocumentRefEntry,
    FetchedAttachment,
    MatchCandidate,
    Operation,
    Organization,
    OrgMatch,
)
from ehrfetch.network.ratelimit import RateLimiters, shared_limiters
from ehrfetch.network.transport import ERROR_BODY_BYTES, build_client, read_capped
from ehrfetch.settings import NetworkSettings

log = logging.getLogger("ehrfetch.network.client")

FHIR_JSON = "application/fhir+json"
NETWORK_KEY = "(network)"
"""Rate-limiter key of the network's own endpoints (directory, token)."""
MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
HASH_OFF_LOOP_BYTES = 1024 * 1024
"""Bodies at least this large are hashed in a worker thread (hashlib drops the GIL)."""
URL_CACHE_SIZE = 256
"""Parsed URLs kept per client (``$match`` URLs repeat; search and attachment URLs not)."""
HEADER_CACHE_SIZE = 16
"""Header sets kept per client: one per kind of call and token."""

T = TypeVar("T")
OnCall = Callable[[CallRecord], None]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_TOKEN_CODE = re.compile(r"^[A-Za-z0-9_.:/-]{1,64}$")
_URL_IN_TEXT = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class _Request:
    operation: Operation
    org: Organization | None
    method: str
    url: str
    research_id: str | None
    max_bytes: int
    accept: str = FHIR_JSON
    content: bytes | None = None
    content_type: str | None = None
    form: Callable[[], Mapping[str, str]] | None = None
    authenticated: bool = True

    @property
    def org_id(self) -> str | None:
        return self.org.id if self.org is not None else None

    def but(self, **changes: Any) -> _Request:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str


@dataclass(slots=True)
class _CallState:
    tries: int = 0
    status: int | None = None
    refreshed: bool = False
    purpose: str | None = None


@dataclass(slots=True)
class _Paging:
    """What one DocumentReference search has read so far."""

    max_pages: int
    pages: int = 0
    seen_urls: set[str] = field(default_factory=set)
    seen_ids: set[str] = field(default_factory=set)


class NetworkClient:
    """Directory, $match, DocumentReference search and attachment retrieval.

    ``async with NetworkClient(settings, tokens) as network: ...`` — one per batch: the
    connection pool, the directory and the rate limiters live as long as it does.
    ``sleep`` and ``clock`` (monotonic) pace and back off; ``wall_clock`` dates calls
    and reads ``Retry-After`` dates. Tests inject all three and never wait.
    """

    def __init__(
        self,
        settings: NetworkSettings,
        tokens: TokenSource,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        on_call: OnCall | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
        pacing_dir: Path | None = None,
    ) -> None:
        """``pacing_dir``: pace with every process pacing there (see ratelimit.py)."""
        self._settings = settings
        self._tokens = tokens
        self._http = build_client(settings, transport)
        self._on_call = on_call
        self._clock = clock
        self._wall_clock = wall_clock
        self._policy = retry.build_policy(settings, sleep)
        if sleep is asyncio.sleep and clock is time.monotonic:
            # Real time: pace with every other client of this process (see ratelimit.py).
            self._limiters = shared_limiters(
                settings.requests_per_second,
                settings.burst,
                settings.org_requests_per_second,
                pacing_dir,
            )
        else:
            self._limiters = RateLimiters(
                settings.requests_per_second,
                settings.burst,
                settings.org_requests_per_second,
                clock=clock,
                sleep=sleep,
            )
        self._directory: list[Organization] | None = None
        self._directory_lock = asyncio.Lock()
        # Made once, used by every request (see _build).
        self._timeout = self._http.timeout.as_dict()
        self._urls: dict[str, tuple[httpx.URL, str]] = {}
        self._header_sets: dict[tuple[str, str | None, AccessToken | None], httpx.Headers] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the public calls ---------------------------------------------------------

    async def directory(self) -> list[Organization]:
        """The member organizations; fetched once for the client's life."""
        async with self._directory_lock:
            if self._directory is None:
                request = self._request("directory", None, "GET", self._settings.directory_url)
                self._directory = await self._call(
                    request.but(authenticated=False),
                    lambda answer: parse_directory(answer.body, url=answer.url),
                )
            return list(self._directory)

    async def metadata(self, org: Organization) -> dict[str, Any]:
        """The organization's CapabilityStatement (needs no token)."""
        request = self._request("metadata", org, "GET", f"{org.base_url}/metadata")
        return await self._call(
            request.but(authenticated=False),
            lambda answer: _fhir.validate(
                _fhir.load_object(answer.body, self._invalid(org, answer.url)),
                "CapabilityStatement",
                self._invalid(org, answer.url),
            ),
        )

    async def match(
        self,
        org: Organization,
        patient: Mapping[str, Any],
        *,
        count: int = 5,
        only_certain: bool = False,
        research_id: str | None = None,
    ) -> list[MatchCandidate]:
        """``Patient/$match`` at one organization: its candidates, best first."""
        if count < 1:
            raise ValueError("count must be at least 1")
        parameters = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "resource", "resource": dict(patient)},  # orjson takes dicts only
                {"name": "count", "valueInteger": count},
                {"name": "onlyCertainMatches", "valueBoolean": only_certain},
            ],
        }
        request = self._request(
            "match",
            org,
            "POST",
            f"{org.base_url}/Patient/$match",
            research_id,
            content=orjson.dumps(parameters),
            content_type=FHIR_JSON,
        )
        return await self._call(
            request,
            lambda answer: _fhir.match_candidates(answer.body, self._invalid(org, answer.url)),
        )

    async def match_everywhere(
        self,
        orgs: Iterable[Organization],
        patient: Mapping[str, Any],
        *,
        count: int = 5,
        only_certain: bool = False,
        research_id: str | None = None,
    ) -> list[OrgMatch]:
        """``$match`` at every organization, ``org_concurrency`` at a time, in their order.

        An organization that fails (after its retries) gets its error in its OrgMatch;
        the others go on. Programming errors are not caught: they cancel the lookup.
        """
        gate = asyncio.Semaphore(self._settings.org_concurrency)

        async def one(org: Organization) -> OrgMatch:
            async with gate:
                try:
                    found = await self.match(
                        org,
                        patient,
                        count=count,
                        only_certain=only_certain,
                        research_id=research_id,
                    )
                except NetworkError as error:
                    return OrgMatch(org, error=error)
                return OrgMatch(org, tuple(found))

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(org)) for org in orgs]
        return [task.result() for task in tasks]

    async def documents(
        self, org: Organization, network_patient_id: str, research_id: str | None = None
    ) -> AsyncIterator[DocumentRefEntry]:
        """The patient's current DocumentReferences, following ``next`` links.

        A ``next`` link already followed (or naming a page already read) raises
        PagingLoopError, one on another host ForeignHostError (not requested), and more
        than ``max_pages`` pages PagingLoopError: the entries before are yielded first.
        A DocumentReference repeated across pages is yielded once.
        """
        first = httpx.URL(
            f"{org.base_url}/DocumentReference",
            params={
                "patient": network_patient_id,
                "status": "current",
                "_count": self._settings.page_size,
            },
        )
        paging = _Paging(max_pages=self._settings.max_pages)
        url: str | None = str(first)
        while url is not None:
            self._check_next(org, url, paging, research_id)
            paging.pages += 1
            request = self._request("search_documents", org, "GET", url, research_id)
            page = await self._call(
                request,
                lambda answer: _fhir.document_page(answer.body, self._invalid(org, answer.url)),
            )
            if page.self_url:
                paging.seen_urls.add(canonical(resolve(page.self_url, org.base_url)))
            for entry in page.entries:
                if entry.id not in paging.seen_ids:
                    paging.seen_ids.add(entry.id)
                    yield entry
            url = resolve(page.next_url, org.base_url) if page.next_url else None

    async def fetch_attachment(
        self, org: Organization, ref: AttachmentRef, research_id: str | None = None
    ) -> FetchedAttachment:
        """The bytes behind ``ref``, from the organization's own host only.

        A URL on any other origin (scheme, host and port) is refused before anything is
        sent. Relative URLs resolve against the organization's FHIR base. Size and hash
        are computed, not judged: see :func:`verify`.
        """
        url = resolve(ref.url, org.base_url)
        if not same_origin(url, org.base_url):
            self._refuse(
                "fetch_document",
                org,
                research_id,
                ForeignHostError(
                    f"attachment on {host_of(url) or 'no host'}, outside the organization's "
                    f"host {org.host}; not requested",
                    organization_id=org.id,
                    url=url,
                ),
            )
        request = self._request("fetch_document", org, "GET", url, research_id, accept="*/*")
        body = await self._call(request, lambda answer: answer.body)
        if len(body) >= HASH_OFF_LOOP_BYTES:
            return await asyncio.to_thread(FetchedAttachment, ref, body)
        return FetchedAttachment(ref, body)

    # -- the pipeline ---------------------------------------------------------------

    def _request(
        self,
        operation: Operation,
        org: Organization | None,
        method: str,
        url: str,
        research_id: str | None = None,
        *,
        accept: str = FHIR_JSON,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> _Request:
        # The options are arguments, not a ``but()`` afterwards: dataclasses.replace
        # costs more than building the request, on every call.
        return _Request(
            operation=operation,
            org=org,
            method=method,
            url=url,
            research_id=research_id,
            max_bytes=self._settings.max_body_bytes,
            accept=accept,
            content=content,
            content_type=content_type,
        )

    async def _call(self, request: _Request, parse: Callable[[_Answer], T]) -> T:
        """One call: its tries under the retry policy, the parse, one CallRecord."""
        # A token request is bound to the purpose it declares; the others learn theirs
        # from the token they carry.
        purpose = self._tokens.purpose_of_use if request.operation == "token" else None
        state = _CallState(purpose=purpose)
        began = self._clock()
        started_at = datetime.fromtimestamp(self._wall_clock(), UTC)
        outcome = "error"

        async def attempt() -> T:
            # The parse is part of the try: an answer cut short is retried like a
            # dropped connection (see _fhir.load_json); any other bad answer is not.
            return parse(await self._try(request, state))

        try:
            result = await retry.run(self._policy, attempt)
        except NetworkError as error:
            outcome = error.code
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        else:
            outcome = "ok"
            return result
        finally:
            self._record(
                CallRecord(
                    organization_id=request.org_id,
                    operation=request.operation,
                    status=state.status,
                    outcome=outcome,
                    duration_ms=round((self._clock() - began) * 1000),
                    tries=state.tries,
                    research_id=request.research_id,
                    started_at=started_at,
                    purpose_of_use=state.purpose,
                )
            )

    async def _try(self, request: _Request, state: _CallState) -> _Answer:
        answer, token = await self._send(request, state)
        if answer.status == 401 and token is not None and not state.refreshed:
            # The token may have been revoked or expired early: one fresh token, once
            # per call. A second 401 is an answer about us, not about the token.
            state.refreshed = True
            log.info(
                "401 with a cached token, retrying once with a fresh one: org=%s op=%s "
                "research_id=%s",
                request.org_id,
                request.operation,
                request.research_id,
            )
            self._tokens.invalidate(token)
            answer, token = await self._send(request, state)
        return self._check_status(request, answer)

    async def _send(
        self, request: _Request, state: _CallState
    ) -> tuple[_Answer, AccessToken | None]:
        """One try: pacing, token, the exchange, and same-origin redirects."""
        url = request.url
        home = request.org.base_url if request.org is not None else request.url
        for _ in range(MAX_REDIRECTS + 1):
            await self._limiters.acquire(request.org_id or NETWORK_KEY)
            token: AccessToken | None = None
            if request.authenticated:
                token = await self._tokens.token(self._fetch_token)
                state.purpose = token.purpose_of_use
            state.tries += 1
            answer = await self._exchange(request, *self._build(request, url, token))
            state.status = answer.status
            if answer.status not in REDIRECT_STATUSES or request.method != "GET":
                return answer, token
            location = answer.headers.get("location")
            if not location:
                return answer, token
            target = urljoin(url, location)
            if not same_origin(target, home):
                raise ForeignHostError(
                    f"redirected to {host_of(target) or 'no host'}, outside "
                    f"{host_of(home)}; not followed",
                    organization_id=request.org_id,
                    url=url,
                )
            url = target
        raise HTTPStatusError(
            state.status or 0,
            f"more than {MAX_REDIRECTS} redirects",
            organization_id=request.org_id,
            url=url,
        )

    def _build(
        self, request: _Request, url: str, token: AccessToken | None
    ) -> tuple[httpx.Request, str]:
        """The request to send, and its URL as text (what errors and answers name)."""
        if request.form is not None:
            # Token requests (rare): httpx encodes the form.
            headers = {"Accept": request.accept}
            if token is not None:
                headers["Authorization"] = f"Bearer {token.value}"
            outgoing = self._http.build_request(
                request.method, url, data=dict(request.form()), headers=headers
            )
            return outgoing, str(outgoing.url)
        # What ``build_request`` would build, from parts made once: it parses and merges
        # the URL and the headers again for every request (test_client.py checks that
        # the two agree).
        parsed, text = self._parsed_url(url)
        outgoing = httpx.Request(
            request.method,
            parsed,
            content=request.content,
            headers=self._headers(request.accept, request.content_type, token),
            extensions={"timeout": self._timeout},
        )
        return outgoing, text

    def _parsed_url(self, url: str) -> tuple[httpx.URL, str]:
        """``url`` parsed, and as httpx spells it; the same few (``$match``) come back."""
        known = self._urls.get(url)
        if known is None:
            parsed = httpx.URL(url)
            known = (parsed, str(parsed))
            if len(self._urls) >= URL_CACHE_SIZE:
                self._urls.clear()  # per-patient URLs would otherwise pile up
            self._urls[url] = known
        return known

    def _headers(
        self, accept: str, content_type: str | None, token: AccessToken | None
    ) -> httpx.Headers:
        """The client's headers merged with a call's, as ``build_request`` merges them."""
        key = (accept, content_type, token)
        headers = self._header_sets.get(key)
        if headers is None:
            ours = {"Accept": accept}
            if token is not None:
                ours["Authorization"] = f"Bearer {token.value}"
            if content_type is not None:
                ours["Content-Type"] = content_type
            headers = httpx.Headers(self._http.headers)
            headers.update(ours)
            if len(self._header_sets) >= HEADER_CACHE_SIZE:
                self._header_sets.clear()  # stale tokens go with the rest
            self._header_sets[key] = headers
        # httpx.Request copies the headers it is given: the cached set stays as it is.
        return headers

    async def _exchange(self, request: _Request, outgoing: httpx.Request, url: str) -> _Answer:
        """Send and read, within ``request_timeout_s``; transport failures classified."""
        limit = self._settings.request_timeout_s
        try:
            async with asyncio.timeout(limit):
                response = await self._http.send(outgoing, stream=True)
                try:
                    ok = response.is_success
                    body = await read_capped(
                        response,
                        request.max_bytes if ok else ERROR_BODY_BYTES,
                        organization_id=request.org_id,
                        truncate=not ok,
                    )
                finally:
                    await response.aclose()
        except TimeoutError as error:
            failure = TransportError(
                f"no complete answer within {limit:g} s (network.request_timeout_s)",
                organization_id=request.org_id,
                url=url,
            )
            failure.__cause__ = error
            raise retry.Retryable(failure) from error
        except httpx.HTTPError as error:
            raise transport_failure(error, request.org_id, url) from error
        return _Answer(response.status_code, response.headers, body, url)

    def _check_status(self, request: _Request, answer: _Answer) -> _Answer:
        status = answer.status
        if 200 <= status < 300:
            return answer
        where = {"organization_id": request.org_id, "url": answer.url}
        why = _explain(answer.body)
        if status in retry.RETRY_STATUSES:
            after = retry.parse_retry_after(answer.headers.get("retry-after"), now=self._wall_clock)
            raise retry.Retryable(HTTPStatusError(status, why, **where), after)
        if status in (401, 403) or (request.operation == "token" and status == 400):
            raise AuthError(status, why, **where)
        raise HTTPStatusError(status, why, **where)

    async def _fetch_token(self, form: Callable[[], Mapping[str, str]]) -> Mapping[str, Any]:
        url = self._settings.token_url
        request = self._request("token", None, "POST", url).but(
            form=form, authenticated=False, accept="application/json", max_bytes=ERROR_BODY_BYTES
        )

        def invalid(message: str) -> InvalidResponse:
            return InvalidResponse(f"token endpoint: {message}", url=url)

        return await self._call(request, lambda answer: _fhir.load_object(answer.body, invalid))

    def _check_next(
        self, org: Organization, url: str, paging: _Paging, research_id: str | None
    ) -> None:
        """Refuse a ``next`` link before it is requested: elsewhere, again, or too many."""
        error: NetworkError | None = None
        key = canonical(url)
        if not same_origin(url, org.base_url):
            error = ForeignHostError(
                f"next link on {host_of(url) or 'no host'}, outside the organization's host "
                f"{org.host}; not requested",
                organization_id=org.id,
                url=url,
            )
        elif key in paging.seen_urls:
            error = PagingLoopError(
                f"next link points at a page already read (after {paging.pages} pages)",
                organization_id=org.id,
                url=url,
            )
        elif paging.pages >= paging.max_pages:
            error = PagingLoopError(
                f"more than {paging.max_pages} pages (network.max_pages); stopped",
                organization_id=org.id,
                url=url,
            )
        if error is not None:
            self._refuse("search_documents", org, research_id, error)
        paging.seen_urls.add(key)

    def _refuse(
        self, operation: Operation, org: Organization, research_id: str | None, error: NetworkError
    ) -> None:
        self._record(
            CallRecord(
                organization_id=org.id,
                operation=operation,
                status=None,
                outcome=error.code,
                duration_ms=0,
                tries=0,
                research_id=research_id,
                started_at=datetime.fromtimestamp(self._wall_clock(), UTC),
                purpose_of_use=None,
            )
        )
        raise error

    def _record(self, record: CallRecord) -> None:
        log.log(
            logging.DEBUG if record.outcome == "ok" else logging.WARNING,
            "call org=%s op=%s status=%s outcome=%s tries=%d ms=%d research_id=%s",
            record.organization_id,
            record.operation,
            record.status,
            record.outcome,
            record.tries,
            record.duration_ms,
            record.research_id,
        )
        if self._on_call is not None:
            self._on_call(record)

    @staticmethod
    def _invalid(org: Organization, url: str) -> _fhir.Invalid:
        def invalid(message: str) -> InvalidResponse:
            return InvalidResponse(message, organization_id=org.id, url=url)

        return invalid


def verify(fetched: FetchedAttachment) -> None:
    """Raise DocumentMismatch when the bytes lack the size or SHA-1 their reference declared.

    A declaration that is absent is not checked (FHIR makes both optional).
    """
    ref = fetched.ref
    where = sanitize_url(ref.url)
    if ref.size is not None and ref.size != fetched.size:
        raise DocumentMismatch(
            f"{where}: declared size {ref.size} bytes, received {fetched.size} bytes"
        )
    if ref.sha1 is not None:
        try:
            declared = base64.b64decode(ref.sha1, validate=True)
        except (binascii.Error, ValueError):
            raise DocumentMismatch(f"{where}: declared hash is not base64") from None
        if declared != base64.b64decode(fetched.sha1_b64):
            raise DocumentMismatch(f"{where}: SHA-1 of the bytes differs from the declared hash")


def transport_failure(
    error: httpx.HTTPError, organization_id: str | None, url: str
) -> NetworkError | retry.Retryable:
    """httpx's failure as ehrfetch's: a Retryable when another try may fare better."""
    detail = _URL_IN_TEXT.sub(lambda m: sanitize_url(m.group(0)), str(error))
    message = type(error).__name__ + (f": {detail}" if detail else "")
    where = {"organization_id": organization_id, "url": url}
    if isinstance(error, httpx.DecodingError):
        return InvalidResponse(f"body cannot be decoded ({message})", **where)
    failure = TransportError(message, **where)
    failure.__cause__ = error
    # Timeouts, refused or reset connections and a peer hanging up mid-body may heal;
    # an unsupported scheme or a malformed request will not.
    if isinstance(error, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return retry.Retryable(failure)
    return failure


def _explain(body: bytes) -> str:
    """A short reason from an error body: OperationOutcome or OAuth codes, nothing else.

    Free text (``diagnostics``, ``error_description``) is left out: a server may quote
    the query in it, and the query carries demographics.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "no OperationOutcome"
    if not isinstance(data, dict):
        return "no OperationOutcome"
    codes: list[str] = []
    if data.get("resourceType") == "OperationOutcome":
        for issue in data.get("issue") or []:
            if not isinstance(issue, dict):
                continue
            code = str(issue.get("code", ""))
            details = [
                str(coding.get("code", ""))
                for coding in (issue.get("details") or {}).get("coding") or []
                if isinstance(coding, dict)
            ]
            codes.append("/".join(c for c in (code, *details) if _TOKEN_CODE.match(c)))
        label = "OperationOutcome"
    elif isinstance(data.get("error"), str):
        codes.append(data["error"] if _TOKEN_CODE.match(data["error"]) else "")
        label = "OAuth error"
    else:
        return "no OperationOutcome"
    shown = ", ".join(c for c in codes[:3] if c)
    return f"{label} {shown}" if shown else label
