"""Network-side matching, the way a master patient index does it (and gets it wrong).

Each field comparison adds a Fellegi-Sunter style weight, roughly log2(m/u): agreeing on
something rare (birth date, phone, street address) says a lot, disagreeing on something
that often changes (surname, address) says little. The score is the sum divided by the
best sum the fields present on both sides could reach, so it lies in 0..1 and the grade
follows from thresholds (see `MatchConfig`).

The weights are on purpose those of a real index, with a real index's blind spots:
twins share surname, birth date, address and phone, so a twin scores high enough to be
graded "probable"; two namesakes with the same birth date are "certain" to an index that
was only given name and birth date. A client must re-check every candidate.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mock_network import names
from mock_network.config import MatchConfig
from mock_network.index import BlockingIndex, dob_key, name_keys, surname_code
from mock_network.population import OrgRecord, Population

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"

# (agree, partial, disagree) weights, in bits of evidence.
W_FAMILY = (9.0, 5.0, -3.0)
W_GIVEN = (7.0, 5.0, -4.0)  # partial: nickname (5.0) or one-letter slip (4.0)
W_GIVEN_TYPO = 4.0
W_GIVEN_INITIAL = 2.0
W_BIRTH = (13.0, 6.0, -8.0)  # partial: day and month transposed
W_BIRTH_NEAR = 3.0  # two of year, month, day agree
W_SEX = (1.0, -5.0)
W_MIDDLE = (1.0, -2.0)
W_SUFFIX = (1.0, -6.0)
W_ADDRESS = 8.0
W_ZIP = 2.0
W_PHONE = (9.0, -0.5)
W_EMAIL = 8.0
W_SSN = (6.0, -8.0)
W_MRN = 20.0


class MatchInputError(ValueError):
    """The query is not something an index can search with (answers 400)."""


@dataclass(frozen=True)
class Query:
    families: tuple[str, ...]
    givens: tuple[str, ...]
    middles: tuple[str, ...]
    suffixes: tuple[str, ...]
    birth_date: dt.date | None
    sex: str
    lines: tuple[str, ...]
    zips: tuple[str, ...]
    phones: tuple[str, ...]
    emails: tuple[str, ...]
    ssn_last4: str
    identifiers: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Candidate:
    record: OrgRecord
    score: float
    grade: str


@functools.lru_cache(maxsize=65_536)
def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalpha())


@functools.lru_cache(maxsize=65_536)
def _parts(name: str) -> frozenset[str]:
    """The words of a compound surname: 'Garcia-Lopez' -> {'garcia', 'lopez'}."""
    return frozenset(_norm(p) for p in re.split(r"[-\s]+", name) if p)


_STREET_ABBREVIATIONS = {
    "street": "st",
    "avenue": "ave",
    "road": "rd",
    "drive": "dr",
    "lane": "ln",
    "court": "ct",
    "boulevard": "blvd",
    "place": "pl",
    "circle": "cir",
    "terrace": "ter",
    "north": "n",
    "south": "s",
    "east": "e",
    "west": "w",
    "apartment": "apt",
}


@functools.lru_cache(maxsize=65_536)
def norm_line(line: str) -> str:
    words = re.sub(r"[^a-z0-9 ]", " ", line.lower()).split()
    return " ".join(_STREET_ABBREVIATIONS.get(word, word) for word in words)


def norm_phone(value: str) -> str:
    digits = "".join(c for c in value if c.isdigit())
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    return digits


def parse_query(patient: Mapping[str, Any]) -> Query:
    """Read a FHIR Patient into what the index compares. Raises MatchInputError when the
    demographics are too thin to search: a family name, a given name and a birth date
    are required, or an identifier with a family name or a birth date."""
    if patient.get("resourceType") != "Patient":
        raise MatchInputError("the 'resource' parameter must be a Patient")
    families: list[str] = []
    givens: list[str] = []
    middles: list[str] = []
    suffixes: list[str] = []
    for name in _list(patient.get("name")):
        if not isinstance(name, Mapping):
            continue
        if isinstance(name.get("family"), str) and name["family"].strip():
            families.append(name["family"].strip())
        given = [g for g in _list(name.get("given")) if isinstance(g, str) and g.strip()]
        if given:
            givens.append(given[0].strip())
            middles.extend(g.strip() for g in given[1:])
        suffixes.extend(
            s.strip().rstrip(".") for s in _list(name.get("suffix")) if isinstance(s, str)
        )
    birth_date: dt.date | None = None
    raw_birth = patient.get("birthDate")
    if raw_birth is not None:
        try:
            birth_date = dt.date.fromisoformat(str(raw_birth))
        except ValueError as error:
            raise MatchInputError("birthDate is not a full YYYY-MM-DD date") from error
    lines: list[str] = []
    zips: list[str] = []
    for address in _list(patient.get("address")):
        if not isinstance(address, Mapping):
            continue
        address_lines = [x for x in _list(address.get("line")) if isinstance(x, str)]
        if address_lines:
            lines.append(norm_line(address_lines[0]))
        if isinstance(address.get("postalCode"), str):
            zips.append(address["postalCode"][:5])
    phones: list[str] = []
    emails: list[str] = []
    for telecom in _list(patient.get("telecom")):
        if not isinstance(telecom, Mapping) or not isinstance(telecom.get("value"), str):
            continue
        if telecom.get("system") == "phone":
            phones.append(norm_phone(telecom["value"]))
        elif telecom.get("system") == "email":
            emails.append(telecom["value"].strip().lower())
    ssn_last4 = ""
    identifiers: list[tuple[str, str]] = []
    for identifier in _list(patient.get("identifier")):
        if not isinstance(identifier, Mapping) or not isinstance(identifier.get("value"), str):
            continue
        system = str(identifier.get("system", ""))
        if system == SSN_SYSTEM:
            digits = "".join(c for c in identifier["value"] if c.isdigit())
            ssn_last4 = digits[-4:] if len(digits) >= 4 else ""
        else:
            identifiers.append((system, identifier["value"]))
    gender = patient.get("gender")
    query = Query(
        families=tuple(families),
        givens=tuple(givens),
        middles=tuple(middles),
        suffixes=tuple(s for s in suffixes if s),
        birth_date=birth_date,
        sex=gender if isinstance(gender, str) else "",
        lines=tuple(lines),
        zips=tuple(zips),
        phones=tuple(p for p in phones if p),
        emails=tuple(emails),
        ssn_last4=ssn_last4,
        identifiers=tuple(identifiers),
    )
    enough = bool(query.families and query.givens and query.birth_date) or bool(
        query.identifiers and (query.families or query.birth_date)
    )
    if not enough:
        raise MatchInputError(
            "too little demographics: send family name, given name and birthDate "
            "(or an identifier with a family name or birthDate)"
        )
    return query


def _list(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _one_edit(a: str, b: str) -> bool:
    """True when a and b differ by one insertion, deletion, substitution or transposition."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]


def _family_weight(query: Iterable[str], record: Iterable[str]) -> float:
    best = W_FAMILY[2]
    for q in query:
        qn = _norm(q)
        q_parts = _parts(q)
        for r in record:
            rn = _norm(r)
            if qn == rn:
                return W_FAMILY[0]
            if q_parts & _parts(r) or _one_edit(qn, rn):
                best = max(best, W_FAMILY[1])
            elif surname_code(q) == surname_code(r):
                best = max(best, W_FAMILY[1] - 1.0)
    return best


def _given_weight(query: Iterable[str], given: str) -> float:
    record = _norm(given)
    best = W_GIVEN[2]
    for q in query:
        qn = _norm(q)
        if qn == record:
            return W_GIVEN[0]
        if names.name_forms(q) & names.name_forms(given):
            best = max(best, W_GIVEN[1])
        elif _one_edit(qn, record):
            best = max(best, W_GIVEN_TYPO)
        elif qn[:1] == record[:1] and (len(qn) == 1 or len(record) == 1):
            best = max(best, W_GIVEN_INITIAL)
    return best


def _birth_weight(query: dt.date, record: dt.date) -> float:
    if query == record:
        return W_BIRTH[0]
    if query.year == record.year and query.month == record.day and query.day == record.month:
        return W_BIRTH[1]
    same = (query.year == record.year) + (query.month == record.month) + (query.day == record.day)
    return W_BIRTH_NEAR if same == 2 else W_BIRTH[2]


def score(query: Query, record: OrgRecord, org_mrn_system: str) -> float:
    """Weighted agreement of a query with one record, scaled to 0..1."""
    total = 0.0
    best = 0.0
    if any(system == org_mrn_system and value == record.mrn for system, value in query.identifiers):
        return 1.0  # the organization's own MRN: no doubt left
    if query.families:
        total += _family_weight(query.families, (record.family, *record.other_families))
        best += W_FAMILY[0]
    if query.givens:
        total += _given_weight(query.givens, record.given)
        best += W_GIVEN[0]
    if query.birth_date is not None:
        total += _birth_weight(query.birth_date, record.birth_date)
        best += W_BIRTH[0]
    if query.sex in ("male", "female") and record.sex in ("male", "female"):
        total += W_SEX[0] if query.sex == record.sex else W_SEX[1]
        best += W_SEX[0]
    if query.middles and record.middle:
        agree = any(_norm(m)[:1] == _norm(record.middle)[:1] for m in query.middles)
        total += W_MIDDLE[0] if agree else W_MIDDLE[1]
        best += W_MIDDLE[0]
    if query.suffixes and record.suffix:
        agree = any(s.lower() == record.suffix.lower() for s in query.suffixes)
        total += W_SUFFIX[0] if agree else W_SUFFIX[1]
        best += W_SUFFIX[0]
    if query.lines or query.zips:
        best += W_ADDRESS
        if norm_line(record.address.line1) in query.lines:
            total += W_ADDRESS
        elif record.address.postal_code[:5] in query.zips:
            total += W_ZIP
    if query.phones and record.phone:
        best += W_PHONE[0]
        total += W_PHONE[0] if norm_phone(record.phone) in query.phones else W_PHONE[1]
    if query.emails and record.email:
        best += W_EMAIL
        total += W_EMAIL if record.email.lower() in query.emails else 0.0
    if query.ssn_last4 and record.ssn_last4:
        best += W_SSN[0]
        total += W_SSN[0] if query.ssn_last4 == record.ssn_last4 else W_SSN[1]
    if best <= 0:
        return 0.0
    return max(0.0, min(1.0, total / best))


def grade(value: float, config: MatchConfig) -> str | None:
    if value >= config.certain:
        return "certain"
    if value >= config.probable:
        return "probable"
    if value >= config.possible:
        return "possible"
    if value >= config.certainly_not:
        return "certainly-not"
    return None


class Matcher:
    def __init__(
        self,
        population: Population,
        index: BlockingIndex,
        config: MatchConfig,
        screen_cache: int = 4096,
    ) -> None:
        self.population = population
        self.index = index
        self.config = config
        # A client asks every organization about the same Patient back to back, and the
        # blocking lookup and name screen do not depend on the organization: do them once
        # per query (0 turns the cache off). functools.lru_cache is thread-safe.
        self._screened = functools.lru_cache(maxsize=screen_cache)(self._screen)

    def candidates(self, query: Query) -> set[int]:
        return self._blocked(query.birth_date, query.families)

    def _blocked(self, birth: dt.date | None, families: tuple[str, ...]) -> set[int]:
        keys: list[int] = []
        if birth is not None:
            keys.append(dob_key(birth))
            if birth.day <= 12 and birth.day != birth.month:
                keys.append(dob_key(dt.date(birth.year, birth.day, birth.month)))
            for family in families:
                keys.extend(name_keys(family, birth))
        return self.index.lookup(keys)

    def _plausible(self, families: tuple[str, ...], givens: tuple[str, ...], index: int) -> bool:
        """Cheap screen on the true core before deriving an organization's record: one of
        the names must be close, or the index would never have shown it to anyone."""
        core = self.population.core(index)
        known = (core.family, core.maiden) if core.maiden else (core.family,)
        if _family_weight(families, known) > 0:
            return True
        return _given_weight(givens, core.given) > 0

    def _screen(
        self, birth: dt.date | None, families: tuple[str, ...], givens: tuple[str, ...]
    ) -> tuple[int, ...]:
        # Takes only the fields it reads, so the cache key is complete by construction;
        # keeps the blocking set's iteration order, as the uncached loop had it.
        return tuple(
            i for i in self._blocked(birth, families) if self._plausible(families, givens, i)
        )

    def screened(self, query: Query) -> tuple[int, ...]:
        """The people blocking finds for this query whose true names pass the screen, at
        any organization."""
        return self._screened(query.birth_date, query.families, query.givens)

    def match(self, org_id: str, mrn_system: str, query: Query) -> list[Candidate]:
        found: list[Candidate] = []
        orgs_of = self.population.orgs_of
        for index in self.screened(query):
            if org_id not in orgs_of(index):
                continue
            record = self.population.record(index, org_id)
            if record is None:
                continue
            value = round(score(query, record, mrn_system), 4)
            graded = grade(value, self.config)
            if graded is not None:
                found.append(Candidate(record, value, graded))
        seen = {candidate.record.index for candidate in found}
        for system, identifier in query.identifiers:
            if system != mrn_system:
                continue
            by_mrn = self.population.index_of_mrn(org_id, identifier)
            mrn_record = None if by_mrn is None else self.population.record(by_mrn, org_id)
            if mrn_record is not None and mrn_record.index not in seen:
                found.append(Candidate(mrn_record, 1.0, "certain"))
                seen.add(mrn_record.index)
        found.sort(key=lambda c: (-c.score, c.record.patient_id))
        return found
