"""Requests that wait for another thread without holding one of their own.

POST /v1/events spends most of its time waiting for the broker to confirm the group its event
leaves in. Run in an app thread, each such request costs four hand-offs between threads (loop to
app thread, app thread to the publishing thread and back, app thread to loop), each the wake-up
of a sleeping thread and a pass of the GIL. Run on the event loop's own thread, in a greenlet, the
request is suspended where it waits, and the publishing thread wakes the loop once for a whole
group. Only a route whose one wait is such a hand-off may run here: anything that blocks on I/O
would hold the loop, and every request of the process with it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from greenlet import getcurrent, greenlet

T = TypeVar("T")
Arrival = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


class Inbox:
    """Outcomes that other threads hand to the futures of the event loop, delivered with one
    wake-up of the loop for all those that arrived while it was busy, not one each. (granian
    runs one loop per worker process.)"""

    def __init__(self) -> None:
        self._arrived: deque[Arrival] = deque()
        self._wake_pending = False

    def deliver(
        self, future: asyncio.Future[Any], result: Any = None, error: BaseException | None = None
    ) -> None:
        """Settle `future` on its loop, from any thread."""
        self._arrived.append((future, result, error))
        # Appended before the flag is read; _settle clears the flag before it drains.
        if not self._wake_pending:
            self._wake_pending = True
            future.get_loop().call_soon_threadsafe(self._settle)

    def _settle(self) -> None:
        self._wake_pending = False
        while self._arrived:
            future, result, error = self._arrived.popleft()
            if future.done():  # its waiter gave up: timed out or cancelled
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


class LoopRequest(greenlet):
    """A request running on the event loop's thread; it suspends itself to await."""

    def __init__(self, call: Callable[..., Any], inbox: Inbox) -> None:
        super().__init__(call)
        self.inbox = inbox

    def suspend(self, awaitable: Awaitable[T]) -> T:
        """Let the loop run until `awaitable` is done; its result, or its error raised here."""
        return self.parent.switch(awaitable)


async def run_on_loop(call: Callable[[Any], T], argument: Any, inbox: Inbox) -> T:
    """`call(argument)` on this loop's thread, each of its waits awaited on the loop."""
    request = LoopRequest(call, inbox)
    awaited = request.switch(argument)
    while not request.dead:
        try:
            outcome = await awaited
        except BaseException as exc:  # noqa: BLE001 - a cancel too: the request unwinds
            awaited = request.throw(exc)
        else:
            awaited = request.switch(outcome)
    return awaited


class Completion(Protocol):
    """Another thread's signal that a request may go on."""

    def set(self) -> None:
        """Let the waiter go on; from any thread, once."""

    def wait(self, timeout: float) -> bool:
        """Whether it was set within `timeout` seconds."""


class ThreadCompletion:
    """Waited for by blocking the request's thread on a bare lock (cheaper than an Event)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)


class LoopCompletion:
    """Waited for by suspending the request on its loop: the thread serves others meanwhile."""

    def __init__(self, request: LoopRequest) -> None:
        self._request = request
        self._future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def set(self) -> None:
        self._request.inbox.deliver(self._future)

    def wait(self, timeout: float) -> bool:
        return self._request.suspend(self._settled(timeout))

    async def _settled(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._future
        except TimeoutError:
            return False
        return True


def completion() -> Completion:
    """What the current request waits on for another thread, wherever it runs."""
    current = getcurrent()
    if isinstance(current, LoopRequest):
        return LoopCompletion(current)
    return ThreadCompletion()
