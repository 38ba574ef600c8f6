"""The persist worker's projections, gathered: one project_to_mysql message for the tasks
that end together.

Each persist task hands the ids it stored to one thread of its process and waits until a
message carrying them is published (so a task is acked only after its projection left, as a
chained task would be). The thread gathers the ids that arrive within 20 ms of the first and
publishes them as one message: under load one projection message for several persist
messages, which saves the projection worker, the broker and both databases a round of
per-message work each time. A task waits that long at most, holding its thread, not a CPU.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from celery import Task

from ingest.handoff import ServedQueue

logger = logging.getLogger(__name__)

# How long ids wait for others once one arrives, and how many leave together, at most.
PROJECTION_LINGER_SECONDS = 0.02
PROJECTION_MAX_IDS = 1000
# A broker that blocks publishers (memory alarm) must not hold the thread forever.
CONFIRM_TIMEOUT = 10


@dataclass
class Stored:
    inserted: list[str]
    duplicates: list[str]
    request_id: str | None
    published: threading.Event = field(default_factory=threading.Event)


class ProjectionChain:
    def __init__(self, project: Task) -> None:
        self.project = project
        self._stored = ServedQueue(self._run, "ingest-projections")

    def add(self, inserted: list[str], duplicates: list[str], request_id: str | None) -> None:
        """Return once a projection of these ids was published (or its publish failed, and the
        reconciler will project them). An id that was there already may have been inserted by
        an earlier run that crashed before this point: the projection checks whether MySQL has
        it."""
        if inserted or duplicates:
            stored = Stored(inserted, duplicates, request_id)
            self._stored.put(stored)
            # The thread answers within its confirm timeout; the margin only guards against a bug.
            stored.published.wait(CONFIRM_TIMEOUT + 5)

    def _run(self, waiting: queue.SimpleQueue[Stored]) -> None:
        while True:
            gathered = [waiting.get()]
            closes_at = time.monotonic() + PROJECTION_LINGER_SECONDS
            count = len(gathered[0].inserted) + len(gathered[0].duplicates)
            while count < PROJECTION_MAX_IDS and (wait := closes_at - time.monotonic()) > 0:
                try:
                    stored = waiting.get(timeout=wait)
                except queue.Empty:
                    break
                gathered.append(stored)
                count += len(stored.inserted) + len(stored.duplicates)
            try:
                self._publish(gathered)
            finally:
                for stored in gathered:
                    stored.published.set()

    def _publish(self, gathered: list[Stored]) -> None:
        inserted = [event_id for stored in gathered for event_id in stored.inserted]
        duplicates = [event_id for stored in gathered for event_id in stored.duplicates]
        request_ids = [stored.request_id for stored in gathered]
        headers = {"request_id": request_ids[0]}
        if len(gathered) > 1:
            headers["request_ids"] = request_ids
        try:
            self.project.apply_async(
                args=[inserted],
                kwargs={"maybe_projected": duplicates} if duplicates else {},
                headers=headers,
                confirm_timeout=CONFIRM_TIMEOUT,
            )
        except Exception:
            # Failing the persist task would only redo the insert.
            logger.warning(
                "Could not publish the projection; the reconciler will project these events",
                exc_info=True,
                extra={"event_ids": inserted + duplicates},
            )
