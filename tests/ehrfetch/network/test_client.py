"""NetworkClient against a respx router: exact requests, every error path, no waiting."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.utils
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from ehrfetch.errors import (
    AuthError,
    DocumentMismatch,
    ForeignHostError,
    HTTPStatusError,
    InvalidResponse,
    PagingLoopError,
    ResponseTooLarge,
    TransportError,
)
from ehrfetch.network import (
    AccessToken,
    AttachmentRef,
    CallRecord,
    FetchedAttachment,
    NetworkClient,
    Organization,
    TokenSource,
    verify,
)
from ehrfetch.settings import NetworkSettings

NET = "https://net.test"
BASE = "https://alpha.test/fhir"
MATCH_URL = f"{BASE}/Patient/$match"
DOCS_URL = f"{BASE}/DocumentReference"
WALL_EPOCH = 1_780_000_000.0
GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"


# -- helpers ------------------------------------------------------------------------


class FakeTime:
    """Monotonic and wall clocks that move only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_EPOCH + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TokenIssuer:
    """The token endpoint: numbered tokens, and every form it received."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.forms.append(dict(httpx.QueryParams(request.content.decode())))
        return httpx.Response(
            200,
            json={
                "access_token": f"secret-token-{len(self.forms)}",
                "token_type": "Bearer",
                "expires_in": 300,
            },
        )


class Harness:
    def __init__(self, settings: NetworkSettings, router: respx.MockRouter) -> None:
        self.settings = settings
        self.router = router
        self.time = FakeTime()
        self.records: list[CallRecord] = []
        self.issuer = TokenIssuer()
        self.token_route = router.post(f"{NET}/token").mock(side_effect=self.issuer)

    def client(self, **changes: Any) -> NetworkClient:
        settings = self.settings.model_copy(update=changes)
        return NetworkClient(
            settings,
            TokenSource(settings, clock=self.time.wall),
            transport=httpx.MockTransport(self.router.async_handler),
            on_call=self.records.append,
            sleep=self.time.sleep,
            clock=self.time.monotonic,
            wall_clock=self.time.wall,
        )


@pytest.fixture
def net(settings: NetworkSettings, router: respx.MockRouter) -> Harness:
    return Harness(settings, router)


@pytest.fixture
async def client(net: Harness) -> AsyncIterator[NetworkClient]:
    async with net.client() as network:
        yield network


def fhir(resource: dict[str, Any], status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=json.dumps(resource).encode(),
        headers={"Content-Type": "application/fhir+json", **headers},
    )


def outcome(status: int, code: str = "processing", **headers: str) -> httpx.Response:
    return fhir(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": "Castellano 1961-07-04"}],
        },
        status,
        **headers,
    )


def a_patient(pid: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": pid,
        "name": [{"family": "Castellano", "given": ["Robert"]}],
        "birthDate": "1961-07-04",
        "gender": "male",
    }


QUERY = {
    "resourceType": "Patient",
    "name": [{"family": "Castellano", "given": ["Robert"]}],
    "birthDate": "1961-07-04",
}


def match_bundle(*found: tuple[str, float | None, str | None]) -> dict[str, Any]:
    entries = []
    for pid, score, grade in found:
        search: dict[str, Any] = {"mode": "match"}
        if score is not None:
            search["score"] = score
        if grade is not None:
            search["extension"] = [{"url": GRADE_URL, "valueCode": grade}]
        entries.append({"resource": a_patient(pid), "search": search})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if entries:
        bundle["entry"] = entries
    return bundle


def doc(doc_id: str, url: str, *, subject: str = "Patient/p1") -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "status": "current",
        "subject": {"reference": subject},
        "content": [
            {"attachment": {"contentType": "text/plain", "url": url, "size": 5, "hash": "abc="}}
        ],
    }


def page(
    docs: list[dict[str, Any]], *, self_url: str | None = None, next_url: str | None = None
) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url}] if self_url else []
    if next_url:
        links.append({"relation": "next", "url": next_url})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "link": links}
    if docs:
        bundle["entry"] = [{"resource": d, "search": {"mode": "match"}} for d in docs]
    return bundle


class ChunkStream(httpx.AsyncByteStream):
    """A body read chunk by chunk, counting the chunks handed out; it may fail midway."""

    def __init__(self, chunks: int | None = None, *, fail_after: int | None = None) -> None:
        self.chunks = chunks
        self.fail_after = fail_after
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.chunks is None or self.sent < self.chunks:
            if self.fail_after is not None and self.sent >= self.fail_after:
                raise httpx.RemoteProtocolError("peer closed connection without a complete body")
            self.sent += 1
            yield b"x" * 65536


class Pages:
    """A paged search: the answer by ``_offset`` (None for the first request)."""

    def __init__(self, answers: dict[str | None, dict[str, Any]]) -> None:
        self.answers = answers
        self.offsets: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        offset = request.url.params.get("_offset")
        self.offsets.append(offset)
        return fhir(self.answers[offset])


def only(records: list[CallRecord], operation: str) -> list[CallRecord]:
    return [r for r in records if r.operation == operation]


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data, usedforsecurity=False).digest()).decode()


# -- $match -------------------------------------------------------------------------


async def test_match_sends_parameters_with_a_bearer_token_and_ranks_best_first(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(
        return_value=fhir(match_bundle(("p2", 0.7, "probable"), ("p1", 0.99, "certain")))
    )
    found = await client.match(org, QUERY, count=3, only_certain=True, research_id="RS-1")

    request = route.calls.last.request
    assert request.headers["Authorization"] == "Bearer secret-token-1"
    assert request.headers["Content-Type"] == "application/fhir+json"
    assert request.headers["Accept"] == "application/fhir+json"
    assert json.loads(request.content) == {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": QUERY},
            {"name": "count", "valueInteger": 3},
            {"name": "onlyCertainMatches", "valueBoolean": True},
        ],
    }
    assert [(c.network_patient_id, c.score, c.grade, c.rank) for c in found] == [
        ("p1", 0.99, "certain", 1),
        ("p2", 0.7, "probable", 2),
    ]
    assert found[0].resource["birthDate"] == "1961-07-04"


async def test_match_token_request_declares_client_purpose_and_scope(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle()))
    await client.match(org, QUERY)
    request = net.token_route.calls.last.request
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    form = net.issuer.forms[0]
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    assert form["purpose_of_use"] == "T-IAS"
    assert form["scope"] == "system/Patient.read system/DocumentReference.read system/Binary.read"
    assert form["client_assertion"].count(".") == 2


async def test_empty_bundle_is_no_match_and_outcome_entries_are_not_candidates(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    bundle = match_bundle(("p1", None, None))
    bundle["entry"].append(
        {
            "resource": {"resourceType": "OperationOutcome", "issue": []},
            "search": {"mode": "outcome"},
        }
    )
    net.router.post(MATCH_URL).mock(side_effect=[fhir(match_bundle()), fhir(bundle)])
    assert await client.match(org, QUERY) == []
    [candidate] = await client.match(org, QUERY)
    assert (candidate.score, candidate.grade, candidate.rank) == (None, None, 1)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"resourceType": "Bundle",, "type": "searchset"}', "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"resourceType": "OperationOutcome", "issue": []}', "expected a FHIR Bundle"),
        (b'{"resourceType": "Bundle", "type": "searchset", "total": "several"}', "total"),
        (
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": {**a_patient("p1"), "birthDate": "1961-13-45"}}],
                }
            ).encode(),
            "entry.0.resource.birthDate",
        ),
        (
            json.dumps({**match_bundle(("p1", 1.0, "certain")), "type": "collection"}).encode(),
            "searchset",
        ),
        (
            json.dumps(
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "entry": [{"resource": {"resourceType": "Basic", "id": "b", "code": {}}}],
                }
            ).encode(),
            "not a Patient",
        ),
    ],
    ids=["malformed", "array", "wrong-type", "invalid", "invalid-entry", "collection", "basic"],
)
async def test_bad_answers_are_invalid_responses_and_not_retried(
    net: Harness, client: NetworkClient, org: Organization, body: bytes, reason: str
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=httpx.Response(200, content=body))
    with pytest.raises(InvalidResponse, match=reason) as caught:
        await client.match(org, QUERY, research_id="RS-1")
    assert route.call_count == 1
    assert caught.value.code == "invalid_response"
    assert caught.value.organization_id == "alpha"
    assert "1961" not in str(caught.value) and "Castellano" not in str(caught.value)
    [record] = only(net.records, "match")
    assert (record.status, record.outcome, record.tries) == (200, "invalid_response", 1)


@pytest.mark.parametrize(
    ("method", "url", "accept", "content", "content_type", "with_token"),
    [
        ("POST", MATCH_URL, "application/fhir+json", b'{"a": 1}', "application/fhir+json", True),
        ("GET", f"{DOCS_URL}?patient=p%201&status=current&_count=2", "application/fhir+json",
         None, None, True),
        ("GET", f"{BASE}/Binary/%C3%A9?x=1", "*/*", None, None, True),
        ("GET", f"{NET}/directory", "application/fhir+json", None, None, False),
    ],
)  # fmt: skip
async def test_requests_are_built_as_httpx_builds_them(
    net: Harness,
    org: Organization,
    method: str,
    url: str,
    accept: str,
    content: bytes | None,
    content_type: str | None,
    with_token: bool,
) -> None:
    """The client builds its requests from parts made once: they must not differ."""
    token = AccessToken("secret-token-1", refresh_at=1e12, purpose_of_use="T-IAS")
    async with net.client() as network:
        request = network._request(
            "match", org, method, url, accept=accept, content=content, content_type=content_type
        )
        for _ in range(2):  # the second time from the caches
            built, text = network._build(request, url, token if with_token else None)
            headers = {"Accept": accept}
            if with_token:
                headers["Authorization"] = "Bearer secret-token-1"
            if content_type is not None:
                headers["Content-Type"] = content_type
            expected = network._http.build_request(method, url, content=content, headers=headers)
            assert (built.method, built.url, text) == (method, expected.url, str(expected.url))
            assert built.headers.raw == expected.headers.raw
            assert built.content == expected.content
            assert built.extensions == expected.extensions


# -- retries ------------------------------------------------------------------------


@pytest.mark.parametrize("cut", [b"", b'{"resourceType": "Bundle", "type": "sea', b"{\n  "])
async def test_a_body_cut_short_is_retried(
    net: Harness, client: NetworkClient, org: Organization, cut: bytes
) -> None:
    route = net.router.post(MATCH_URL).mock(
        side_effect=[httpx.Response(200, content=cut), fhir(match_bundle())]
    )
    assert await client.match(org, QUERY) == []
    assert route.call_count == 2


async def test_a_body_cut_short_every_time_is_an_invalid_response(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=httpx.Response(200, content=b"[1, 2"))
    with pytest.raises(InvalidResponse, match="truncated"):
        await client.match(org, QUERY)
    assert route.call_count == 5


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
async def test_each_retryable_status_is_retried_with_backoff(
    net: Harness, client: NetworkClient, org: Organization, status: int
) -> None:
    route = net.router.post(MATCH_URL).mock(
        side_effect=[outcome(status), outcome(status), fhir(match_bundle(("p1", 1.0, "certain")))]
    )
    found = await client.match(org, QUERY, research_id="RS-1")
    assert [c.network_patient_id for c in found] == ["p1"]
    assert route.call_count == 3
    # Exponential with jitter: base·2^(n-1) plus up to base.
    first, second = net.time.sleeps
    assert 0.5 <= first <= 1.0
    assert 1.0 <= second <= 1.5
    [record] = only(net.records, "match")
    assert (record.status, record.outcome, record.tries) == (200, "ok", 3)


async def test_retry_after_in_seconds_is_honoured_when_longer_than_the_backoff(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.post(MATCH_URL).mock(
        side_effect=[outcome(429, "throttled", **{"Retry-After": "7"}), fhir(match_bundle())]
    )
    await client.match(org, QUERY)
    assert net.time.sleeps == [7.0]
    [record] = only(net.records, "match")
    assert record.duration_ms == 7000


async def test_retry_after_as_an_http_date_is_honoured(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    when = email.utils.formatdate(WALL_EPOCH + 12, usegmt=True)
    net.router.post(MATCH_URL).mock(
        side_effect=[outcome(503, "transient", **{"Retry-After": when}), fhir(match_bundle())]
    )
    await client.match(org, QUERY)
    assert net.time.sleeps == [12.0]


async def test_a_retry_after_longer_than_the_limit_fails_at_once(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(
        return_value=outcome(429, "throttled", **{"Retry-After": "3600"})
    )
    with pytest.raises(HTTPStatusError) as caught:
        await client.match(org, QUERY)
    assert (caught.value.status, caught.value.code) == (429, "http_429")
    assert route.call_count == 1
    assert net.time.sleeps == []


async def test_tries_are_bounded_and_the_last_error_is_raised(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=outcome(503, "transient"))
    with pytest.raises(HTTPStatusError, match=r"alpha .*/Patient/\$match: HTTP 503") as caught:
        await client.match(org, QUERY, research_id="RS-1")
    assert caught.value.code == "http_503"
    assert route.call_count == 5
    assert len(net.time.sleeps) == 4
    # Doubling each time, capped at backoff_max_s (8 s) jitter included.
    for n, wait in enumerate(net.time.sleeps):
        assert min(0.5 * 2**n, 8.0) <= wait <= min(0.5 * 2**n + 0.5, 8.0)
    [record] = only(net.records, "match")
    assert (record.status, record.outcome, record.tries) == (503, "http_503", 5)


@pytest.mark.parametrize(
    "failure",
    [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("gone")],
    ids=["connect", "read-timeout", "protocol"],
)
async def test_transport_errors_are_retried(
    net: Harness, client: NetworkClient, org: Organization, failure: Exception
) -> None:
    route = net.router.post(MATCH_URL).mock(side_effect=[failure, fhir(match_bundle())])
    assert await client.match(org, QUERY) == []
    assert route.call_count == 2
    assert len(net.time.sleeps) == 1


async def test_a_connection_dropped_mid_body_is_retried(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    dropping = ChunkStream(fail_after=2)
    route = net.router.post(MATCH_URL).mock(
        side_effect=[httpx.Response(200, stream=dropping), fhir(match_bundle())]
    )
    assert await client.match(org, QUERY) == []
    assert dropping.sent == 2
    assert route.call_count == 2


async def test_transport_errors_out_of_tries_raise_transport_error(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(side_effect=httpx.ConnectError("refused"))
    with pytest.raises(TransportError, match="ConnectError: refused") as caught:
        await client.match(org, QUERY)
    assert caught.value.code == "transport"
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert route.call_count == 5
    [record] = only(net.records, "match")
    assert (record.status, record.outcome, record.tries) == (None, "transport", 5)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (400, HTTPStatusError, "http_400"),
        (403, AuthError, "auth"),
        (404, HTTPStatusError, "http_404"),
        (422, HTTPStatusError, "http_422"),
    ],
)
async def test_errors_that_will_not_heal_are_not_retried(
    net: Harness,
    client: NetworkClient,
    org: Organization,
    status: int,
    error: type[HTTPStatusError],
    code: str,
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=outcome(status, "incomplete"))
    with pytest.raises(error) as caught:
        await client.match(org, QUERY)
    assert type(caught.value) is error
    assert (caught.value.status, caught.value.code) == (status, code)
    # The issue code is kept; the diagnostics (which may quote the query) are not.
    assert "OperationOutcome incomplete" in str(caught.value)
    assert "Castellano" not in str(caught.value)
    assert route.call_count == 1
    assert net.time.sleeps == []


# -- tokens -------------------------------------------------------------------------


async def test_one_token_serves_many_calls(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle()))
    for _ in range(3):
        await client.match(org, QUERY)
    assert net.token_route.call_count == 1
    assert {c.request.headers["Authorization"] for c in route.calls} == {"Bearer secret-token-1"}


async def test_token_is_refreshed_before_it_expires(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle()))
    await client.match(org, QUERY)
    net.time.now = 269.0  # 300 s token, 30 s margin: still good
    await client.match(org, QUERY)
    net.time.now = 271.0
    await client.match(org, QUERY)
    tokens = [c.request.headers["Authorization"] for c in route.calls]
    assert tokens == ["Bearer secret-token-1", "Bearer secret-token-1", "Bearer secret-token-2"]


async def test_a_401_gets_one_fresh_token_then_succeeds(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(
        side_effect=[outcome(401, "login"), fhir(match_bundle())]
    )
    assert await client.match(org, QUERY) == []
    assert [c.request.headers["Authorization"] for c in route.calls] == [
        "Bearer secret-token-1",
        "Bearer secret-token-2",
    ]
    assert net.time.sleeps == []  # no backoff for a refreshed token
    [record] = only(net.records, "match")
    assert (record.status, record.outcome, record.tries) == (200, "ok", 2)


async def test_a_second_401_is_an_auth_error(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.post(MATCH_URL).mock(return_value=outcome(401, "login"))
    with pytest.raises(AuthError) as caught:
        await client.match(org, QUERY)
    assert (caught.value.status, caught.value.code) == (401, "auth")
    assert route.call_count == 2
    assert net.token_route.call_count == 2


async def test_concurrent_callers_share_one_token_request(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle()))
    await asyncio.gather(*(client.match(org, QUERY) for _ in range(10)))
    assert net.token_route.call_count == 1


async def test_refused_token_request_is_an_auth_error_not_retried(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.token_route.mock(
        side_effect=None, return_value=httpx.Response(401, json={"error": "invalid_client"})
    )
    match = net.router.post(MATCH_URL)
    with pytest.raises(AuthError, match="OAuth error invalid_client"):
        await client.match(org, QUERY)
    assert net.token_route.call_count == 1
    assert match.call_count == 0
    [token] = only(net.records, "token")
    assert (token.organization_id, token.outcome, token.purpose_of_use) == (None, "auth", "T-IAS")


async def test_token_request_retried_with_a_fresh_assertion(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    answers = iter([outcome(503, "transient")])

    def busy_then_issue(request: httpx.Request) -> httpx.Response:
        return next(answers, None) or net.issuer(request)

    net.token_route.mock(side_effect=busy_then_issue)
    net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle()))
    await client.match(org, QUERY)
    first, second = (
        dict(httpx.QueryParams(c.request.content.decode()))["client_assertion"]
        for c in net.token_route.calls
    )
    assert first != second  # a network refuses a reused jti
    assert net.issuer.forms[0]["client_assertion"] == second


async def test_no_token_or_assertion_in_errors_or_logs(
    net: Harness, client: NetworkClient, org: Organization, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ehrfetch")
    net.router.post(MATCH_URL).mock(
        side_effect=[outcome(401, "login"), outcome(401, "login"), outcome(503, "transient")]
        + [httpx.ConnectError("refused")] * 5
    )
    errors: list[Exception] = []
    for _ in range(2):
        try:
            await client.match(org, QUERY, research_id="RS-7")
        except (AuthError, TransportError, HTTPStatusError) as error:
            errors.append(error)
    assert len(errors) == 2
    secrets = [f"secret-token-{n}" for n in range(1, 4)]
    secrets += [form["client_assertion"] for form in net.issuer.forms]
    texts = [str(e) for e in errors] + [repr(e) for e in errors]
    texts += [r.getMessage() for r in caplog.records]
    assert any("RS-7" in t for t in texts)  # the research id is logged...
    for text in texts:
        for secret in secrets:
            assert secret not in text  # ...the token and the assertion never
        assert "Castellano" not in text and "1961" not in text


# -- directory ----------------------------------------------------------------------


def directory_bundle() -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Organization",
                    "id": "alpha",
                    "name": "Alpha Health",
                    "endpoint": [{"reference": "Endpoint/alpha-fhir"}],
                }
            },
            {
                "resource": {
                    "resourceType": "Endpoint",
                    "id": "alpha-fhir",
                    "status": "active",
                    "connectionType": {"code": "hl7-fhir-rest"},
                    "payloadType": [{"text": "any"}],
                    "address": f"{BASE}/",
                }
            },
        ],
    }


async def test_directory_is_loaded_once_per_client(net: Harness, client: NetworkClient) -> None:
    route = net.router.get(f"{NET}/directory").mock(return_value=fhir(directory_bundle()))
    first = await client.directory()
    second = await client.directory()
    assert first == second == [Organization("alpha", "Alpha Health", BASE, "alpha.test")]
    assert route.call_count == 1
    assert "Authorization" not in route.calls.last.request.headers
    [record] = net.records
    assert (record.organization_id, record.operation, record.outcome) == (None, "directory", "ok")


async def test_match_everywhere_keeps_going_when_one_organization_fails(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    beta = Organization("beta", "Beta", "https://beta.test/fhir", "beta.test")
    gamma = Organization("gamma", "Gamma", "https://gamma.test/fhir", "gamma.test")
    net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle(("a1", 0.9, "certain"))))
    net.router.post("https://beta.test/fhir/Patient/$match").mock(return_value=outcome(500))
    net.router.post("https://gamma.test/fhir/Patient/$match").mock(return_value=outcome(400))
    results = await client.match_everywhere([org, beta, gamma], QUERY, research_id="RS-1")
    assert [r.organization.id for r in results] == ["alpha", "beta", "gamma"]
    assert [c.network_patient_id for c in results[0].candidates] == ["a1"]
    assert results[0].ok and not results[1].ok and not results[2].ok
    assert results[1].error is not None and results[1].error.code == "http_500"
    assert results[2].error is not None and results[2].error.code == "http_400"


class CountingTransport(httpx.AsyncBaseTransport):
    """Answers every $match with an empty Bundle, counting requests in flight."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.peak = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        for _ in range(3):
            await asyncio.sleep(0)  # let the other tasks in
        self.in_flight -= 1
        return fhir(match_bundle())


async def test_match_everywhere_bounds_concurrency(settings: NetworkSettings) -> None:
    transport = CountingTransport()
    settings = settings.model_copy(update={"org_concurrency": 3})
    orgs = [Organization(f"o{n}", "O", f"https://o{n}.test/fhir", f"o{n}.test") for n in range(9)]
    async with NetworkClient(settings, TokenSource(settings), transport=transport) as client:
        results = await client.match_everywhere(orgs, QUERY)
    assert all(r.ok for r in results)
    assert transport.peak == 3


# -- documents ----------------------------------------------------------------------


async def test_documents_follow_next_links_and_parse_attachments(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    pages = Pages(
        {
            None: page(
                [doc("d1", f"{BASE}/Binary/1"), doc("d2", "Binary/2")],
                next_url=f"{DOCS_URL}?patient=p1&_offset=2",
            ),
            "2": page([doc("d3", f"{BASE}/Binary/3")]),
        }
    )
    route = net.router.get(DOCS_URL).mock(side_effect=pages)
    entries = [e async for e in client.documents(org, "p1", research_id="RS-1")]

    assert [e.id for e in entries] == ["d1", "d2", "d3"]
    assert entries[0].subject_reference == "Patient/p1"
    assert entries[0].attachments == (AttachmentRef(f"{BASE}/Binary/1", "text/plain", 5, "abc="),)
    assert entries[1].attachments[0].url == "Binary/2"  # resolved when fetched
    assert dict(route.calls[0].request.url.params) == {
        "patient": "p1",
        "status": "current",
        "_count": "2",
    }
    assert pages.offsets == [None, "2"]
    records = only(net.records, "search_documents")
    assert [r.outcome for r in records] == ["ok", "ok"]


async def test_a_next_link_already_followed_is_a_paging_loop(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    # The mock network's loop: the last page points at the first page, spelt differently
    # (with _offset=0) from the first request, but the same as the first page's self link.
    first_self = f"{DOCS_URL}?_offset=0&patient=p1&status=current&_count=2"
    pages = Pages(
        {
            None: page(
                [doc("d1", "Binary/1")],
                self_url=first_self,
                next_url=f"{DOCS_URL}?patient=p1&_offset=1",
            ),
            "1": page([doc("d2", "Binary/2")], next_url=first_self),
        }
    )
    net.router.get(DOCS_URL).mock(side_effect=pages)
    entries = client.documents(org, "p1", research_id="RS-1")
    seen = [(await anext(entries)).id, (await anext(entries)).id]
    with pytest.raises(PagingLoopError, match="already read") as caught:
        await anext(entries)
    assert seen == ["d1", "d2"]
    assert pages.offsets == [None, "1"]  # the first page was not asked for again
    assert caught.value.code == "paging_loop"
    assert "p1" not in str(caught.value)  # the query (patient id) is cut from the URL
    refused = only(net.records, "search_documents")[-1]
    assert (refused.outcome, refused.tries, refused.status) == ("paging_loop", 0, None)


async def test_a_page_pointing_at_itself_is_a_paging_loop(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    route = net.router.get(DOCS_URL).mock(
        return_value=fhir(page([doc("d1", "Binary/1")], next_url=f"{DOCS_URL}?_count=2&"
                               "status=current&patient=p1"))
    )  # fmt: skip
    with pytest.raises(PagingLoopError):
        _ = [e async for e in client.documents(org, "p1")]
    assert route.call_count == 1


async def test_a_next_link_on_a_foreign_host_is_never_requested(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.get(DOCS_URL).mock(
        return_value=fhir(page([], next_url="https://evil.test/fhir/DocumentReference?page=2"))
    )
    evil = net.router.get(host="evil.test")
    with pytest.raises(ForeignHostError, match=r"evil\.test"):
        _ = [e async for e in client.documents(org, "p1")]
    assert evil.call_count == 0


async def test_paging_stops_at_the_page_limit(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    def endless(request: httpx.Request) -> httpx.Response:
        at = int(request.url.params.get("_offset", "0"))
        return fhir(
            page([doc(f"d{at}", "Binary/x")], next_url=f"{DOCS_URL}?patient=p1&_offset={at + 1}")
        )

    route = net.router.get(DOCS_URL).mock(side_effect=endless)
    with pytest.raises(PagingLoopError, match=r"more than 10 pages \(network.max_pages\)"):
        _ = [e async for e in client.documents(org, "p1")]
    assert route.call_count == 10


async def test_a_document_repeated_across_pages_is_yielded_once(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    pages = Pages(
        {
            None: page([doc("d1", "Binary/1")], next_url=f"{DOCS_URL}?_offset=1"),
            "1": page([doc("d1", "Binary/1"), doc("d2", "Binary/2")]),
        }
    )
    net.router.get(DOCS_URL).mock(side_effect=pages)
    assert [e.id async for e in client.documents(org, "p1")] == ["d1", "d2"]


async def test_a_page_with_another_resource_type_is_invalid(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.get(DOCS_URL).mock(return_value=fhir(page([a_patient("p1")])))
    with pytest.raises(InvalidResponse, match="not a DocumentReference"):
        _ = [e async for e in client.documents(org, "p1")]


# -- attachments --------------------------------------------------------------------


async def test_attachment_fetched_with_digests_and_verified(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    body = b"hello"
    route = net.router.get(f"{BASE}/Binary/1").mock(
        return_value=httpx.Response(200, content=body, headers={"Content-Type": "text/plain"})
    )
    ref = AttachmentRef("Binary/1", "text/plain", 5, sha1_b64(body))
    fetched = await client.fetch_attachment(org, ref, research_id="RS-1")

    assert fetched.body == body and fetched.size == 5
    assert fetched.sha1_b64 == sha1_b64(body)
    assert fetched.sha256_hex == hashlib.sha256(body).hexdigest()
    verify(fetched)
    request = route.calls.last.request
    assert request.headers["Accept"] == "*/*"
    assert request.headers["Authorization"] == "Bearer secret-token-1"
    [record] = only(net.records, "fetch_document")
    assert (record.organization_id, record.status, record.outcome) == ("alpha", 200, "ok")


def test_verify_reports_size_and_hash_mismatches() -> None:
    body = b"hello"
    good = sha1_b64(body)
    with pytest.raises(DocumentMismatch, match="declared size 6 bytes, received 5"):
        verify(FetchedAttachment(AttachmentRef("Binary/1", None, 6, good), body))
    with pytest.raises(DocumentMismatch, match="SHA-1"):
        verify(FetchedAttachment(AttachmentRef("Binary/1", None, 5, sha1_b64(b"other")), body))
    with pytest.raises(DocumentMismatch, match="not base64"):
        verify(FetchedAttachment(AttachmentRef("Binary/1", None, 5, "**"), body))
    verify(FetchedAttachment(AttachmentRef("Binary/1", None, None, None), body))


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.test/fhir/Binary/1",
        "http://alpha.test/fhir/Binary/1",  # same host, other scheme
        "https://alpha.test:8443/fhir/Binary/1",  # same host, other port
        "https://alpha.test.evil.test/fhir/Binary/1",
        "https://user@evil.test/fhir/Binary/1",
        "//evil.test/fhir/Binary/1",
        "file:///etc/passwd",
    ],
)
async def test_attachment_on_a_foreign_origin_is_refused_without_a_request(
    net: Harness, client: NetworkClient, org: Organization, url: str
) -> None:
    with pytest.raises(ForeignHostError, match="not requested") as caught:
        await client.fetch_attachment(org, AttachmentRef(url, None, None, None), "RS-1")
    assert caught.value.code == "foreign_host"
    assert net.router.calls.call_count == 0  # not even a token was asked for
    [record] = net.records
    assert (record.operation, record.outcome, record.tries, record.status) == (
        "fetch_document",
        "foreign_host",
        0,
        None,
    )


async def test_default_port_spelt_out_is_the_same_origin(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.get(f"{BASE}/Binary/1").mock(return_value=httpx.Response(200, content=b"x"))
    fetched = await client.fetch_attachment(
        org, AttachmentRef("https://ALPHA.test:443/fhir/Binary/1", None, None, None)
    )
    assert fetched.body == b"x"


async def test_a_streamed_body_past_the_cap_stops_reading(net: Harness, org: Organization) -> None:
    stream = ChunkStream()  # endless, no Content-Length
    route = net.router.get(f"{BASE}/Binary/big").mock(
        return_value=httpx.Response(200, stream=stream)
    )
    async with net.client(max_body_bytes=256 * 1024) as client:
        with pytest.raises(ResponseTooLarge, match=r"262144-byte cap") as caught:
            await client.fetch_attachment(org, AttachmentRef("Binary/big", None, None, None))
    assert stream.sent == 5  # four chunks fill the cap, the fifth goes past it
    assert route.call_count == 1  # too large is not retried
    assert caught.value.code == "too_large"


async def test_a_declared_length_past_the_cap_is_not_read(net: Harness, org: Organization) -> None:
    stream = ChunkStream(chunks=10)
    net.router.get(f"{BASE}/Binary/big").mock(
        return_value=httpx.Response(200, stream=stream, headers={"Content-Length": "655360"})
    )
    async with net.client(max_body_bytes=1024) as client:
        with pytest.raises(ResponseTooLarge, match="declared 655360 bytes"):
            await client.fetch_attachment(org, AttachmentRef("Binary/big", None, None, None))
    assert stream.sent == 0


async def test_same_origin_redirect_followed_foreign_one_refused(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.get(f"{BASE}/Binary/1").mock(
        return_value=httpx.Response(302, headers={"Location": "/files/1"})
    )
    net.router.get("https://alpha.test/files/1").mock(
        return_value=httpx.Response(200, content=b"1")
    )
    net.router.get(f"{BASE}/Binary/2").mock(
        return_value=httpx.Response(302, headers={"Location": "https://evil.test/files/2"})
    )
    evil = net.router.get(host="evil.test")
    fetched = await client.fetch_attachment(org, AttachmentRef("Binary/1", None, None, None))
    assert fetched.body == b"1"
    with pytest.raises(ForeignHostError, match=r"redirected to evil\.test"):
        await client.fetch_attachment(org, AttachmentRef("Binary/2", None, None, None))
    assert evil.call_count == 0


# -- pacing, audit records, logs ----------------------------------------------------


async def test_calls_to_one_organization_are_paced(net: Harness, org: Organization) -> None:
    net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle()))
    async with net.client(requests_per_second=5.0, burst=1) as client:
        await asyncio.gather(*(client.match(org, QUERY) for _ in range(10)))
    # Ten requests at 5/s: the last one goes 9 intervals of 0.2 s after the first.
    assert net.time.now == pytest.approx(1.8)


async def test_call_records_carry_no_url_query_or_demographics(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    net.router.post(MATCH_URL).mock(return_value=fhir(match_bundle(("p9", 1.0, "certain"))))
    net.router.get(DOCS_URL).mock(return_value=fhir(page([doc("d1", f"{BASE}/Binary/1")])))
    net.router.get(f"{BASE}/Binary/1").mock(return_value=httpx.Response(200, content=b"hello"))
    [candidate] = await client.match(org, QUERY, research_id="RS-1")
    async for entry in client.documents(org, candidate.network_patient_id, research_id="RS-1"):
        await client.fetch_attachment(org, entry.attachments[0], research_id="RS-1")

    assert [r.operation for r in net.records] == [
        "token",
        "match",
        "search_documents",
        "fetch_document",
    ]
    for record in net.records:
        values = [str(v) for v in dataclasses.astuple(record)]
        assert not any("?" in v or "p9" in v or "Castellano" in v or "://" in v for v in values)
        assert record.started_at is not None and record.started_at.tzinfo is not None
    match = net.records[1]
    assert (match.organization_id, match.research_id, match.purpose_of_use) == (
        "alpha",
        "RS-1",
        "T-IAS",
    )


async def test_log_lines_name_org_operation_and_research_id_without_queries(
    net: Harness, client: NetworkClient, org: Organization, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ehrfetch.network")
    net.router.get(DOCS_URL).mock(side_effect=[outcome(503), outcome(404)])
    with pytest.raises(HTTPStatusError):
        _ = [e async for e in client.documents(org, "p1", research_id="RS-3")]
    messages = [r.getMessage() for r in caplog.records]
    retry_line = next(m for m in messages if m.startswith("retrying"))
    assert "org=alpha" in retry_line and "code=http_503" in retry_line
    call_line = next(m for m in messages if "op=search_documents" in m)
    assert "org=alpha" in call_line and "research_id=RS-3" in call_line
    assert "outcome=http_404" in call_line
    assert all("patient=" not in m and "p1" not in m for m in messages)
    assert {r.name for r in caplog.records} <= {
        "ehrfetch.network.client",
        "ehrfetch.network.retry",
        "ehrfetch.network.auth",
    }


class Silent(httpx.AsyncBaseTransport):
    """Headers, then a body that never comes (a server trickling nothing)."""

    def __init__(self) -> None:
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.url.path == "/token":
            return httpx.Response(200, json={"access_token": "t", "expires_in": 300})
        return httpx.Response(200, stream=Never())


class Never(httpx.AsyncByteStream):
    async def __aiter__(self) -> AsyncIterator[bytes]:
        await asyncio.Event().wait()
        yield b""  # pragma: no cover


async def test_a_try_that_outlasts_request_timeout_is_a_retried_transport_error(
    settings: NetworkSettings, org: Organization
) -> None:
    # The one test that lets real time pass: 1 ms per try, the deadline of asyncio.timeout.
    settings = settings.model_copy(update={"request_timeout_s": 0.001, "max_tries": 2})
    transport = Silent()
    time = FakeTime()
    async with NetworkClient(
        settings, TokenSource(settings), transport=transport, sleep=time.sleep
    ) as client:
        with pytest.raises(TransportError, match=r"within 0\.001 s \(network.request_timeout_s\)"):
            await client.match(org, QUERY)
    assert transport.requests == 3  # the token, then two tries
    assert len(time.sleeps) == 1


async def test_metadata_needs_no_token_and_is_validated(
    net: Harness, client: NetworkClient, org: Organization
) -> None:
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2025-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
    }
    route = net.router.get(f"{BASE}/metadata").mock(return_value=fhir(statement))
    assert (await client.metadata(org))["fhirVersion"] == "4.0.1"
    assert "Authorization" not in route.calls.last.request.headers
    assert net.token_route.call_count == 0
    [record] = net.records
    assert (record.operation, record.purpose_of_use) == ("metadata", None)
