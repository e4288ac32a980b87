"""URL rules: which origin a URL belongs to, how relative references resolve."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int | None]


def origin(url: str) -> Origin:
    """(scheme, host, port) with the default port filled in, lower-cased.

    ``http://h`` and ``http://h:80`` are one origin; ``http://h`` and ``https://h`` are
    not (a downgrade is a different place).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: no origin can match it
        return (scheme, "", -1)
    return (scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme))


def host_of(url: str) -> str:
    """``host[:port]`` as written in the URL (lower-cased)."""
    return urlsplit(url).netloc.rpartition("@")[2].lower()


def same_origin(url: str, base_url: str) -> bool:
    scheme, host, _ = origin(url)
    return scheme in _DEFAULT_PORTS and bool(host) and origin(url) == origin(base_url)


def resolve(url: str, base_url: str) -> str:
    """An attachment or paging URL made absolute.

    FHIR relative references (``Binary/1``) are relative to the service base, which
    ``urljoin`` would get wrong (it would drop the base's last path segment).
    """
    if urlsplit(url).scheme:
        return url
    if url.startswith("/"):
        return urljoin(base_url, url)
    return f"{base_url.rstrip('/')}/{url}"


def canonical(url: str) -> str:
    """A URL in one spelling, so two spellings of one page compare equal.

    Query parameters are sorted, the host is lower-cased and the default port dropped.
    """
    parts = urlsplit(url)
    scheme, host, port = origin(url)
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    return urlunsplit((scheme, netloc, parts.path or "/", query, ""))
