"""The research program's view of a cohort drawn from the network's population.

`write_roster` writes three files into a folder:

* `roster.csv` — docs/roster-format.md, as participants typed it at enrollment: nicknames,
  typos, a hyphen left out, an old address, phone numbers in every format, sometimes a
  transposed birth date, previous names and addresses;
* `consents.csv` — one `ehr` consent each, some withdrawn (some of those re-consented
  later), some declined, plus unrelated `biospecimen` consents;
* `truth.ndjson` — one line per participant: the network person, the org-local patient
  id at each organization (null where unknown), the hard case they belong to and their
  relatives in the roster. Tests and benchmarks score a client against it.

Hard-case blocks (twins, junior/senior, namesakes) are drawn in whole more often than
strangers, so every roster of a few hundred people has all of them.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mock_network import names, places
from mock_network.config import NetworkConfig
from mock_network.population import BLOCK, Address, Person, Population, dob_typo, typo
from mock_network.rand import rng_for

ROSTER_COLUMNS = (
    "research_id",
    "given",
    "middle",
    "family",
    "suffix",
    "birth_date",
    "sex",
    "address_line1",
    "address_line2",
    "city",
    "state",
    "postal_code",
    "phone",
    "email",
    "ssn_last4",
    "previous_names",
    "previous_addresses",
    "ehr_on_file",
)
CONSENT_COLUMNS = ("research_id", "type", "status", "recorded_at", "withdrawn_at")
_HARD_KINDS = {"twins", "junior", "namesake"}


@dataclass
class Participant:
    research_id: str
    person: Person
    row: dict[str, str]
    consents: list[dict[str, str]]
    consent_status: str
    ehr_on_file: bool
    noise: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RosterSummary:
    participants: int
    known_nowhere: int
    hard_cases: dict[str, int]
    withdrawn: int
    declined: int
    ehr_on_file: int
    files: tuple[Path, ...]


def select_people(population: Population, size: int, seed: int) -> list[int]:
    """Indices of the cohort, in roster order. Deterministic in (population seed, seed)."""
    size = min(size, population.size)
    rng = rng_for(population.seed, "roster-select", seed)
    blocks = (population.size + BLOCK - 1) // BLOCK
    chosen: list[int] = []
    taken: set[int] = set()
    order = rng.sample(range(blocks), min(blocks, 2 * size + 8))
    for block in order:
        hard = population.block_kind(block) in _HARD_KINDS
        for slot in range(BLOCK):
            index = block * BLOCK + slot
            if index >= population.size or len(chosen) >= size:
                break
            in_hard_case = hard and population.core(index).hard_case not in (None, "household")
            if rng.random() < (0.9 if in_hard_case else 0.45):
                chosen.append(index)
                taken.add(index)
        if len(chosen) >= size:
            return chosen
    # A small population: fill up with whoever is left.
    chosen.extend(i for i in range(population.size) if i not in taken)
    return chosen[:size]


def _research_id(rng: random.Random, used: set[str]) -> str:
    while True:
        candidate = f"RS-{rng.getrandbits(40):010X}"
        if candidate not in used:
            used.add(candidate)
            return candidate


def _phone_as_typed(rng: random.Random, e164: str) -> str:
    d = e164[-10:]
    return rng.choice(
        (
            f"({d[:3]}) {d[3:6]}-{d[6:]}",
            f"{d[:3]}-{d[3:6]}-{d[6:]}",
            e164,
            d,
            f"{d[:3]}.{d[3:6]}.{d[6:]}",
        )
    )


def _address_cells(address: Address) -> tuple[str, str, str, str, str]:
    return (address.line1, address.line2, address.city, address.state, address.postal_code)


def enrollment_row(
    person: Person,
    research_id: str,
    ehr_on_file: bool,
    rng: random.Random,
    noise_scale: float,
    reference: dt.date,
) -> tuple[dict[str, str], list[str]]:
    """What the participant typed at enrollment, and which slips they made."""
    noise: list[str] = []

    def chance(p: float) -> bool:
        return rng.random() < p * noise_scale

    given, family, middle, suffix = person.given, person.family, person.middle, person.suffix
    nicks = names.nicknames_of(given)
    if nicks and chance(0.10):
        given = rng.choice(nicks)
        noise.append("nickname")
    if chance(0.02):
        given = typo(rng, given)
        noise.append("given_typo")
    if chance(0.02):
        family = typo(rng, family)
        noise.append("family_typo")
    if "-" in family and chance(0.2):
        family = family.replace("-", " ")
        noise.append("hyphen_dropped")
    if middle:
        u = rng.random()
        middle = middle if u < 0.45 else (middle[0] if u < 0.75 else "")
    if suffix and chance(0.3):
        suffix = ""
        noise.append("suffix_dropped")
    birth = person.birth_date
    if birth.day <= 12 and birth.day != birth.month and chance(0.015):
        birth = dt.date(birth.year, birth.day, birth.month)
        noise.append("dob_transposed")
    elif chance(0.005):
        birth = dob_typo(rng, birth, reference)
        noise.append("dob_typo")
    sex = person.sex
    if rng.random() < 0.2:
        sex = {"male": "M", "female": "F", "other": "O"}.get(sex, "U")
    address = person.address
    previous = person.previous_address
    if previous is not None and chance(0.1):
        address, previous = previous, None  # never told the program they moved
        noise.append("old_address")
    line1 = places.abbreviate_street(address.line1) if rng.random() < 0.5 else address.line1
    phone = _phone_as_typed(rng, person.phone) if person.phone and rng.random() < 0.85 else ""
    previous_names = ""
    if person.maiden_name and person.maiden_name != person.family and rng.random() < 0.6:
        previous_names = f"{person.maiden_name}^{person.given}"
    previous_addresses = ""
    if previous is not None and rng.random() < 0.5:
        previous_addresses = "^".join(_address_cells(previous))
    row = {
        "research_id": research_id,
        "given": given,
        "middle": middle,
        "family": family,
        "suffix": suffix,
        "birth_date": birth.isoformat(),
        "sex": sex,
        "address_line1": line1,
        "address_line2": address.line2,
        "city": address.city,
        "state": address.state,
        "postal_code": address.postal_code,
        "phone": phone,
        "email": person.email if rng.random() < 0.7 else "",
        "ssn_last4": person.ssn_last4 if rng.random() < 0.4 else "",
        "previous_names": previous_names,
        "previous_addresses": previous_addresses,
        "ehr_on_file": "true" if ehr_on_file else "false",
    }
    return row, noise


def _instant(rng: random.Random, low: dt.date, high: dt.date) -> dt.datetime:
    span = max(1, (high - low).days)
    day = low + dt.timedelta(days=int(rng.random() * span))
    return dt.datetime(
        day.year, day.month, day.day, int(rng.random() * 24), int(rng.random() * 60), tzinfo=dt.UTC
    )


def _iso(rng: random.Random, when: dt.datetime) -> str:
    # Both forms the format allows: a date, or a UTC date-time.
    return when.date().isoformat() if rng.random() < 0.3 else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def consent_rows(
    research_id: str, rng: random.Random, config: NetworkConfig, reference: dt.date
) -> tuple[list[dict[str, str]], str]:
    roster = config.roster
    start = dt.date(2018, 5, 6)
    signed = _instant(rng, start, reference - dt.timedelta(days=400))
    rows: list[dict[str, str]] = []
    u = rng.random()
    status = "active"
    if u < roster.declined:
        status = "declined"
        rows.append(
            {
                "research_id": research_id,
                "type": "ehr",
                "status": "declined",
                "recorded_at": _iso(rng, signed),
                "withdrawn_at": "",
            }
        )
    elif u < roster.declined + roster.withdrawn + roster.reconsented:
        withdrawn = signed + dt.timedelta(days=1 + int(rng.random() * 300))
        rows.append(
            {
                "research_id": research_id,
                "type": "ehr",
                "status": "withdrawn",
                "recorded_at": _iso(rng, signed),
                "withdrawn_at": withdrawn.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        if u >= roster.declined + roster.withdrawn:
            again = withdrawn + dt.timedelta(days=1 + int(rng.random() * 60))
            rows.append(
                {
                    "research_id": research_id,
                    "type": "ehr",
                    "status": "active",
                    "recorded_at": again.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "withdrawn_at": "",
                }
            )
        else:
            status = "withdrawn"
    else:
        rows.append(
            {
                "research_id": research_id,
                "type": "ehr",
                "status": "active",
                "recorded_at": _iso(rng, signed),
                "withdrawn_at": "",
            }
        )
    if rng.random() < 0.15:
        rows.append(
            {
                "research_id": research_id,
                "type": "biospecimen",
                "status": rng.choice(("active", "declined")),
                "recorded_at": _iso(rng, signed),
                "withdrawn_at": "",
            }
        )
    return rows, status


def build_roster(
    config: NetworkConfig, population: Population | None = None, size: int | None = None
) -> list[Participant]:
    population = population or Population(config)
    roster = config.roster
    size = roster.size if size is None else size
    reference = population.reference
    used: set[str] = set()
    id_rng = rng_for(population.seed, "research-ids", roster.seed)
    participants: list[Participant] = []
    chosen = select_people(population, size, roster.seed)
    # Enrollment order, not household order: relatives are not neighbours in the file.
    rng_for(population.seed, "roster-order", roster.seed).shuffle(chosen)
    for index in chosen:
        person = population.person(index)
        research_id = _research_id(id_rng, used)
        rng = rng_for(population.seed, "enrollment", roster.seed, index)
        ehr_on_file = rng.random() < roster.ehr_on_file
        row, noise = enrollment_row(person, research_id, ehr_on_file, rng, roster.noise, reference)
        consents, status = consent_rows(research_id, rng, config, reference)
        participants.append(
            Participant(research_id, person, row, consents, status, ehr_on_file, noise)
        )
    return participants


def truth_lines(
    participants: list[Participant], population: Population
) -> Iterator[dict[str, Any]]:
    by_index = {p.person.index: p.research_id for p in participants}
    for participant in participants:
        person = participant.person
        known_at: dict[str, str | None] = {}
        records = []
        for org_id in population.org_ids:
            record = population.record(person.index, org_id)
            known_at[org_id] = None if record is None else record.patient_id
            if record is not None:
                records.append(
                    {
                        "org_id": org_id,
                        "patient_id": record.patient_id,
                        "mrn": record.mrn,
                        "noise": list(record.noise),
                    }
                )
        yield {
            "research_id": participant.research_id,
            "person_id": person.person_id,
            "person_index": person.index,
            "known_at": known_at,
            "known_nowhere": not records,
            "records": records,
            "hard_case": person.hard_case,
            "related": [
                {
                    "person_id": f"NP{other:07d}",
                    "relation": relation,
                    "research_id": by_index.get(other),
                }
                for other, relation in person.related
            ],
            "household_id": person.household_id,
            "consent": participant.consent_status,
            "ehr_on_file": participant.ehr_on_file,
            "enrollment_noise": participant.noise,
        }


def write_roster(
    config: NetworkConfig,
    out: Path,
    *,
    size: int | None = None,
    population: Population | None = None,
) -> RosterSummary:
    population = population or Population(config)
    participants = build_roster(config, population, size)
    out.mkdir(parents=True, exist_ok=True)
    roster_path, consent_path, truth_path = (
        out / "roster.csv",
        out / "consents.csv",
        out / "truth.ndjson",
    )
    with roster_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=ROSTER_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(p.row for p in participants)
    with consent_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CONSENT_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for participant in participants:
            writer.writerows(participant.consents)
    hard: dict[str, int] = {}
    known_nowhere = 0
    with truth_path.open("w", encoding="utf-8") as handle:
        for line in truth_lines(participants, population):
            handle.write(json.dumps(line, separators=(",", ":")) + "\n")
            known_nowhere += line["known_nowhere"]
            if line["hard_case"]:
                hard[line["hard_case"]] = hard.get(line["hard_case"], 0) + 1
    return RosterSummary(
        participants=len(participants),
        known_nowhere=known_nowhere,
        hard_cases=hard,
        withdrawn=sum(p.consent_status == "withdrawn" for p in participants),
        declined=sum(p.consent_status == "declined" for p in participants),
        ehr_on_file=sum(p.ehr_on_file for p in participants),
        files=(roster_path, consent_path, truth_path),
    )
