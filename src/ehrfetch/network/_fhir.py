"""Reading the network's answers: JSON, FHIR validation, and the shapes ehrfetch uses.

Validation uses fhir.resources' R4B models for R4 data: fhir.resources 8.x ships R5
(default), R4B and STU3, but no R4 package, and R4B is R4 with the few changes no
network answer here depends on. Validation runs once per answer and the JSON dicts
(not the models) are handed on.

Error messages name where the answer is wrong (``entry.0.resource.birthDate``) and what
kind of wrong, never the value: values are demographics.

Searchset Bundles (every $match and search answer) take a shortcut that keeps the same
verdicts: their own elements, when in the few plain shapes a searchset takes, are checked
here, and only the entry resources — what ehrfetch keeps — go through their models. That
skips what costs most in a whole-Bundle validation and checks nothing ehrfetch keeps: a
validator per nested element, and an import by name per entry resource. Anything else,
and any answer the shortcut does not accept, gets the whole Bundle's validation, so a bad
answer is refused with exactly the message it always was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeGuard

import orjson
from pydantic import ValidationError

from ehrfetch.errors import InvalidResponse
from ehrfetch.fhir_models import model_class
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


def validate(data: Json, resource_type: str, invalid: Invalid) -> Json:
    """``data`` when it is a valid FHIR ``resource_type``; InvalidResponse otherwise."""
    found = data.get("resourceType")
    if found != resource_type:
        shown = found if isinstance(found, str) and found.isidentifier() else "something else"
        raise invalid(f"expected a FHIR {resource_type}, got {shown}")
    try:
        model_class(resource_type).model_validate(data)
    except ValidationError as error:
        problems = error.errors(include_url=False, include_input=False, include_context=False)
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise invalid(
            f"not valid FHIR {resource_type}: {len(problems)} problem(s), "
            f"first at {where} ({first['type']})"
        ) from None
    except (KeyError, LookupError, TypeError, ValueError) as error:
        # fhir.resources raises these itself for some inputs (an entry whose resourceType
        # it does not know is a KeyError): still a bad answer, not a crash of the call.
        # The type only: the message would quote the answer.
        raise invalid(
            f"not valid FHIR {resource_type}: refused by the FHIR models ({type(error).__name__})"
        ) from None
    return data


# -- the searchset shortcut ---------------------------------------------------------
# Each set below is a subset of what the R4B model accepts for that element (test_fhir.py
# checks the shortcut against the model): a value outside it is not wrong, only left to
# the model.

_ENTRY_RESOURCES: Final = frozenset({"Patient", "DocumentReference", "OperationOutcome"})
_LINK_RELATIONS: Final = frozenset({"self", "next", "previous", "prev", "first", "last"})
_SEARCH_MODES: Final = frozenset({"match", "include", "outcome"})
_MATCH_GRADES: Final = frozenset({"certain", "probable", "possible", "certainly-not"})
_BUNDLE_KEYS: Final = frozenset({"resourceType", "type", "total", "link", "entry"})
_LINK_KEYS: Final = frozenset({"relation", "url"})
_ENTRY_KEYS: Final = frozenset({"fullUrl", "resource", "search"})
_SEARCH_KEYS: Final = frozenset({"mode", "score", "extension"})
_GRADE_KEYS: Final = frozenset({"url", "valueCode"})
_PLAIN_URI: Final = re.compile(r"[!-~]{1,4096}")
"""Printable ASCII without spaces (a FHIR uri is any string without whitespace)."""
_DECIMAL: Final = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?")
"""A FHIR decimal, as fhir_core spells it (it matches ``str()`` of the number)."""
_MAX_UNSIGNED_INT: Final = 2**31 - 1


def _one_of(value: object, allowed: frozenset[str]) -> TypeGuard[str]:
    # The type first: a list or a dict in the answer would make ``in`` raise TypeError.
    return type(value) is str and value in allowed


def _plain_uri(value: object) -> bool:
    return type(value) is str and _PLAIN_URI.fullmatch(value) is not None


def _plain_list(value: object) -> bool:
    return type(value) is list and len(value) > 0


def _plain_object(value: object, keys: frozenset[str]) -> bool:
    return type(value) is dict and len(value) > 0 and value.keys() <= keys


def _plain_search(search: object) -> bool:
    if not _plain_object(search, _SEARCH_KEYS):
        return False
    assert isinstance(search, dict)
    if "mode" in search and not _one_of(search["mode"], _SEARCH_MODES):
        return False
    if "score" in search:
        score = search["score"]
        if type(score) not in (int, float) or _DECIMAL.fullmatch(str(score)) is None:
            return False
    if "extension" in search:
        extensions = search["extension"]
        if not _plain_list(extensions):
            return False
        for extension in extensions:
            if not (
                _plain_object(extension, _GRADE_KEYS)
                and extension.keys() == _GRADE_KEYS
                and extension["url"] == MATCH_GRADE_URL
                and _one_of(extension["valueCode"], _MATCH_GRADES)
            ):
                return False
    return True


def _plain_searchset(bundle: Json) -> list[tuple[str, Json]] | None:
    """The entry resources, when all the rest of ``bundle`` is a plain searchset.

    Plain: only the elements and values listed above, each one in a shape the R4B
    Bundle model accepts. None when anything is not (which does not make it wrong).
    """
    if not bundle.keys() <= _BUNDLE_KEYS or bundle.get("type") != "searchset":
        return None
    if "total" in bundle:
        total = bundle["total"]
        if type(total) is not int or not 0 <= total <= _MAX_UNSIGNED_INT:
            return None
    if "link" in bundle:
        links = bundle["link"]
        if not _plain_list(links):
            return None
        for item in links:
            if not (
                _plain_object(item, _LINK_KEYS)
                and item.keys() == _LINK_KEYS
                and _one_of(item["relation"], _LINK_RELATIONS)
                and _plain_uri(item["url"])
            ):
                return None
    resources: list[tuple[str, Json]] = []
    if "entry" in bundle:
        entries = bundle["entry"]
        if not _plain_list(entries):
            return None
        for entry in entries:
            if not _plain_object(entry, _ENTRY_KEYS):
                return None
            if "fullUrl" in entry and not _plain_uri(entry["fullUrl"]):
                return None
            if "search" in entry and not _plain_search(entry["search"]):
                return None
            if "resource" in entry:
                resource = entry["resource"]
                if type(resource) is not dict:
                    return None
                kind = resource.get("resourceType")
                if not _one_of(kind, _ENTRY_RESOURCES):
                    return None
                resources.append((kind, resource))
    return resources


def _valid_plain_searchset(data: Json) -> bool:
    """True when ``data`` is a plain searchset whose entry resources are valid FHIR.

    False says only that the shortcut cannot tell: :func:`validate` then decides.
    """
    if data.get("resourceType") != "Bundle":
        return False
    resources = _plain_searchset(data)
    if resources is None:
        return False
    try:
        for kind, resource in resources:
            model_class(kind).model_validate(resource)
    except Exception:
        # Whatever went wrong, the whole Bundle's validation reports it, as it always did.
        return False
    return True


def searchset(body: bytes, invalid: Invalid) -> Json:
    bundle = load_object(body, invalid)
    if not _valid_plain_searchset(bundle):
        validate(bundle, "Bundle", invalid)
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
