"""Reading the program's CSV files row by row, bad rows reported, never fatal.

The file is decoded with ``surrogateescape`` so one line of invalid UTF-8 does not
stop the file: its bytes survive as lone surrogates, and the row that holds them is
reported (with the column) and skipped. Line numbers are physical lines of the file,
the first line of a record that spans several.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from ehrfetch.cohort.fields import RESEARCH_ID
from ehrfetch.errors import InputFileError, RowProblem

_UNDECODABLE = re.compile("[\udc80-\udcff]")
# A record longer than this is not a roster row; the csv module's own default is 128 KiB.
_FIELD_LIMIT = 64 * 1024
csv.field_size_limit(_FIELD_LIMIT)


@dataclass(frozen=True, slots=True)
class CsvRow:
    line: int
    values: dict[str, str]


class CsvTable:
    """A CSV file with a header, as rows keyed by lower-cased column name."""

    def __init__(self, path: Path, *, required: tuple[str, ...], known: frozenset[str]) -> None:
        self.path = path
        try:
            # utf-8-sig drops a byte-order mark; newline="" lets csv see quoted newlines.
            self._file: IO[str] = path.open(
                encoding="utf-8-sig", errors="surrogateescape", newline=""
            )
        except OSError as exc:
            raise InputFileError(path, f"cannot open: {exc.strerror}") from None
        self._reader = csv.reader(self._file)
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            self._file.close()
            raise InputFileError(path, f"header is not valid CSV: {exc}", line=1) from None
        if header is None:
            self._file.close()
            raise InputFileError(path, "file is empty (no header row)")
        self.columns = [name.strip().lower() for name in header]
        self._check_header(required, known)

    def _check_header(self, required: tuple[str, ...], known: frozenset[str]) -> None:
        if any(_UNDECODABLE.search(name) for name in self.columns):
            self.close()
            raise InputFileError(self.path, "header is not valid UTF-8", line=1)
        seen: set[str] = set()
        for name in self.columns:
            if name in seen:
                self.close()
                raise InputFileError(self.path, f"column {name!r} appears twice", line=1)
            seen.add(name)
        missing = [name for name in required if name not in seen]
        if missing:
            self.close()
            raise InputFileError(
                self.path, f"missing required column(s): {', '.join(missing)}", line=1
            )
        self.unknown_columns = [name for name in self.columns if name not in known]

    def rows(self) -> Iterator[CsvRow | RowProblem]:
        reader = self._reader
        width = len(self.columns)
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield RowProblem(start, "-", f"not valid CSV: {exc}")
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # blank line
            rid = self._research_id(fields)
            if len(fields) != width:
                yield RowProblem(
                    start, "-", f"has {len(fields)} fields, the header has {width}", rid
                )
                continue
            bad = next((i for i, v in enumerate(fields) if _UNDECODABLE.search(v)), None)
            if bad is not None:
                yield RowProblem(start, self.columns[bad], "is not valid UTF-8", rid)
                continue
            yield CsvRow(start, dict(zip(self.columns, fields, strict=True)))

    def _research_id(self, fields: list[str]) -> str | None:
        # Shown only when it is a well-formed id: anything else may be a shifted value.
        try:
            value = fields[self.columns.index("research_id")].strip()
        except (ValueError, IndexError):
            return None
        return value if RESEARCH_ID.fullmatch(value) else None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> CsvTable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
