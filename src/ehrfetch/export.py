"""``ehrfetch export``: the store as FHIR Bulk Data NDJSON files.

The layout is what a Bulk Data ``$export`` leaves behind: one ``{ResourceType}.ndjson``
per type (``Patient``, the clinical types, ``Provenance``) and ``manifest.json`` shaped
like the ``$export`` completion response — ``transactionTime``, ``request``,
``requiresAccessToken`` (false: local files), ``output`` [{type, url, count}] and
``error`` [{type: OperationOutcome, url, count}]. ``url`` is the file's name, relative
to the manifest.

* **Pseudonymous by default.** A participant's Patient is their research id (as ``id``
  and as an identifier) and nothing else; names, birth date, gender, address and
  telecom only with ``demographics=True``. Never the SSN digits.
* **Every line validates** with ``fhir.resources.R4B``: each line is validated once, from
  the exact bytes written (``model_validate_json``). A line that does not validate is
  not written; an OperationOutcome naming its type, id and the failing element (never
  its values) goes to ``OperationOutcome.ndjson`` and the manifest's ``error``.
  Validation is the export's main cost: see ``ehrfetch.bench.export``.
* **Streams.** Rows are read a chunk at a time and written as they come; what is held
  at once is one chunk and one open file, whatever the store's size.
* **Complete or visibly not.** The manifest is written last: a folder without one is
  an export that did not finish. A folder that already holds an export is refused,
  so stale files of an earlier export never mix with a new one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import IO, Any

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from ehrfetch.errors import ConfigError
from ehrfetch.fhir_models import model_class
from ehrfetch.store.export import (
    DEFAULT_CHUNK,
    AddressRow,
    ExportScope,
    NameRow,
    ParticipantRow,
    participant_key,
    stream_participants,
    stream_provenance,
    stream_resources,
)

MANIFEST = "manifest.json"
ERRORS_TYPE = "OperationOutcome"
DEFAULT_RESEARCH_ID_SYSTEM = "urn:ehrfetch:research-id"
_LINE_BUFFER = 1 << 20
ProgressHook = Callable[[int], None]
"""Called with the number of lines written so far, every ``progress_every`` lines."""


@dataclass(frozen=True, slots=True)
class OutputFile:
    type: str
    url: str
    count: int


@dataclass
class ExportResult:
    directory: Path
    transaction_time: datetime
    output: list[OutputFile] = field(default_factory=list)
    errors: list[OutputFile] = field(default_factory=list)

    @property
    def lines(self) -> int:
        return sum(f.count for f in self.output)

    @property
    def invalid(self) -> int:
        return sum(f.count for f in self.errors)

    def manifest(self, request: str) -> dict[str, Any]:
        return {
            "transactionTime": self.transaction_time.isoformat().replace("+00:00", "Z"),
            "request": request,
            "requiresAccessToken": False,
            "output": [{"type": f.type, "url": f.url, "count": f.count} for f in self.output],
            "error": [{"type": f.type, "url": f.url, "count": f.count} for f in self.errors],
        }


class _Validator:
    """One R4B model per type, looked up once; a line is validated from its bytes."""

    def __init__(self) -> None:
        self._models: dict[str, type[BaseModel]] = {}

    def problem(self, kind: str, line: bytes) -> str | None:
        model = self._models.get(kind)
        if model is None:
            try:
                model = model_class(kind)
            except KeyError:
                return f"{kind} is not an R4B resource type"
            self._models[kind] = model
        try:
            model.model_validate_json(line)
        except ValidationError as exc:
            # loc and msg only: the input value may be anything a site wrote.
            errors = exc.errors()
            where = ".".join(str(p) for p in errors[0]["loc"])
            more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
            return f"invalid FHIR at {where}: {errors[0]['msg']}{more}"
        return None


class _Writer:
    """Writes each type's lines to its file, one open file at a time."""

    def __init__(self, directory: Path, progress: ProgressHook | None, progress_every: int) -> None:
        self.directory = directory
        self.validator = _Validator()
        self.output: list[OutputFile] = []
        self.errors: list[OutputFile] = []
        self._errors_file: IO[bytes] | None = None
        self._error_count = 0
        self._progress = progress
        self._progress_every = progress_every
        self._written = 0

    def write_type(self, kind: str, bodies: Iterable[dict[str, Any]]) -> None:
        name = f"{kind}.ndjson"
        earlier = next((f for f in self.output if f.type == kind), None)
        count = 0 if earlier is None else earlier.count
        mode = "wb" if earlier is None else "ab"  # a type met twice (Patient stored as data)
        with (self.directory / name).open(mode, buffering=_LINE_BUFFER) as fh:
            for body in bodies:
                line = orjson.dumps(body)
                problem = self.validator.problem(kind, line)
                if problem is not None:
                    self._error(kind, body.get("id"), problem)
                    continue
                fh.write(line)
                fh.write(b"\n")
                count += 1
                self._tick()
        if earlier is not None:
            self.output[self.output.index(earlier)] = OutputFile(kind, name, count)
        elif count:
            self.output.append(OutputFile(kind, name, count))
        else:
            (self.directory / name).unlink()  # nothing (valid) of this type: no empty file

    def _tick(self) -> None:
        self._written += 1
        if self._progress is not None and self._written % self._progress_every == 0:
            self._progress(self._written)

    def _error(self, kind: str, fhir_id: object, problem: str) -> None:
        if self._errors_file is None:
            self._errors_file = (self.directory / f"{ERRORS_TYPE}.ndjson").open("wb")
        what = f"{kind}/{fhir_id}" if isinstance(fhir_id, str) else f"{kind} (no id)"
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {
                    "severity": "error",
                    "code": "invalid",
                    "diagnostics": f"{what} not exported: {problem}",
                    "expression": [kind],
                }
            ],
        }
        self._errors_file.write(orjson.dumps(outcome) + b"\n")
        self._error_count += 1

    def close(self) -> None:
        if self._errors_file is not None:
            self._errors_file.close()
            self.errors.append(OutputFile(ERRORS_TYPE, f"{ERRORS_TYPE}.ndjson", self._error_count))


def export_ndjson(
    session: Session,
    directory: Path,
    *,
    scope: ExportScope = ExportScope(),  # noqa: B008 - frozen, so a safe default
    demographics: bool = False,
    research_id_system: str = DEFAULT_RESEARCH_ID_SYSTEM,
    request: str = "ehrfetch export --format ndjson",
    now: datetime | None = None,
    chunk: int = DEFAULT_CHUNK,
    progress: ProgressHook | None = None,
    progress_every: int = 10_000,
) -> ExportResult:
    """Write the store's resources in scope to ``directory`` (created if missing).

    Raises :class:`ConfigError` when ``directory`` is a file or already holds an export,
    and :class:`~ehrfetch.errors.StoreError` for an unknown research id. Run it inside
    one transaction (PostgreSQL: REPEATABLE READ) for a consistent snapshot.
    """
    transaction_time = (now or datetime.now(UTC)).astimezone(UTC)
    if scope.research_id is not None:
        participant_key(session, scope.research_id)  # unknown: fail before writing
    _prepare(directory)
    result = ExportResult(directory, transaction_time)
    writer = _Writer(directory, progress, progress_every)
    try:
        patients = stream_participants(session, scope, demographics=demographics, chunk=chunk)
        writer.write_type("Patient", (patient_resource(p, research_id_system) for p in patients))
        for kind, bodies in _by_type(stream_resources(session, scope, chunk)):
            writer.write_type(kind, bodies)
        writer.write_type("Provenance", stream_provenance(session, scope, chunk))
    finally:
        writer.close()
    result.output = writer.output
    result.errors = writer.errors
    manifest = orjson.dumps(result.manifest(request), option=orjson.OPT_INDENT_2)
    temporary = directory / f".{MANIFEST}.tmp"
    temporary.write_bytes(manifest + b"\n")
    os.replace(temporary, directory / MANIFEST)
    return result


def patient_resource(row: ParticipantRow, research_id_system: str) -> dict[str, Any]:
    """The participant as a FHIR Patient: pseudonymous unless the row carries demographics."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": row.research_id,
        "identifier": [{"system": research_id_system, "value": row.research_id}],
    }
    names = [_name(n) for n in row.names]
    if names:
        patient["name"] = [n for n in names if n]
    telecom = [
        {"system": system, "value": value, "use": "home"}
        for system, value in (("phone", row.phone), ("email", row.email))
        if value
    ]
    if telecom:
        patient["telecom"] = telecom
    if row.sex is not None:
        patient["gender"] = row.sex.value
    if row.birth_date is not None:
        patient["birthDate"] = row.birth_date.isoformat()
    addresses = [_address(a) for a in row.addresses]
    if addresses:
        patient["address"] = [a for a in addresses if a]
    return {k: v for k, v in patient.items() if v != []}


def _name(n: NameRow) -> dict[str, Any]:
    name: dict[str, Any] = {"use": "official" if n.current else "old"}
    given = [part for part in (n.given, n.middle) if part]
    if n.family:
        name["family"] = n.family
    if given:
        name["given"] = given
    if n.suffix:
        name["suffix"] = [n.suffix]
    return name if len(name) > 1 else {}


def _address(a: AddressRow) -> dict[str, Any]:
    address: dict[str, Any] = {"use": "home" if a.current else "old"}
    lines = [line for line in (a.line1, a.line2) if line]
    if lines:
        address["line"] = lines
    fields = (("city", a.city), ("state", a.state), ("postalCode", a.postal_code))
    address.update({key: value for key, value in fields if value})
    return address if len(address) > 1 else {}


def _by_type(
    rows: Iterator[tuple[str, dict[str, Any]]],
) -> Iterator[tuple[str, Iterator[dict[str, Any]]]]:
    """Split a stream ordered by type into one sub-stream per type (like groupby)."""
    for kind, group in groupby(rows, key=lambda row: row[0]):
        yield kind, (body for _, body in group)


def _prepare(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"--out {directory}: is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / MANIFEST).exists() or any(directory.glob("*.ndjson")):
        raise ConfigError(
            f"--out {directory}: already holds an export (manifest.json or *.ndjson); "
            "choose an empty or new folder"
        )
