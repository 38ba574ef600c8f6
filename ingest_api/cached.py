"""A figure that many threads ask for, computed by one of them at most once per interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Cached(Generic[T]):
    """The result of `compute`, refreshed when older than `max_age` seconds by one caller at a
    time. While one refreshes, the others get the last result at once (only the very first
    callers wait for one): a storm of requests costs one query per interval and holds no
    request thread. A failure counts as a result: it is raised to callers until the next one."""

    def __init__(self, compute: Callable[[], T], max_age: float) -> None:
        self.compute = compute
        self.max_age = max_age
        self._refreshing = threading.Lock()
        self._first = threading.Event()
        self._taken_at = float("-inf")
        # (result, error), replaced as one: readers never see one half of each refresh.
        self._outcome: tuple[T | None, Exception | None] = (None, None)

    def get(self) -> T:
        stale = time.monotonic() - self._taken_at > self.max_age
        if stale and self._refreshing.acquire(blocking=False):
            try:
                try:
                    self._outcome = (self.compute(), None)
                except Exception as exc:  # noqa: BLE001 - kept, and raised to every caller
                    self._outcome = (None, exc)
                self._taken_at = time.monotonic()
                self._first.set()
            finally:
                self._refreshing.release()
        self._first.wait()
        result, error = self._outcome
        if error is not None:
            raise error
        return result  # type: ignore[return-value]
