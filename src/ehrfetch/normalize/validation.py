"""FHIR validation of the resources ehrfetch stores, done once per distinct resource.

Validation with ``fhir.resources`` is most of normalization's CPU time, and sites resend
the same facts in every document: a participant's 30 CCDs from one site list the same
problems and allergies 30 times, and a fact's stored form (its id and subject derive
from the research id and the dedup key) is the same each time. So a resource that
validated is remembered by a digest of its content, and the same content is not
validated again in this process.

Only the verdict is cached, never a model: normalization stores the dict it built, and
``model_validate``'s result is thrown away, so the stored body is the same with or
without the cache. Only successes are remembered; an invalid resource is validated (and
its reason worked out) every time. Different content is a different digest, so a
resource one character away from a cached valid one is still validated.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import orjson
from pydantic import ValidationError

from ehrfetch.fhir_models import model_class

CACHE_SIZE = 50_000
"""Digests of valid resources kept (~10 MB): a few busy participants' worth of facts."""

# The digest must tell apart everything validation tells apart. orjson writes NaN and
# ±Infinity as null, so a body whose JSON has a null is not cached (see _digest); it
# also writes datetimes, dataclasses and str/int/dict/list subclasses as if they were
# their plain JSON form, which validation may treat differently — with these options
# orjson refuses them instead, and such a body is validated uncached. What normalize
# builds (orjson.loads output, the C-CDA mappers' dicts) never has any of these.
_DUMP_OPTIONS = (
    orjson.OPT_SORT_KEYS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)

_valid: OrderedDict[bytes, None] = OrderedDict()
_lock = threading.Lock()


def validate_resource(resource: dict[str, Any]) -> str | None:
    """Why ``resource`` is not valid FHIR R4B (loc and message only), or None if it is."""
    digest = _digest(resource)
    if digest is not None:
        with _lock:
            if digest in _valid:
                _valid.move_to_end(digest)
                return None
    problem = _validate_uncached(resource)
    if problem is None and digest is not None:
        with _lock:
            _valid[digest] = None
            _valid.move_to_end(digest)
            while len(_valid) > CACHE_SIZE:
                _valid.popitem(last=False)
    return problem


def clear_validation_cache() -> None:
    """Forget every verdict (benchmarks time validation itself, not cache hits)."""
    with _lock:
        _valid.clear()


def validation_cache_size() -> int:
    with _lock:
        return len(_valid)


def _digest(resource: dict[str, Any]) -> bytes | None:
    try:
        data = orjson.dumps(resource, option=_DUMP_OPTIONS)
    except orjson.JSONEncodeError:
        return None  # not plain JSON data (see _DUMP_OPTIONS): never cached
    if b":null" in data or b"[null" in data or b",null" in data:
        return None  # a null may have been NaN or Infinity; rare, so just not cached
    return hashlib.sha256(data).digest()


def _validate_uncached(resource: dict[str, Any]) -> str | None:
    model = model_class(resource["resourceType"])  # lru_cached by fhir.resources
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        # loc and msg only: the input value may be anything the site wrote.
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        return f"invalid FHIR at {where}: {first['msg']}{more}"
    return None
