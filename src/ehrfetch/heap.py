"""The cyclic garbage collector, set for a process that runs batch after batch.

A batch worker's heap is mostly what stays for good once the first participants are
done: the FHIR model classes (hundreds, loaded as documents name them), SQLAlchemy's
compiled statements, the validate-once digests. CPython's full collection walks every
tracked object each time, and its young collection runs every 700 allocations. In the
throughput benchmark a worker spent 12.5 % of its CPU in the collector: 70 % of that in
~190 ms full collections, most of the rest in ~7,000 young ones per 10,000 participants
(docs/benchmarks.md, twelfth session).
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
"""Allocations between young collections (CPython's default: 700). A batch makes
millions of short-lived objects (parsed JSON, validated models) that reference counting
frees; a young collection walks only those still alive, so fewer collections do about
the same walking at a fraction of the count. The cyclic garbage waiting for one is a few
megabytes at most."""


def settle_heap() -> None:
    """Collect everything, then keep the survivors out of later collections.

    Called as each batch starts. The unfreeze first puts the last batch's survivors
    back in view, so cyclic garbage among them (a cache entry evicted since, a session
    closed) is found now instead of kept: what freezing holds back is bounded by one
    batch. One full collection per batch replaces the several the batch would trigger.
    Safe while other batches run in threads: it only moves objects between the
    collector's generations; their owners see nothing.
    """
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    gc.unfreeze()
    gc.collect()
    gc.freeze()
