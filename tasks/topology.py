"""Exchanges and queues. Every queue is a quorum queue that dead-letters into `ingest.dead`."""

from __future__ import annotations

import logging

from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Queue

logger = logging.getLogger(__name__)

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
                "recreate the queue as README.md says (Guarantees, delivery limit): %s",
                queue.name,
                DELIVERY_LIMIT,
                exc,
            )
