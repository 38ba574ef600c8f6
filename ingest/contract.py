"""What the API, the workers and the CLI agree on: the broker's exchanges and queues, the task
names and the queue each task goes to, and how a task message names its events.

Every queue is a quorum queue that dead-letters into `ingest.dead`. Importing this module
builds no Celery app and loads no models: any process may use it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue

logger = logging.getLogger(__name__)

# Task names: the API publishes them, the workers register them, beat and the CLI send them.
PERSIST_EVENT = "ingest.persist_event"
PERSIST_EVENTS = "ingest.persist_events"
PROJECT_TO_MYSQL = "ingest.project_to_mysql"
RECONCILE_PROJECTION = "ingest.reconcile_projection"
# Flower shows this many event ids of a message's events, then counts the rest.
EVENT_IDS_SHOWN = 10

EXCHANGE = Exchange("ingest", type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("ingest.dlx", type="fanout", durable=True)

PERSIST_QUEUE = "ingest.persist"
PROJECTION_QUEUE = "ingest.projection"
DEAD_QUEUE = "ingest.dead"

# A message redelivered this often is parked, not looped. RabbitMQ 3.x counts a delivery for
# every message a worker held when it crashed (16 with the default pool), so a low limit parks
# healthy messages after a few crashes; a policy `delivery-limit` can lower it, never raise it.
DELIVERY_LIMIT = 100


def _work_queue(name: str) -> Queue:
    return Queue(
        name,
        EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE.name,
            # At-least-once dead-lettering: the broker keeps the message until ingest.dead has it.
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": DELIVERY_LIMIT,
        },
        # Only declare_topology declares them: Celery's own declare would stop a worker at a
        # queue an older version created with another delivery limit.
        no_declare=True,
    )


WORK_QUEUES = (_work_queue(PERSIST_QUEUE), _work_queue(PROJECTION_QUEUE))

# The queue each task is published to: persisting never waits behind the projection.
TASK_QUEUES = {
    PERSIST_EVENT: PERSIST_QUEUE,
    PERSIST_EVENTS: PERSIST_QUEUE,
    PROJECT_TO_MYSQL: PROJECTION_QUEUE,
    RECONCILE_PROJECTION: PROJECTION_QUEUE,
}

DEAD_QUEUE_DECLARATION = Queue(
    DEAD_QUEUE,
    DEAD_LETTER_EXCHANGE,
    routing_key="#",
    durable=True,
    queue_arguments={"x-queue-type": "quorum"},
)


def declare_topology(connection: Connection) -> None:
    """Declare every exchange and queue; the dead-letter queue must exist before any reject.

    A work queue that exists with an earlier version's delivery limit is used as it is (a
    queue's arguments cannot change) and a warning says how to recreate it."""
    channel = connection.default_channel
    DEAD_QUEUE_DECLARATION.bind(channel).declare()
    EXCHANGE.bind(channel).declare()
    for queue in WORK_QUEUES:
        _declare_work_queue(connection, queue)
        queue.bind(channel).queue_bind()


def _declare_work_queue(connection: Connection, queue: Queue) -> None:
    # On its own channel: the broker closes the channel on which a declaration fails.
    with connection.channel() as channel:
        try:
            queue.bind(channel).queue_declare()
        except PreconditionFailed as exc:
            if "inequivalent arg 'x-delivery-limit'" not in str(exc):
                raise
            logger.warning(
                "Queue %s keeps the delivery limit it was created with, not %s; to change it, "
                "recreate the queue as docs/guarantees.md says (The delivery limit): %s",
                queue.name,
                DELIVERY_LIMIT,
                exc,
            )


def event_ids_of(value: Any) -> list[str]:
    """The event ids a task's first argument carries: one event, a list of events or a list of
    ids (the ids of persist_events and project_to_mysql); anything else carries none."""
    items = value if isinstance(value, list) else [value]
    ids = (item.get("event_id") if isinstance(item, dict) else item for item in items)
    return [event_id for event_id in ids if isinstance(event_id, str)]


def events_repr(event_ids: Sequence[str]) -> str:
    """What Flower shows of a message's arguments: its event ids, never the payloads."""
    shown = ", ".join(event_ids[:EVENT_IDS_SHOWN])
    count = len(event_ids)
    more = f" and {count - EVENT_IDS_SHOWN} more" if count > EVENT_IDS_SHOWN else ""
    return f"[{count} events: {shown}{more}]"
