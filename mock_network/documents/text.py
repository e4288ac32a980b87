"""Plain-text clinical notes (and the lines a scanned PDF note shows)."""

from __future__ import annotations

from .clock import human_date
from .snapshot import Snapshot


def note_lines(snap: Snapshot, heading: str) -> list[str]:
    s = snap.subject
    e = snap.encounter
    when = snap.local(e.start)
    v = snap.vitals
    a = snap.author
    lines = [
        heading.upper(),
        snap.org_name,
        "",
        f"Patient: {s.family}, {s.given}    DOB: {s.birth_date.strftime('%m/%d/%Y')}    "
        f"MRN: {s.patient_id}",
        f"Date of service: {when.strftime('%m/%d/%Y %H:%M')}    Visit: {e.type.snomed.display}",
        f"Provider: {a.given} {a.family}",
        "",
        "SUBJECTIVE:",
    ]
    if e.reasons:
        lines.append(
            f"Seen today for {e.reasons[0].condition.label.lower()}. "
            "Reports symptoms are manageable; no new complaints."
        )
    else:
        lines.append("Here for routine follow-up. Feels well; no acute complaints.")
    lines += ["", "MEDICATIONS:"]
    lines += [f"- {m.medication.label}: {m.medication.sig}" for m in snap.medications] or [
        "- None reported"
    ]
    lines += ["", "ALLERGIES:"]
    if snap.allergies:
        lines += [
            f"- {al.allergen.code.display} ({al.reaction.display.lower()}, {al.severity.fhir})"
            for al in snap.allergies
        ]
    else:
        lines.append("- Not documented" if snap.allergies_unknown else "- No known allergies")
    lines += [
        "",
        "OBJECTIVE:",
        f"BP {v.systolic}/{v.diastolic} mmHg, HR {v.heart_rate}/min, "
        f"RR {v.resp_rate}/min, T {v.temp_c} C, Wt {v.weight_kg} kg",
    ]
    for panel in snap.labs[-1:]:
        results = ", ".join(f"{r.test.short} {r.value:g} {r.test.unit}" for r in panel.results)
        lines.append(f"Labs {human_date(snap.local(panel.when).date())}: {results}")
    lines += ["", "ASSESSMENT AND PLAN:"]
    for n, c in enumerate(snap.problems, start=1):
        status = "resolved" if c.abated is not None and c.abated <= e.end.date() else "stable"
        lines.append(
            f"{n}. {c.condition.label} ({c.condition.icd10.code}) - {status}; "
            "continue current management."
        )
    if not snap.problems:
        lines.append("1. Health maintenance - age-appropriate screening reviewed.")
    lines += [
        "",
        f"Electronically signed by {a.given} {a.family} on "
        f"{snap.doc_date.strftime('%m/%d/%Y %H:%M')}",
    ]
    return lines


def render_text(snap: Snapshot, heading: str) -> bytes:
    return ("\n".join(note_lines(snap, heading)) + "\n").encode("utf-8")
