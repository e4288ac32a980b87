"""The FastAPI application: directory, token endpoint and one FHIR base per organization.

    GET  /healthz                                   ready (the index is built in create_app)
    GET  /directory                                 Bundle of Organization + Endpoint
    POST /token                                     client_credentials + JWT assertion
    GET  /orgs/{org}/fhir/metadata                  CapabilityStatement (no token needed)
    POST /orgs/{org}/fhir/Patient/$match            IHE PDQm ITI-119
    GET  /orgs/{org}/fhir/Patient/{id}              read
    GET  /orgs/{org}/fhir/DocumentReference         IHE MHD ITI-67 search, paged
    GET  /orgs/{org}/fhir/Binary/{id}               IHE MHD ITI-68 retrieve, raw bytes
    GET  /stats                                     organization answers by kind and status

Handlers take the raw `Request` and answer orjson bytes: request validation and response
models would cost more than the matching itself (see docs/benchmarks.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response, StreamingResponse

from mock_network import faults as fault_kit
from mock_network import fhir
from mock_network.auth import AuthError, Authority, Grant
from mock_network.config import NetworkConfig, OrgConfig
from mock_network.documents import make_doc_id
from mock_network.documents_api import BinaryId, DocumentStore, Served
from mock_network.faults import Faults, UnknownFault, error_response
from mock_network.index import BlockingIndex
from mock_network.matcher import Matcher, MatchInputError, parse_query
from mock_network.population import Population

log = logging.getLogger("mock_network")


@dataclass
class Network:
    """Everything a request handler needs, built once per app."""

    config: NetworkConfig
    population: Population
    index: BlockingIndex
    matcher: Matcher
    authority: Authority
    faults: Faults
    documents: DocumentStore
    started_s: float
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    """Organization answers by (kind, HTTP status): what a benchmark reads to see, from
    the server's side, how many requests of each kind came and how many were throttled."""


def build_network(config: NetworkConfig, *, clock: Callable[[], float] = time.time) -> Network:
    began = time.perf_counter()
    population = Population(config)
    index = BlockingIndex.build(population)
    network = Network(
        config=config,
        population=population,
        index=index,
        matcher=Matcher(population, index, config.match),
        authority=Authority(config, clock=clock),
        faults=Faults(config),
        documents=DocumentStore(config, population),
        started_s=time.perf_counter() - began,
    )
    log.info(
        "population of %d people indexed in %.2f s (%d keys)",
        population.size,
        network.started_s,
        len(index),
    )
    return network


def _json(resource: dict[str, Any], status: int = 200) -> Response:
    return Response(fhir.dumps(resource), status_code=status, media_type=fhir.FHIR_JSON)


def _auth_error(error: AuthError) -> Response:
    headers = {}
    if error.status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{error.code}"'
    code = {400: "invalid", 401: "login", 403: "forbidden"}.get(error.status, "security")
    return Response(
        fhir.dumps(fhir.operation_outcome(code, error.message, details=error.code)),
        status_code=error.status,
        media_type=fhir.FHIR_JSON,
        headers=headers,
    )


def create_app(config: NetworkConfig, *, clock: Callable[[], float] = time.time) -> FastAPI:
    """Build the network. The population index is built here, before the app is returned,
    so `/healthz` answering means the network is ready."""
    network = build_network(config, clock=clock)
    app = FastAPI(title="mock_network", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.network = network

    bases: dict[tuple[Any, ...], str] = {}

    def base_url(request: Request) -> str:
        # Remembered per scheme, Host and root path: building it (Starlette's URL) for
        # every request was ~3 % of the stand-in's CPU. A network is reached by a name or
        # two; a client sending many Host headers only empties the dict now and then.
        if config.public_base_url:
            return config.public_base_url.rstrip("/")
        scope = request.scope
        host = request.headers.get("host")
        key = (scope["scheme"], scope.get("server"), host, scope.get("root_path", ""))
        known = bases.get(key)
        if known is None:
            if len(bases) >= 64:
                bases.clear()
            known = bases[key] = str(request.base_url).rstrip("/")
        return known

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "not-supported"
        return error_response(exc.status_code, code, str(exc.detail))

    @app.get("/healthz")
    async def healthz() -> Response:
        return Response(
            orjson.dumps(
                {
                    "status": "ok",
                    "people": network.population.size,
                    "organizations": len(config.orgs),
                    "index_keys": len(network.index),
                    "startup_s": round(network.started_s, 3),
                }
            ),
            media_type="application/json",
        )

    @app.get("/stats")
    async def stats() -> Response:
        rows = [
            {"kind": kind, "status": status, "count": count}
            for (kind, status), count in sorted(network.answers.items())
        ]
        return Response(orjson.dumps({"answers": rows}), media_type="application/json")

    @app.get("/directory")
    async def directory(request: Request) -> Response:
        return _json(fhir.directory(config, base_url(request)))

    @app.post("/token")
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        try:
            answer = network.authority.issue(form, f"{base_url(request)}/token")
        except AuthError as error:
            log.info("token refused: %s (%s)", error.code, error.status)
            return _auth_error(error)
        return Response(
            orjson.dumps(answer),
            media_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def org_call(
        request: Request,
        org_id: str,
        resource_type: str | None,
        handler: Callable[[OrgConfig, frozenset[str], str], Awaitable[Response]],
        *,
        fhir_json: bool = True,
        kind: str = "other",
    ) -> Response:
        """``answer``, counted by kind and status for ``/stats``."""
        response = await answer(request, org_id, resource_type, handler, fhir_json=fhir_json)
        network.answers[(kind, response.status_code)] += 1
        return response

    async def answer(
        request: Request,
        org_id: str,
        resource_type: str | None,
        handler: Callable[[OrgConfig, frozenset[str], str], Awaitable[Response]],
        *,
        fhir_json: bool = True,
    ) -> Response:
        """The pipeline every organization request goes through: org, token, rate limit,
        latency, request faults, the handler, then body faults."""
        org = config.org(org_id)
        if org is None:
            return error_response(404, "not-found", f"no organization {org_id!r} in this network")
        try:
            forced = fault_kit.forced_faults(request.headers, config)
        except UnknownFault as error:
            return error_response(400, "invalid", str(error))
        grant: Grant | None = None
        if resource_type is not None:
            try:
                grant = network.authority.check(request.headers.get("authorization"))
            except AuthError as error:
                return _auth_error(error)
            if not grant.allows(resource_type):
                return _auth_error(
                    AuthError(
                        403,
                        "insufficient_scope",
                        f"the token's scopes do not cover {resource_type}",
                    )
                )
            if org.purposes is not None and grant.purpose not in org.purposes:
                return _auth_error(
                    AuthError(
                        403,
                        "insufficient_scope",
                        f"{org.id} does not answer for purpose of use {grant.purpose!r}",
                    )
                )
            wait = network.faults.rate_limit(grant.client_id, org)
            if wait > 0:
                return error_response(
                    429,
                    "throttled",
                    "rate limit for this client exceeded",
                    headers={"Retry-After": str(max(1, math.ceil(wait)))},
                )
        await network.faults.delay(org)
        fault = network.faults.request_fault(org, forced)
        if fault == "hang":
            return await fault_kit.hang(config)
        if fault is not None:
            early = fault_kit.status_fault_response(fault, config.fault.retry_after_s)
            if early is not None:
                return early
        response = await handler(org, forced, base_url(request))
        if isinstance(response, StreamingResponse):
            return response
        if fhir_json and response.status_code == 200:
            body_fault = network.faults.body_fault(org, forced)
            if body_fault == "malformed_json":
                response = _replace_body(response, fault_kit.malformed(bytes(response.body)))
            elif body_fault == "invalid_fhir":
                broken = fhir.break_fhir(orjson.loads(response.body))
                response = _replace_body(response, fhir.dumps(broken))
        if fault == "truncated_body":
            return _replace_body(response, fault_kit.truncate(bytes(response.body)))
        if fault == "dropped_connection":
            return fault_kit.DroppingResponse(
                bytes(response.body),
                status_code=response.status_code,
                media_type=response.media_type,
            )
        return response

    # -- organization endpoints ----------------------------------------------------
    # Plain Starlette routes, not FastAPI ones: they read their path parameters and the
    # request themselves, and FastAPI's per-request parameter resolution
    # (solve_dependencies and its endpoint wrapper) was ~13 % of the stand-in's CPU in
    # the throughput benchmark (docs/benchmarks.md, thirteenth session).

    async def metadata(request: Request) -> Response:
        async def handler(org: OrgConfig, forced: frozenset[str], base: str) -> Response:
            return _json(
                fhir.capability_statement(org, f"{base}/orgs/{org.id}/fhir", f"{base}/token")
            )

        org_id = request.path_params["org_id"]
        return await org_call(request, org_id, None, handler, kind="metadata")

    async def match(request: Request) -> Response:
        raw = await request.body()

        async def handler(org: OrgConfig, forced: frozenset[str], base: str) -> Response:
            return _match(network, org, raw, f"{base}/orgs/{org.id}/fhir")

        org_id = request.path_params["org_id"]
        return await org_call(request, org_id, "Patient", handler, kind="match")

    async def read_patient(request: Request) -> Response:
        patient_id = request.path_params["patient_id"]

        async def handler(org: OrgConfig, forced: frozenset[str], base: str) -> Response:
            index = network.population.index_of(org.id, patient_id)
            record = None if index is None else network.population.record(index, org.id)
            if record is None:
                return error_response(404, "not-found", f"no Patient/{patient_id} at {org.id}")
            return _json(fhir.patient(record, org))

        org_id = request.path_params["org_id"]
        return await org_call(request, org_id, "Patient", handler, kind="read")

    async def document_search(request: Request) -> Response:
        async def handler(org: OrgConfig, forced: frozenset[str], base: str) -> Response:
            return _document_search(network, org, request, forced, f"{base}/orgs/{org.id}/fhir")

        org_id = request.path_params["org_id"]
        return await org_call(request, org_id, "DocumentReference", handler, kind="search")

    async def binary(request: Request) -> Response:
        binary_id = request.path_params["binary_id"]

        async def handler(org: OrgConfig, forced: frozenset[str], base: str) -> Response:
            return _binary(network, org, binary_id, forced)

        org_id = request.path_params["org_id"]
        return await org_call(request, org_id, "Binary", handler, fhir_json=False, kind="binary")

    org = "/orgs/{org_id}/fhir"
    app.add_route(f"{org}/metadata", metadata, methods=["GET"])
    app.add_route(f"{org}/Patient/$match", match, methods=["POST"])
    app.add_route(f"{org}/Patient/{{patient_id}}", read_patient, methods=["GET"])
    app.add_route(f"{org}/DocumentReference", document_search, methods=["GET"])
    app.add_route(f"{org}/Binary/{{binary_id}}", binary, methods=["GET"])
    return app


def _replace_body(response: Response, body: bytes) -> Response:
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(
        body, status_code=response.status_code, headers=headers, media_type=response.media_type
    )


def _match(network: Network, org: OrgConfig, raw: bytes, base: str) -> Response:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return error_response(400, "structure", "the body is not JSON")
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return error_response(400, "structure", "$match takes a Parameters resource")
    patient: Any = None
    only_certain = False
    count = network.config.match.default_count
    for name, parameter in fhir.parameters_values(body):
        if name == "resource":
            patient = parameter.get("resource")
        elif name == "onlyCertainMatches":
            value = parameter.get("valueBoolean")
            if not isinstance(value, bool):
                return error_response(400, "invalid", "onlyCertainMatches takes valueBoolean")
            only_certain = value
        elif name == "count":
            value = parameter.get("valueInteger")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                return error_response(400, "invalid", "count takes a positive valueInteger")
            count = min(value, network.config.match.max_count)
    if not isinstance(patient, dict):
        return error_response(400, "required", "the 'resource' parameter (a Patient) is required")
    try:
        query = parse_query(patient)
    except MatchInputError as error:
        return error_response(400, "incomplete", str(error))
    candidates = network.matcher.match(org.id, fhir.mrn_system(org.id), query)
    if only_certain:
        # FHIR $match: with onlyCertainMatches, several certain candidates are no answer.
        certain = [c for c in candidates if c.grade == "certain"]
        candidates = certain if len(certain) == 1 else []
    entries = [
        fhir.match_entry(base, fhir.patient(c.record, org), c.score, c.grade)
        for c in candidates[:count]
    ]
    return _json(fhir.searchset(entries, self_url=f"{base}/Patient/$match"))


def _patient_param(value: str) -> str:
    # patient=123, patient=Patient/123 and a full URL all name the same patient.
    return value.rstrip("/").rsplit("/", 1)[-1]


def _document_search(
    network: Network, org: OrgConfig, request: Request, forced: frozenset[str], base: str
) -> Response:
    params = request.query_params
    raw_patient = params.get("patient") or params.get("subject")
    if not raw_patient:
        return error_response(400, "required", "search DocumentReference by patient")
    patient_id = _patient_param(raw_patient)
    docs = network.config.documents
    try:
        page_size = min(int(params.get("_count", docs.page_size)), docs.max_page_size)
        offset = int(params.get("_offset", 0))
    except ValueError:
        return error_response(400, "invalid", "_count and _offset take integers")
    if page_size < 1 or offset < 0:
        return error_response(400, "invalid", "_count must be >= 1 and _offset >= 0")
    status = params.get("status")
    query = {"patient": patient_id, **({"status": status} if status else {}), "_count": page_size}

    def page_url(at: int) -> str:
        return f"{base}/DocumentReference?{urlencode({**query, '_offset': at})}"

    index = network.population.index_of(org.id, patient_id)
    if index is None or (status is not None and "current" not in status.split(",")):
        return _json(fhir.searchset([], self_url=page_url(offset)))
    total = network.documents.count(index, org.id)
    entries = []
    for doc_index in range(offset, min(total, offset + page_size)):
        faults = network.faults.document_faults(org, patient_id, doc_index, forced)
        binary_id = BinaryId(
            patient_id, doc_index, "wrong_patient" in faults, "oversized" in faults
        )
        served = network.documents.served(
            org, index, doc_index, binary_id.wrong_patient, binary_id.oversized
        )
        url = f"{base}/Binary/{binary_id}"
        if "foreign_host" in faults:
            scheme, _, rest = url.partition("://")
            url = f"{scheme}://{network.config.fault.foreign_host}/{rest.split('/', 1)[1]}"
        size, sha1 = served.size, served.sha1
        if "wrong_size" in faults:
            size = size + 1 + size // 3
        if "wrong_hash" in faults:
            sha1 = bytes(b ^ 0x5A for b in sha1)
        resource = fhir.document_reference(
            # The reference keeps its own id even when the bytes are someone else's.
            doc_id=make_doc_id(org.id, patient_id, doc_index),
            patient_id=patient_id,
            org=org,
            title=served.title,
            type_code=served.type_code,
            date=served.date,
            content_type=served.content_type,
            url=url,
            size=size,
            sha1=sha1,
        )
        entries.append(
            {
                "fullUrl": f"{base}/DocumentReference/{resource['id']}",
                "resource": resource,
                "search": {"mode": "match"},
            }
        )
    next_url: str | None = None
    if offset + page_size < total:
        next_url = page_url(offset + page_size)
    if network.faults.looping(org, patient_id, forced):
        # The last page points back to the first; a one-page answer points at itself.
        next_url = page_url(offset + page_size) if offset + page_size < total else page_url(0)
    return _json(fhir.searchset(entries, self_url=page_url(offset), next_url=next_url, total=total))


def _binary(network: Network, org: OrgConfig, binary_id: str, forced: frozenset[str]) -> Response:
    parsed = BinaryId.parse(binary_id)
    index = None if parsed is None else network.population.index_of(org.id, parsed.patient_id)
    if parsed is None or index is None:
        return error_response(404, "not-found", f"no Binary/{binary_id} at {org.id}")
    if parsed.index >= network.documents.count(index, org.id):
        return error_response(404, "not-found", f"no Binary/{binary_id} at {org.id}")
    served: Served = network.documents.served(
        org,
        index,
        parsed.index,
        parsed.wrong_patient or "wrong_patient" in forced,
        parsed.oversized or "oversized" in forced,
    )
    if served.streamed:
        return StreamingResponse(
            network.documents.oversized_chunks(served.size),
            media_type=served.content_type,
            headers={"Content-Length": str(served.size)},
        )
    return Response(served.body, media_type=served.content_type)
