"""Reading the network's answers: JSON, FHIR validation, and the shapes ehrfetch uses.

Validation uses fhir.resources' R4B models for R4 data: fhir.resources 8.x ships R5
(default), R4B and STU3, but no R4 package, and R4B is R4 with the few changes no
network answer here depends on. Validation runs once per answer and the JSON dicts
(not the models) are handed on.

Error messages name where the answer is wrong (``entry.0.resource.birthDate``) and what
kind of wrong, never the value: values are demographics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import import_module
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from ehrfetch.errors import InvalidResponse
from ehrfetch.network.model import AttachmentRef, DocumentRefEntry, MatchCandidate
from ehrfetch.network.retry import Retryable

MATCH_GRADE_URL = "http://hl7.org/fhir/StructureDefinition/match-grade"

Json = dict[str, Any]
Invalid = Callable[[str], InvalidResponse]
"""Makes the InvalidResponse for one answer (bound to its organization and URL)."""


def load_json(body: bytes, invalid: Invalid) -> Any:
    """The JSON of an answer; InvalidResponse when it is not JSON.

    A body whose JSON stops exactly where the body stops was cut short (a server or a
    proxy that gave up mid-write, with a Content-Length to match): another try may well
    get all of it, so that one is a Retryable. JSON broken in the middle is a bug that
    a retry will not fix.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if error.pos >= len(body.rstrip()):
            raise Retryable(invalid("body ends before its JSON does (truncated)")) from None
        # The decoder's message quotes no input, only the position.
        raise invalid(f"not JSON ({error.args[0]})") from None


def load_object(body: bytes, invalid: Invalid) -> Json:
    data = load_json(body, invalid)
    if not isinstance(data, dict):
        raise invalid(f"not a JSON object but a {type(data).__name__}")
    return data


@cache
def _model(resource_type: str) -> type[BaseModel]:
    module = import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    model: type[BaseModel] = getattr(module, resource_type)
    return model


def validate(data: Json, resource_type: str, invalid: Invalid) -> Json:
    """``data`` when it is a valid FHIR ``resource_type``; InvalidResponse otherwise."""
    found = data.get("resourceType")
    if found != resource_type:
        shown = found if isinstance(found, str) and found.isidentifier() else "something else"
        raise invalid(f"expected a FHIR {resource_type}, got {shown}")
    try:
        _model(resource_type).model_validate(data)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise invalid(
            f"not valid FHIR {resource_type}: {len(problems)} problem(s), "
            f"first at {where} ({first['type']})"
        ) from None
    return data


def searchset(body: bytes, invalid: Invalid) -> Json:
    bundle = validate(load_object(body, invalid), "Bundle", invalid)
    if bundle.get("type") != "searchset":
        raise invalid("expected a searchset Bundle")
    return bundle


def link(bundle: Json, relation: str) -> str | None:
    for item in bundle.get("link") or []:
        if item.get("relation") == relation and isinstance(item.get("url"), str):
            url: str = item["url"]
            return url
    return None


def _matches(bundle: Json) -> list[Json]:
    """Entries that are results (not ``outcome`` warnings or ``include``-d extras)."""
    return [
        entry
        for entry in bundle.get("entry") or []
        if (entry.get("search") or {}).get("mode", "match") == "match"
    ]


def match_candidates(body: bytes, invalid: Invalid) -> list[MatchCandidate]:
    """A $match answer, best first (by score; the server's order among equals)."""
    found: list[tuple[str, Json, float | None, str | None]] = []
    for entry in _matches(searchset(body, invalid)):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") != "Patient":
            raise invalid("a $match result that is not a Patient")
        if not resource.get("id"):
            raise invalid("a $match Patient without an id")
        search = entry.get("search") or {}
        score = search.get("score")
        grade = next(
            (
                ext.get("valueCode")
                for ext in search.get("extension") or []
                if ext.get("url") == MATCH_GRADE_URL
            ),
            None,
        )
        found.append((resource["id"], resource, None if score is None else float(score), grade))
    # sorted() is stable: equal scores (and unscored entries, last) keep the server's order.
    ordered = sorted(found, key=lambda item: (item[2] is None, -(item[2] or 0.0)))
    return [
        MatchCandidate(network_patient_id=pid, resource=res, score=score, grade=grade, rank=rank)
        for rank, (pid, res, score, grade) in enumerate(ordered, start=1)
    ]


@dataclass(frozen=True, slots=True)
class DocumentPage:
    entries: list[DocumentRefEntry]
    self_url: str | None
    next_url: str | None


def _attachments(resource: Json) -> tuple[AttachmentRef, ...]:
    refs = []
    for content in resource.get("content") or []:
        attachment = content.get("attachment") or {}
        # Inline (``data``) attachments have no URL to fetch; this network sends none.
        if isinstance(attachment.get("url"), str) and attachment["url"]:
            refs.append(
                AttachmentRef(
                    url=attachment["url"],
                    content_type=attachment.get("contentType"),
                    size=attachment.get("size"),
                    sha1=attachment.get("hash"),
                )
            )
    return tuple(refs)


def document_page(body: bytes, invalid: Invalid) -> DocumentPage:
    bundle = searchset(body, invalid)
    entries = []
    for entry in _matches(bundle):
        resource = entry.get("resource") or {}
        if resource.get("resourceType") != "DocumentReference":
            raise invalid("a DocumentReference search result that is not a DocumentReference")
        if not resource.get("id"):
            raise invalid("a DocumentReference without an id")
        subject = resource.get("subject") or {}
        entries.append(
            DocumentRefEntry(
                id=resource["id"],
                resource=resource,
                attachments=_attachments(resource),
                subject_reference=subject.get("reference"),
            )
        )
    return DocumentPage(entries, link(bundle, "self"), link(bundle, "next"))
