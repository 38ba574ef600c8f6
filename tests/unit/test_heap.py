"""What a long-running process keeps from start-up is left out of later collections."""

import gc
import weakref
from collections.abc import Iterator

import pytest

from ingest.heap import freeze_startup_objects


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


def identities(objects: list[object]) -> set[int]:
    return {id(item) for item in objects}


def test_a_collection_after_start_up_scans_only_what_came_later(unfrozen: None) -> None:
    kept = {"app": ["built at start-up"]}
    assert id(kept) in identities(gc.get_objects())

    freeze_startup_objects()
    later = {"request": ["made while serving"]}

    scanned = identities(gc.get_objects())
    assert id(kept) not in scanned
    assert id(later) in scanned


def test_garbage_left_by_start_up_is_freed_not_frozen(unfrozen: None) -> None:
    dropped = weakref.ref(Node())
    assert dropped() is not None  # a cycle waits for the collector

    freeze_startup_objects()
    assert dropped() is None
