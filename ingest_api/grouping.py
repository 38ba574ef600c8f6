"""Single events that arrive together leave together: one confirmed message for many requests.

Requests hand their event to one publishing thread per process and wait: in the server on its
event loop, each in a greenlet (ingest_api.on_loop), elsewhere in their thread. The thread takes
whatever has queued up while its previous publish waited for the broker's confirm, publishes it
as one message and wakes every request in it: each 202 still stands behind the broker's confirm
of the message that carries its event. Under light load a group is one event, published at once.
"""

from __future__ import annotations

import logging
import queue
import time
from dataclasses import dataclass, field
from typing import Any

from ingest.contract import PERSIST_EVENT, events_repr
from ingest.handoff import ServedQueue
from ingest_api.on_loop import Completion, completion
from ingest_api.publisher import Publisher, PublishError

logger = logging.getLogger(__name__)


@dataclass
class _Pending:
    event: dict[str, Any]
    size: int
    request_id: str
    deadline: float
    # Set once the group's publish is over; made where the request runs (thread or loop).
    done: Completion = field(default_factory=completion)
    error: PublishError | None = None


class EventGrouper:
    def __init__(
        self, publisher: Publisher, max_events: int, max_bytes: int, linger: float
    ) -> None:
        self.publisher = publisher
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.linger = linger
        self._waiting = ServedQueue(self._run, "ingest-event-grouper")

    def publish(self, event: dict[str, Any], size: int, request_id: str) -> None:
        """Return once a message carrying `event` is confirmed, or raise PublishError."""
        pending = _Pending(event, size, request_id, time.monotonic() + self.publisher.timeout)
        self._waiting.put(pending)
        # Each request keeps its own deadline: a group is published until its latest one, and a
        # request whose time ran out first is answered 503 (the event may be stored all the
        # same; the client sends it again and the copy is ignored).
        if not pending.done.wait(max(pending.deadline - time.monotonic(), 0)):
            raise PublishError(f"the broker did not confirm within {self.publisher.timeout}s")
        if pending.error is not None:
            raise pending.error

    def _run(self, waiting: queue.SimpleQueue[_Pending]) -> None:
        while True:
            group = self._next_group(waiting)
            now = time.monotonic()
            live = []
            for pending in group:
                if pending.deadline > now:
                    live.append(pending)
                else:  # its request has already waited as long as a publish may take
                    pending.error = PublishError(
                        f"the broker did not confirm within {self.publisher.timeout}s"
                    )
                    pending.done.set()
            if live:
                self._publish(live)

    def _next_group(self, waiting: queue.SimpleQueue[_Pending]) -> list[_Pending]:
        group = [waiting.get()]
        size = group[0].size
        # An event alone leaves at once. When others are already waiting (load), the group stays
        # open a few milliseconds more: far fewer, larger messages for the workers to write.
        closes_at = time.monotonic() + self.linger
        while len(group) < self.max_events and size < self.max_bytes:
            wait = closes_at - time.monotonic() if len(group) > 1 else 0
            try:
                pending = waiting.get(timeout=wait) if wait > 0 else waiting.get_nowait()
            except queue.Empty:
                break
            group.append(pending)
            size += pending.size
        return group

    def _publish(self, group: list[_Pending]) -> None:
        error: PublishError | None = None
        headers = {"request_id": group[0].request_id}
        deadline = max(p.deadline for p in group)
        try:
            if len(group) == 1:
                event = group[0].event
                self.publisher.publish(
                    PERSIST_EVENT,
                    [event],
                    headers,
                    deadline=deadline,
                    argsrepr=events_repr([event["event_id"]]),
                )
            else:
                headers["request_ids"] = [p.request_id for p in group]
                self.publisher.publish_events([p.event for p in group], headers, deadline)
        except PublishError as exc:
            error = exc
        except Exception as exc:  # the thread must outlive any failure
            logger.exception("Publishing a group of events failed")
            error = PublishError(str(exc))
        for pending in group:
            pending.error = error
            pending.done.set()
