"""Seeded randomness: every random choice is a function of (seed, purpose, keys).

Nothing in the mock network uses the global `random` state or the clock for content, so
the same seed always yields the same people, records and documents, whatever order
requests arrive in.
"""

from __future__ import annotations

import hashlib
import random


def rng_for(seed: int, purpose: str, *keys: object) -> random.Random:
    """A private generator for one purpose. String seeding hashes with SHA-512 inside
    `random`, which is stable across processes (unlike `hash()`)."""
    return random.Random(f"{seed}|{purpose}|{'|'.join(map(str, keys))}")


def unit(seed: int, purpose: str, *keys: object) -> float:
    """One uniform draw in [0, 1), cheaper than building a generator."""
    digest = hashlib.blake2b(
        f"{seed}|{purpose}|{'|'.join(map(str, keys))}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def int_for(seed: int, purpose: str, *keys: object, bits: int = 62) -> int:
    digest = hashlib.blake2b(
        f"{seed}|{purpose}|{'|'.join(map(str, keys))}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") >> (64 - bits)
