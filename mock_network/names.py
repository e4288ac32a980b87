"""Name tables with real US frequencies (1990 Census, see data/*.tsv) and the nickname map.

Names are drawn by weight with a binary search over cumulative weights, so drawing costs a
`random()` and a `bisect`, which matters when the population index is built at startup.
"""

from __future__ import annotations

import bisect
import functools
import random
from dataclasses import dataclass
from importlib import resources

from nicknames import NickNamer


@dataclass(frozen=True)
class NameTable:
    names: tuple[str, ...]
    cumulative: tuple[float, ...]

    def draw(self, rng: random.Random) -> str:
        # cumulative ends at exactly 1.0 and random() < 1.0, so the index is in range.
        return self.names[bisect.bisect_right(self.cumulative, rng.random())]

    def draw_common(self, rng: random.Random, top: int) -> str:
        """One of the `top` most frequent names (for namesakes: common names collide)."""
        return self.names[rng.randrange(min(top, len(self.names)))]


def _load(filename: str) -> NameTable:
    text = resources.files("mock_network").joinpath("data", filename).read_text("utf-8")
    names: list[str] = []
    cumulative: list[float] = []
    total = 0.0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, weight = line.split("\t")
        total += float(weight)
        names.append(name)
        cumulative.append(total)
    normalized = [value / total for value in cumulative]
    normalized[-1] = 1.0
    return NameTable(tuple(names), tuple(normalized))


@functools.cache
def surnames() -> NameTable:
    return _load("surnames.tsv")


@functools.cache
def given_names(sex: str) -> NameTable:
    return _load("given_female.tsv" if sex == "female" else "given_male.tsv")


@functools.cache
def _nicknamer() -> NickNamer:
    return NickNamer()


@functools.lru_cache(maxsize=8192)
def nicknames_of(given: str) -> tuple[str, ...]:
    """Nicknames of a given name, title-cased and sorted so a seeded draw is stable."""
    found = _nicknamer().nicknames_of(given.lower())
    return tuple(sorted(name.capitalize() for name in found if len(name) > 1))


@functools.lru_cache(maxsize=8192)
def name_forms(given: str) -> frozenset[str]:
    """Every form a given name may take: itself, its nicknames and what it is a nickname
    of (Bob <-> Robert), lower-cased, for the matcher."""
    lowered = given.lower()
    namer = _nicknamer()
    forms = {lowered}
    forms.update(namer.nicknames_of(lowered))
    forms.update(namer.canonicals_of(lowered))
    return frozenset(forms)
