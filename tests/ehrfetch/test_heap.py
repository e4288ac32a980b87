"""settle_heap: a batch's survivors leave the collector's sight, and nothing is kept for good."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from ehrfetch.heap import YOUNG_THRESHOLD, settle_heap


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a  # only the cyclic collector can free these
    return a, weakref.ref(a)


@pytest.fixture(autouse=True)
def unfrozen() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the rest of the test run keeps the collector as it found it
    gc.set_threshold(*thresholds)


def test_survivors_are_frozen_and_garbage_is_collected_first() -> None:
    dropped, dropped_ref = cycle()
    kept, kept_ref = cycle()
    del dropped
    settle_heap()
    assert dropped_ref() is None  # collected, not frozen with the survivors
    assert gc.get_freeze_count() > 0
    # A collection now does not find the frozen cycle even once it is garbage...
    del kept
    gc.collect()
    assert kept_ref() is not None
    # ...until the next batch starts: frozen garbage lasts one batch at most.
    settle_heap()
    assert kept_ref() is None


def test_young_collections_run_less_often_and_the_older_ones_as_before() -> None:
    gc.set_threshold(700, 11, 12)
    settle_heap()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 11, 12)
