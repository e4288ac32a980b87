"""Normal forms for comparing demographics: names, addresses, phones, emails.

Everything here is pure and cached where it is called once per candidate pair, because a
batch compares every participant with every candidate of every organization.

Names are *folded* (Unicode accents removed, case-folded, apostrophes and periods dropped,
other punctuation a word break), then compared as whole strings, as joined words
("de la Cruz" = "DeLaCruz") or word by word (compound surnames). Nicknames come from the
maintained ``nicknames`` table on PyPI (carltonnorthern's list). Typos are judged by the
optimal-string-alignment edit distance (one slip: a letter typed, dropped, doubled,
swapped with its neighbour) with Jaro-Winkler as a second opinion on long names; both are
written out here because a C extension for two short functions would not pay for itself.

Addresses follow USPS Publication 28 (street suffixes, directionals, secondary unit
designators), reduced to what a comparison needs: the street (number + words), the unit
identifier (the designator itself varies between systems: "Apt 4" = "# 4" = "Unit 4"),
city, state and ZIP5.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers
from nicknames import NickNamer

from ehrfetch.cohort.records import PostalAddress

# Entries each cache below keeps. Names follow a steep frequency curve: a few thousand
# entries catch the repeats. Caches of 65,536 held ~100 MB per process once full (filled
# with distinct names), which a batch worker reaches tens of thousands of participants
# into a long run: memory that grew with N (docs/benchmarks.md, "Throughput").
NAMES_CACHED = 8_192
FORMS_CACHED = 4_096

# -- names --------------------------------------------------------------------------------

# Dropped without a word break: "O'Brien" is "OBrien", "St. John" is "St John".
_DROP = str.maketrans("", "", "'’`´.")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# Surname particles: present in one system and missing from another ("de la Cruz" vs
# "Cruz"), so they never count as a distinguishing part of a compound surname.
SURNAME_PARTICLES = frozenset(
    {"de", "del", "della", "la", "las", "los", "le", "van", "von", "der", "den", "ter",
     "da", "das", "do", "dos", "di", "du", "y", "e", "al", "el", "bin", "ibn"}
)  # fmt: skip
_SAINT = {"st": "saint", "ste": "sainte"}


@functools.lru_cache(maxsize=NAMES_CACHED)
def fold(text: str) -> str:
    """Lower-case ASCII words separated by single spaces: 'José  García-Núñez' ->
    'jose garcia nunez'. Letters with no ASCII base are kept as they are."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    lowered = stripped.casefold().translate(_DROP)
    return " ".join(_NON_WORD.sub(" ", lowered).split())


@functools.lru_cache(maxsize=NAMES_CACHED)
def name_words(text: str) -> tuple[str, ...]:
    """The words of a folded name: hyphens and spaces are the same thing."""
    return tuple(_SAINT.get(word, word) for word in fold(text).split())


def joined(text: str) -> str:
    """A name with its word breaks removed: 'Garcia-Lopez', 'Garcia Lopez' and
    'GarciaLopez' are one spelling."""
    return "".join(name_words(text))


@functools.lru_cache(maxsize=NAMES_CACHED)
def surname_parts(text: str) -> frozenset[str]:
    """The distinguishing parts of a surname, particles left out: 'de la Cruz-Ortiz' ->
    {'cruz', 'ortiz'}. One-letter parts are initials, not surnames."""
    return frozenset(w for w in name_words(text) if w not in SURNAME_PARTICLES and len(w) > 1)


@functools.cache
def _nicknamer() -> NickNamer:
    return NickNamer()


@functools.lru_cache(maxsize=FORMS_CACHED)
def _canonicals(name: str) -> frozenset[str]:
    return frozenset(_nicknamer().canonicals_of(name))


@functools.lru_cache(maxsize=FORMS_CACHED)
def _nicknames(name: str) -> frozenset[str]:
    return frozenset(_nicknamer().nicknames_of(name))


@functools.lru_cache(maxsize=NAMES_CACHED)
def are_nicknames(a: str, b: str) -> bool:
    """True when the table links two folded given names directly (Bob/Robert) or as two
    nicknames of one longer name (Bob/Rob through Robert, Jim/Jimmy through James).

    Not the table's closure: its links run both ways and through short names (Bill is
    listed as a nickname of Robert and of William, and both as "canonicals" of Bill), so
    the closure would make Robert a nickname of William. Going through a shared name only
    when it is at least as long as both keeps a nickname pointing at a fuller name.
    """
    if not a or not b or a == b:
        return False
    if b in _nicknames(a) or a in _nicknames(b) or b in _canonicals(a) or a in _canonicals(b):
        return True
    longest = max(len(a), len(b))
    return any(len(c) >= longest for c in _canonicals(a) & _canonicals(b))


@functools.lru_cache(maxsize=FORMS_CACHED)
def name_forms(name: str) -> frozenset[str]:
    """A folded given name with its nicknames and the names it is a nickname of."""
    return frozenset({name}) | _nicknames(name) | _canonicals(name)


def is_known_name(name: str) -> bool:
    """Whether the nickname table lists a folded given name (as a name or a nickname)."""
    return bool(_nicknames(name) or _canonicals(name))


def osa_distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal string alignment distance (Levenshtein plus adjacent transpositions),
    capped at ``limit`` + 1 so long unrelated names cost little."""
    if a == b:
        return 0
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i] + [0] * len(b)
        best = current[0]
        for j, cb in enumerate(b, start=1):
            cost = 0 if ca == cb else 1
            value = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                value = min(value, previous2[j - 2] + 1)
            current[j] = value
            best = min(best, value)
        if best > limit:
            return limit + 1
        previous2, previous = previous, current
    return min(previous[-1], limit + 1)


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro-Winkler similarity in 0..1 (1 = equal)."""
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    window = max(0, max(len(a), len(b)) // 2 - 1)
    a_flags = [False] * len(a)
    b_flags = [False] * len(b)
    matches = 0
    for i, ca in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not b_flags[j] and b[j] == ca:
                a_flags[i] = b_flags[j] = True
                matches += 1
                break
    if matches == 0:
        return 0.0
    a_matched = [c for c, flag in zip(a, a_flags, strict=True) if flag]
    b_matched = [c for c, flag in zip(b, b_flags, strict=True) if flag]
    transpositions = sum(x != y for x, y in zip(a_matched, b_matched, strict=True)) / 2
    jaro = (matches / len(a) + matches / len(b) + (matches - transpositions) / matches) / 3
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * prefix_scale * (1 - jaro)


@functools.lru_cache(maxsize=NAMES_CACHED)
def is_typo(a: str, b: str) -> bool:
    """One keying slip between two folded names, or two in names of five letters or more
    when Jaro-Winkler agrees they are close (a slip at enrollment and another at the
    clinic). The first letter must agree: a slip there is rare, and 'Harry' / 'Larry' or
    'Nina' / 'Gina' are different people. Two-letter names only match a three-letter one
    that adds a letter ('Jm' / 'Jim')."""
    if a == b or not a or not b or a[0] != b[0]:
        return False
    shorter = min(len(a), len(b))
    if shorter < 2:
        return False
    distance = osa_distance(a, b, limit=2)
    if shorter == 2:
        return distance == 1 and len(a) != len(b)
    if distance <= 1:
        return True
    return distance == 2 and shorter >= 5 and jaro_winkler(a, b) >= 0.9


# -- suffixes -----------------------------------------------------------------------------

_GENERATIONAL = {
    "jr": "JR", "junior": "JR", "sr": "SR", "senior": "SR",
    "i": "I", "ii": "II", "2nd": "II", "iii": "III", "3rd": "III",
    "iv": "IV", "4th": "IV", "v": "V", "5th": "V", "vi": "VI",
}  # fmt: skip


def generational_suffix(raw: str | None) -> str | None:
    """JR, SR, II, III ... for the suffixes that tell generations apart; None for none and
    for professional ones (MD, PhD: they say nothing about who is who)."""
    if not raw:
        return None
    for word in fold(raw).split():
        found = _GENERATIONAL.get(word)
        if found is not None:
            return found
    return None


# -- addresses ----------------------------------------------------------------------------

# USPS Publication 28, Appendix C1 (the common part): street suffixes to their standard
# abbreviation. Already-abbreviated forms map to themselves through the fallback.
STREET_SUFFIXES = {
    "alley": "aly", "allee": "aly", "ally": "aly", "annex": "anx", "arcade": "arc",
    "avenue": "ave", "av": "ave", "aven": "ave", "avenu": "ave", "avn": "ave", "avnue": "ave",
    "bayou": "byu", "beach": "bch", "bend": "bnd", "bluff": "blf", "bottom": "btm",
    "boulevard": "blvd", "boul": "blvd", "boulv": "blvd", "branch": "br", "bridge": "brg",
    "brook": "brk", "bypass": "byp", "camp": "cp", "canyon": "cyn", "cape": "cpe",
    "causeway": "cswy", "center": "ctr", "centre": "ctr", "cntr": "ctr", "circle": "cir",
    "circ": "cir", "crcl": "cir", "cliff": "clf", "club": "clb", "common": "cmn",
    "corner": "cor", "course": "crse", "court": "ct", "cove": "cv", "creek": "crk",
    "crescent": "cres", "crossing": "xing", "crossroad": "xrd", "curve": "curv",
    "dale": "dl", "dam": "dm", "divide": "dv", "drive": "dr", "driv": "dr", "drv": "dr",
    "estate": "est", "estates": "ests", "expressway": "expy", "extension": "ext",
    "falls": "fls", "ferry": "fry", "field": "fld", "fields": "flds", "flat": "flt",
    "ford": "frd", "forest": "frst", "forge": "frg", "fork": "frk", "fort": "ft",
    "freeway": "fwy", "garden": "gdn", "gardens": "gdns", "gateway": "gtwy", "glen": "gln",
    "green": "grn", "grove": "grv", "harbor": "hbr", "haven": "hvn", "heights": "hts",
    "highway": "hwy", "hill": "hl", "hills": "hls", "hollow": "holw", "island": "is",
    "junction": "jct", "key": "ky", "knoll": "knl", "lake": "lk", "lakes": "lks",
    "landing": "lndg", "lane": "ln", "light": "lgt", "lodge": "ldg", "loop": "loop",
    "manor": "mnr", "meadow": "mdw", "meadows": "mdws", "mill": "ml", "mission": "msn",
    "motorway": "mtwy", "mount": "mt", "mountain": "mtn", "neck": "nck", "orchard": "orch",
    "oval": "oval", "park": "park", "parkway": "pkwy", "pkway": "pkwy", "parkwy": "pkwy",
    "pass": "pass", "path": "path", "pike": "pike", "pine": "pne", "pines": "pnes",
    "place": "pl", "plain": "pln", "plains": "plns", "plaza": "plz", "point": "pt",
    "port": "prt", "prairie": "pr", "ranch": "rnch", "ridge": "rdg", "river": "riv",
    "road": "rd", "route": "rte", "row": "row", "run": "run", "shoal": "shl",
    "shore": "shr", "shores": "shrs", "spring": "spg", "springs": "spgs", "square": "sq",
    "station": "sta", "stream": "strm", "street": "st", "str": "st", "strt": "st",
    "summit": "smt", "terrace": "ter", "terr": "ter", "trace": "trce", "track": "trak",
    "trail": "trl", "trailer": "trlr", "tunnel": "tunl", "turnpike": "tpke",
    "union": "un", "valley": "vly", "viaduct": "via", "view": "vw", "village": "vlg",
    "ville": "vl", "vista": "vis", "walk": "walk", "wall": "wall", "way": "way",
    "well": "wl", "wells": "wls",
}  # fmt: skip
DIRECTIONALS = {
    "north": "n", "south": "s", "east": "e", "west": "w",
    "northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}  # fmt: skip
# Appendix C2: secondary unit designators. The designator is dropped in comparisons and
# only the unit's identifier kept.
UNIT_DESIGNATORS = frozenset(
    {"apartment", "apt", "building", "bldg", "department", "dept", "floor", "fl", "hangar",
     "hngr", "lot", "pier", "room", "rm", "slip", "space", "spc", "stop", "suite", "ste",
     "trailer", "trlr", "unit"}
)  # fmt: skip
_ADDRESS_WORD = re.compile(r"#|[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class NormalAddress:
    """What two addresses are compared on. ``street`` is the house number and the street
    words with the standard abbreviations; ``street_core`` leaves the suffix and
    directionals out (one system writes 'Oak St', another just 'Oak')."""

    street: str
    street_core: str
    unit: str
    city: str
    state: str
    zip5: str

    @property
    def is_empty(self) -> bool:
        return not (self.street or self.zip5 or self.city)


def _split_unit(words: list[str]) -> tuple[list[str], list[str]]:
    for position, word in enumerate(words):
        # A designator starts the secondary unit only after a number and a street word and
        # before at most two more words ("Apt 4 B"): "12 Pier Ave" has no unit.
        tail = len(words) - position - 1
        if word == "#" and position > 0 and tail <= 2:
            return words[:position], words[position + 1 :]
        if word in UNIT_DESIGNATORS and position > 1 and 1 <= tail <= 2:
            return words[:position], [w for w in words[position + 1 :] if w != "#"]
    return words, []


def _street_core(words: list[str]) -> list[str]:
    """Drop a trailing suffix and pre/post directionals, never the name itself."""
    core = list(words)
    if len(core) > 2 and core[-1] in _DIRECTIONAL_VALUES:
        core.pop()
    if len(core) > 2 and core[-1] in _SUFFIX_VALUES:
        core.pop()
    if len(core) > 2 and core[1] in _DIRECTIONAL_VALUES:
        del core[1]
    return core


@functools.lru_cache(maxsize=NAMES_CACHED)
def normalize_address(
    line1: str | None,
    line2: str | None,
    city: str | None,
    state: str | None,
    postal_code: str | None,
) -> NormalAddress:
    street_words, unit_words = _split_unit(_ADDRESS_WORD.findall(fold_address(line1 or "")))
    if line2:
        more = _ADDRESS_WORD.findall(fold_address(line2))
        # A second line is a unit ("Apt 4", "#4", "4B") unless it reads like a street.
        unit_words.extend(w for w in more if w != "#" and w not in UNIT_DESIGNATORS)
    standard = [STREET_SUFFIXES.get(w, DIRECTIONALS.get(w, w)) for w in street_words]
    core = _street_core(standard)
    zip_digits = "".join(c for c in (postal_code or "") if c.isdigit())
    return NormalAddress(
        street=" ".join(standard),
        street_core=" ".join(core),
        unit="".join(unit_words),
        city=fold(city or ""),
        state=fold(state or ""),
        zip5=zip_digits[:5] if len(zip_digits) >= 5 else "",
    )


_SUFFIX_VALUES = frozenset(STREET_SUFFIXES.values())
_DIRECTIONAL_VALUES = frozenset(DIRECTIONALS.values())


def fold_address(text: str) -> str:
    # '#' survives folding: it is a unit designator ("# 4", "#4").
    return " ".join(fold(part) if part != "#" else "#" for part in re.split(r"(#)", text))


def normal_address(address: PostalAddress) -> NormalAddress:
    return normalize_address(
        address.line1, address.line2, address.city, address.state, address.postal_code
    )


# -- phone, email, SSN --------------------------------------------------------------------


@functools.lru_cache(maxsize=FORMS_CACHED)
def normalize_phone(raw: str, region: str = "US") -> str | None:
    """E.164, or None when the text is not a possible number. Possible, not valid: an
    organization's record may carry a fictional 555 number, and it must still match the
    same number typed elsewhere."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str | None:
    """Case-folded address; None unless it has one '@' with text on both sides. The local
    part is case-insensitive in practice, though RFC 5321 allows otherwise."""
    value = raw.strip().casefold()
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain or " " in value:
        return None
    return value


def ssn_last4(raw: str) -> str | None:
    """The last four digits of an SSN as any system writes it; None for fewer digits and
    for the all-zero group (never issued, a placeholder)."""
    digits = "".join(c for c in raw if c.isdigit())
    if len(digits) < 4 or digits[-4:] == "0000":
        return None
    return digits[-4:]
