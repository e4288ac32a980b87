"""The blocking index: which people to score for a $match query.

A real master patient index never compares a query with every record; it looks up a few
blocking keys and scores what shares one. Ours keys every person on birth date and on
(surname Soundex, birth year, birth month) and (surname Soundex, birth year, birth day),
so one wrong digit in the date or a typo in the surname still finds them; children are
also keyed on a parent's birth date, which some organizations recorded by mistake. Keys
come from the true person (cheap at startup); the organization's noisy record is what
gets scored.

Memory matters at a million people: the keys live in one sorted `array('Q')` of
(key hash << 21 | index) values, about 8 bytes per entry, searched with `bisect`.
"""

from __future__ import annotations

import bisect
import datetime as dt
import functools
from array import array
from collections.abc import Iterable

from mock_network.population import BLOCK, PARENT_RELATIONS, Population, soundex

_INDEX_BITS = 21  # room for 2,097,151 people
_INDEX_MASK = (1 << _INDEX_BITS) - 1
_HASH_MASK = (1 << (63 - _INDEX_BITS)) - 1


@functools.lru_cache(maxsize=65_536)
def surname_code(family: str) -> str:
    return soundex(family)


def _key(*parts: object) -> int:
    # hash() is salted per process, which is fine: the index lives and dies with it.
    return hash(parts) & _HASH_MASK


def dob_key(birth_date: dt.date) -> int:
    return _key("d", birth_date.toordinal())


def name_keys(family: str, birth_date: dt.date) -> tuple[int, int]:
    code = surname_code(family)
    return (
        _key("m", code, birth_date.year, birth_date.month),
        _key("y", code, birth_date.year, birth_date.day),
    )


class BlockingIndex:
    def __init__(self, entries: array[int]) -> None:
        self._entries = entries

    @classmethod
    def build(cls, population: Population) -> BlockingIndex:
        values: list[int] = []
        append = values.append
        size = population.size
        for block in range((size + BLOCK - 1) // BLOCK):
            base = block * BLOCK
            cores = population.block_core(block)
            for slot, core in enumerate(cores):
                index = base + slot
                if index >= size:
                    break
                append(dob_key(core.birth_date) << _INDEX_BITS | index)
                for other, relation in core.related:
                    if relation in PARENT_RELATIONS:
                        # Some organizations typed the parent's birth date into this
                        # person's record (see Population.record): index that date too.
                        append(dob_key(cores[other].birth_date) << _INDEX_BITS | index)
                        break
                for key in name_keys(core.family, core.birth_date):
                    append(key << _INDEX_BITS | index)
                if core.maiden:
                    for key in name_keys(core.maiden, core.birth_date):
                        append(key << _INDEX_BITS | index)
        values.sort()
        return cls(array("Q", values))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._entries.itemsize * len(self._entries)

    def lookup(self, keys: Iterable[int]) -> set[int]:
        found: set[int] = set()
        entries = self._entries
        for key in keys:
            low = bisect.bisect_left(entries, key << _INDEX_BITS)
            high = bisect.bisect_left(entries, (key + 1) << _INDEX_BITS, low)
            found.update(value & _INDEX_MASK for value in entries[low:high])
        return found
