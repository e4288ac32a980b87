"""One exception tree for ehrfetch.

Every error ehrfetch raises on purpose derives from :class:`EhrfetchError`, so a caller
(the CLI, a flow, a batch) can catch "anything ehrfetch knows about" in one clause and
let programming errors through. Each error names its cause and its place (file and line,
URL, setting) in its message, and never carries demographics or secrets: messages end
up in logs, CLI output and Prefect artifacts.

    EhrfetchError
    ├── ConfigError            a settings file or value that cannot be used
    ├── StoreError             the store cannot do what was asked
    │   └── SchemaError        the database schema is missing, behind or unknown
    └── InputError             an input file that cannot be read at all
        └── InputFileError     ... with the file (and line) where it failed

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
