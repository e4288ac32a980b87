"""The cyclic garbage collector, set for a process that runs batch after batch.

A batch worker's heap is mostly what stays for good once the first participants are
done: the FHIR model classes (hundreds, loaded as documents name them), SQLAlchemy's
compiled statements, the validate-once digests. CPython's full collection walks every
tracked object each time, so in the throughput benchmark a worker spent 12.6 % of its
CPU in the collector, 71 % of that in ~170 ms full collections (docs/benchmarks.md,
twelfth session). ``gc.freeze`` moves the survivors out of the collector's sight, so
later collections walk only what was made since.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect everything, then keep the survivors out of later collections.

    Called as each batch starts. The unfreeze first puts the last batch's survivors
    back in view, so cyclic garbage among them (a cache entry evicted since, a session
    closed) is found now instead of kept: what freezing holds back is bounded by one
    batch. One full collection per batch replaces the several the batch would trigger.
    Safe while other batches run in threads: it only moves objects between the
    collector's generations; their owners see nothing.
    """
    gc.unfreeze()
    gc.collect()
    gc.freeze()
