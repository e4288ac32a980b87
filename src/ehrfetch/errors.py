"""One exception tree for ehrfetch.

Every error ehrfetch raises on purpose derives from :class:`EhrfetchError`, so a caller
(the CLI, a flow, a batch) can catch "anything ehrfetch knows about" in one clause and
let programming errors through. Each error names its cause and its place (file and line,
URL, setting) in its message, and never carries demographics or secrets: messages end
up in logs, CLI output and Prefect artifacts.

    EhrfetchError
    ├── ConfigError            a settings file or value that cannot be used
    ├── StoreError             the store cannot do what was asked
    │   ├── SchemaError        the database schema is missing, behind or unknown
    │   └── ConsentNotInForce  a write for a participant whose consent is withdrawn
    ├── InputError             an input file that cannot be read at all
    │   └── InputFileError     ... with the file (and line) where it failed
    ├── NetworkError           a call to the network failed (after any retries)
    │   ├── TransportError     connection refused or dropped, timed out
    │   ├── HTTPStatusError    an answer with an error status
    │   │   └── AuthError      401 (after one fresh token) or 403; or no token at all
    │   ├── ResponseTooLarge   a body past the size cap (reading stopped there)
    │   ├── InvalidResponse    not JSON, not valid FHIR, not the expected resource
    │   ├── ForeignHostError   a URL outside the organization's host (never requested)
    │   └── PagingLoopError    a next link that was already followed
    ├── DocumentError          a fetched document that cannot be kept as the participant's
    │   ├── DocumentMismatch   its bytes do not have the declared size or hash
    │   ├── WrongPatientError  it is about another patient
    │   └── UnreadableDocument it cannot be parsed as the format it claims
    └── Interrupted            a run stopped on SIGTERM or Ctrl-C (what it did is closed)

Network and document errors carry a short stable ``code`` (``transport``, ``http_503``,
``too_large``, …) that attempts, quarantine rows and run summaries count by, the
organization id, and a URL with its query string removed (queries carry patient ids).

Row-level problems in an input file (a bad roster row, an unknown research id in a
consents file) are not exceptions: they are collected as :class:`RowProblem` records
so the rest of the file goes on, and the import reports them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class EhrfetchError(Exception):
    """Base of every error ehrfetch raises on purpose."""


class ConfigError(EhrfetchError):
    """A settings file or value that cannot be used."""


class StoreError(EhrfetchError):
    """The store cannot do what was asked."""


class SchemaError(StoreError):
    """The database schema is missing, behind the code, or ahead of it."""


class ConsentNotInForce(StoreError):
    """An acquisition write refused: the participant's consent is not (or no longer) in force."""

    code = "consent_withdrawn"


class InputError(EhrfetchError):
    """An input file that cannot be read at all (as opposed to one bad row)."""


class InputFileError(InputError):
    """An input file that cannot be read, with the place where reading failed."""

    def __init__(self, path: Path | str, reason: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.reason = reason
        self.line = line
        where = f"{self.path}" if line is None else f"{self.path}, line {line}"
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class RowProblem:
    """One bad row of an input file: where it is and why it was skipped.

    ``reason`` must never quote the offending value: values are demographics.
    ``research_id`` is given when it could be read, because operators fix rows by it.
    """

    line: int
    column: str
    reason: str
    research_id: str | None = None

    def __str__(self) -> str:
        who = f" [{self.research_id}]" if self.research_id else ""
        return f"line {self.line}, {self.column}{who}: {self.reason}"


class NetworkError(EhrfetchError):
    """A call to the network failed, after any retries it was allowed."""

    code = "network"

    def __init__(
        self, message: str, *, organization_id: str | None = None, url: str | None = None
    ) -> None:
        self.organization_id = organization_id
        self.url = sanitize_url(url) if url is not None else None
        where = " ".join(part for part in (organization_id, self.url) if part)
        super().__init__(f"{where}: {message}" if where else message)


class TransportError(NetworkError):
    """Connection refused or dropped, or no answer within the timeout."""

    code = "transport"


class HTTPStatusError(NetworkError):
    """An answer with an error status that was not (or no longer) retried."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        organization_id: str | None = None,
        url: str | None = None,
    ) -> None:
        self.status = status
        self.code = self._code(status)
        super().__init__(f"HTTP {status}: {message}", organization_id=organization_id, url=url)

    @staticmethod
    def _code(status: int) -> str:
        return f"http_{status}"


class AuthError(HTTPStatusError):
    """401 after one fresh token, 403, or a token request that was refused."""

    @staticmethod
    def _code(status: int) -> str:
        return "auth"


class ResponseTooLarge(NetworkError):
    """A body larger than the size cap; reading stopped at the cap."""

    code = "too_large"


class InvalidResponse(NetworkError):
    """An answer that is not JSON, not valid FHIR, or not the resource expected."""

    code = "invalid_response"


class ForeignHostError(NetworkError):
    """A URL outside the organization's registered host; it was never requested."""

    code = "foreign_host"


class PagingLoopError(NetworkError):
    """A ``next`` link that points at a page already read."""

    code = "paging_loop"


class DocumentError(EhrfetchError):
    """A fetched document that cannot be kept as the participant's (it is quarantined)."""

    code = "document"


class DocumentMismatch(DocumentError):
    """The bytes do not have the size or hash the DocumentReference declared."""

    code = "document_mismatch"


class WrongPatientError(DocumentError):
    """The document is about another patient than the linked one."""

    code = "wrong_patient"


class UnreadableDocument(DocumentError):
    """The document cannot be parsed as the format its content type claims."""

    code = "unreadable_document"


def sanitize_url(url: str) -> str:
    """The URL without query string, fragment or credentials: safe to log.

    Queries carry patient ids (``?patient=…``) and user info carries secrets.
    """
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class Interrupted(EhrfetchError):
    """A run was asked to stop (SIGTERM or SIGINT) and stopped cleanly.

    The participants in flight were finished, the batches not done were closed as
    failed with the reason, so ``ehrfetch rerun --failed`` takes them up at once.
    ``summary`` is what the run did (a ``runs.RunSummary``; typed loosely so this
    module stays at the bottom of the import graph). Exit status 128 + the signal's
    number, as a shell reports a process the signal stopped.
    """

    def __init__(self, signal_name: str, signal_number: int, summary: object = None) -> None:
        super().__init__(
            f"stopped by {signal_name}: the participants in flight were finished and the "
            "batches not done were closed as failed"
        )
        self.signal_name = signal_name
        self.exit_code = 128 + signal_number
        self.summary = summary
