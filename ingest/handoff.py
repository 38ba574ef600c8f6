"""A queue served by one thread of the process that puts into it."""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ServedQueue(Generic[T]):
    """Items put here are taken by `serve(queue)`, which runs for good in one thread of the
    current process. The thread starts at the first put in a process: servers and worker pools
    fork after import, and a thread does not survive a fork."""

    def __init__(self, serve: Callable[[queue.SimpleQueue[T]], None], name: str) -> None:
        self.serve = serve
        self.name = name
        self._queue: queue.SimpleQueue[T] = queue.SimpleQueue()
        self._owner_pid = 0
        self._start_lock = threading.Lock()

    def put(self, item: T) -> None:
        if self._owner_pid != os.getpid():
            with self._start_lock:
                if self._owner_pid != os.getpid():
                    self._queue = queue.SimpleQueue()
                    threading.Thread(
                        target=self.serve, args=(self._queue,), name=self.name, daemon=True
                    ).start()
                    self._owner_pid = os.getpid()
        self._queue.put(item)
