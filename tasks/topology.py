"""Exchanges and queues. Every queue is a quorum queue that dead-letters into `ingest.dead`."""

from __future__ import annotations

from kombu import Connection, Exchange, Queue

EXCHANGE = Exchange("ingest", type="topic", durable=True)
DEAD_LETTER_EXCHANGE = Exchange("ingest.dlx", type="fanout", durable=True)

PERSIST_QUEUE = "ingest.persist"
PROJECTION_QUEUE = "ingest.projection"
DEAD_QUEUE = "ingest.dead"

# A message redelivered this often (worker killed by it each time) is parked, not looped.
DELIVERY_LIMIT = 10


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
    """Declare every exchange and queue; the dead-letter queue must exist before any reject."""
    channel = connection.default_channel
    for queue in (DEAD_QUEUE_DECLARATION, *WORK_QUEUES):
        queue.bind(channel).declare()
