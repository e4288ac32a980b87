"""C-CDA coverage: how many coded entries of a folder of documents become valid FHIR.

For every ``*.xml`` file under a folder, counts per section kind the clinical statements
present (and how many of them are coded), the FHIR resources produced (validated with
fhir.resources R4B by the reader), and why anything was skipped. A file that cannot be
read is counted as refused (with the reason); an exception out of the reader is a crash.

HL7's example set ships most section examples as bare ``<section>`` or ``<component>``
fragments without namespace declarations; those are wrapped in a minimal
``ClinicalDocument`` envelope (declaring the CDA, xsi and sdtc namespaces) so the reader
sees them as it would inside a real document. Whole documents are read as they are.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ehrfetch.errors import DocumentError
from ehrfetch.normalize.ccda import read_ccda

_ENVELOPE_OPEN = (
    b'<ClinicalDocument xmlns="urn:hl7-org:v3" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:sdtc="urn:hl7-org:sdtc">'
    b"<component><structuredBody>"
)
_ENVELOPE_CLOSE = b"</structuredBody></component></ClinicalDocument>"
_XML_DECL = re.compile(rb"^\s*(<\?xml[^>]*\?>)?\s*", re.DOTALL)


@dataclass
class KindCount:
    present: int = 0
    coded: int = 0
    produced_coded: int = 0
    produced_uncoded: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def percent(self) -> float:
        return 100.0 * self.produced_coded / self.coded if self.coded else 100.0


@dataclass
class FileResult:
    path: Path
    resources: int = 0
    kinds: dict[str, KindCount] = field(default_factory=dict)
    refused: str | None = None
    crashed: str | None = None
    unstructured: bool = False


@dataclass
class CoverageReport:
    files: list[FileResult] = field(default_factory=list)
    kinds: dict[str, KindCount] = field(default_factory=dict)

    @property
    def total(self) -> KindCount:
        total = KindCount()
        for count in self.kinds.values():
            total.present += count.present
            total.coded += count.coded
            total.produced_coded += count.produced_coded
            total.produced_uncoded += count.produced_uncoded
            total.skipped.update(count.skipped)
        return total

    @property
    def crashes(self) -> int:
        return sum(1 for f in self.files if f.crashed)


def as_document(body: bytes) -> bytes:
    """A section or component fragment wrapped in a ClinicalDocument; documents unchanged."""
    head = _XML_DECL.sub(b"", body, count=1)
    if head.startswith(b"<ClinicalDocument") or b"<ClinicalDocument" in head[:2000]:
        return body
    if head.startswith(b"<section"):
        head = b"<component>" + head + b"</component>"
    return _ENVELOPE_OPEN + head + _ENVELOPE_CLOSE


def ccda_coverage(folder: Path, *, research_id: str = "coverage") -> CoverageReport:
    """Read every ``*.xml`` under ``folder`` (any case) and count what became FHIR."""
    report = CoverageReport()
    paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() == ".xml")
    for path in paths:
        result = _read_one(path, research_id)
        report.files.append(result)
        for kind, count in result.kinds.items():
            _merge(report.kinds.setdefault(kind, KindCount()), count)
    return report


def _read_one(path: Path, research_id: str) -> FileResult:
    result = FileResult(path)
    try:
        reading = read_ccda(
            as_document(path.read_bytes()), research_id=research_id, patient_id=None
        )
    except DocumentError as exc:
        result.refused = str(exc)
        return result
    except Exception as exc:  # a crash is what this benchmark counts, not a reason to stop
        result.crashed = f"{type(exc).__name__}: {exc}"
        return result
    result.unstructured = not reading.structured
    result.resources = len(reading.document.resources)
    for entry in reading.entries:
        count = result.kinds.setdefault(entry.section_kind, KindCount())
        count.present += 1
        count.coded += entry.coded
        if entry.produced:
            count.produced_coded += entry.coded
            count.produced_uncoded += not entry.coded
        elif entry.reason:
            count.skipped[entry.reason] += 1
    return result


def _merge(into: KindCount, count: KindCount) -> None:
    into.present += count.present
    into.coded += count.coded
    into.produced_coded += count.produced_coded
    into.produced_uncoded += count.produced_uncoded
    into.skipped.update(count.skipped)


def format_report(report: CoverageReport, *, per_file: bool = False) -> str:
    """A Markdown table per section kind (and optionally per file), then skip reasons."""
    lines = [
        "| section | entries | coded | coded → FHIR | % | uncoded → FHIR |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    lines.extend(_row(kind, report.kinds[kind]) for kind in sorted(report.kinds))
    lines.append(_row("**total**", report.total))
    unstructured = sum(1 for f in report.files if f.unstructured)
    lines.append("")
    lines.append(
        f"files: {len(report.files)}, nonXMLBody (stored, not parsed): {unstructured}, "
        f"refused: {sum(1 for f in report.files if f.refused)}, crashes: {report.crashes}"
    )
    skipped = report.total.skipped
    if skipped:
        lines.append("")
        lines.append("skipped (reason: count):")
        lines.extend(f"- {reason}: {n}" for reason, n in skipped.most_common())
    lines.extend(
        f"- {f.path}: {'CRASH ' + f.crashed if f.crashed else f.refused}"
        for f in report.files
        if f.refused or f.crashed
    )
    if per_file:
        lines.append("")
        lines.append("| file | resources | entries | coded | coded → FHIR |")
        lines.append("|---|---:|---:|---:|---:|")
        for f in report.files:
            present = sum(c.present for c in f.kinds.values())
            coded = sum(c.coded for c in f.kinds.values())
            done = sum(c.produced_coded for c in f.kinds.values())
            lines.append(f"| {f.path.name} | {f.resources} | {present} | {coded} | {done} |")
    return "\n".join(lines)


def _row(kind: str, c: KindCount) -> str:
    return (
        f"| {kind} | {c.present} | {c.coded} | {c.produced_coded} | {c.percent:.1f} "
        f"| {c.produced_uncoded} |"
    )


def main(folder: Path, *, per_file: bool = False) -> CoverageReport:
    """Run the benchmark on ``folder`` and print the table (what ``ehrfetch bench ccda`` does)."""
    report = ccda_coverage(folder)
    print(format_report(report, per_file=per_file))
    return report
