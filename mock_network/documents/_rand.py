"""Seeded randomness. Everything derives from a hash of the inputs: no global state, no clock.

Python's built-in ``hash`` is salted per process, so blake2b is used instead: the same inputs
give the same numbers in every process, which is what "the same URL returns the same bytes"
needs.
"""

from __future__ import annotations

import hashlib
import random


def _digest(parts: tuple[object, ...], size: int) -> bytes:
    text = "\x1f".join(map(str, parts))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()


def derive_int(*parts: object) -> int:
    return int.from_bytes(_digest(parts, 8), "big")


def rng(*parts: object) -> random.Random:
    return random.Random(derive_int(*parts))


def det_uuid(*parts: object) -> str:
    """A version-4-shaped UUID that is a pure function of ``parts``."""
    raw = bytearray(_digest(parts, 16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def det_oid(*parts: object) -> str:
    """An OID under the 2.25 (UUID-derived) arc, so nobody else's namespace is borrowed."""
    return "2.25." + str(int(det_uuid(*parts).replace("-", ""), 16))


def det_digits(n: int, *parts: object) -> str:
    return str(derive_int(*parts) % (10**n)).zfill(n)
