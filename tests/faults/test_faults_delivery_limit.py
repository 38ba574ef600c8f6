"""The work queues' delivery limit on a private RabbitMQ: what a fresh broker gets, and queues
an earlier version created with another limit, which the broker will not change."""

from __future__ import annotations

import re

import pytest
from kombu import Connection, Queue

from ingest.config import Settings
from ingest.contract import (
    DELIVERY_LIMIT,
    EXCHANGE,
    PERSIST_QUEUE,
    PROJECTION_QUEUE,
    WORK_QUEUES,
    declare_topology,
)
from testlib.data import dead_letters, reset
from testlib.faults import (
    Traffic,
    api,
    assert_stored_exactly_once,
    wait_until_projected,
    wait_until_stored,
)
from testlib.private_servers import RabbitNode, private_rabbitmq
from testlib.processes import running_workers

pytestmark = pytest.mark.slow

# What versions before this limit declared the work queues with.
EARLIER_DELIVERY_LIMIT = 10


def delivery_limits(node: RabbitNode) -> dict[str, int]:
    """{queue: its x-delivery-limit argument}, for the queues that have one."""
    listing = node.ctl("list_queues", "-q", "--no-table-headers", "name", "arguments")
    limits = {}
    for line in listing.splitlines():
        name, arguments = line.split(maxsplit=1)
        found = re.search(r'\{"x-delivery-limit",(\d+)\}', arguments)
        if found:
            limits[name] = int(found.group(1))
    return limits


def test_a_fresh_broker_gets_work_queues_with_the_delivery_limit() -> None:
    with private_rabbitmq() as node:
        with Connection(node.url) as connection:
            declare_topology(connection)
        limits = delivery_limits(node)

    assert limits == dict.fromkeys((PERSIST_QUEUE, PROJECTION_QUEUE), DELIVERY_LIMIT)


def test_queues_an_earlier_version_declared_keep_working_and_say_how_to_upgrade(
    settings: Settings,
) -> None:
    """A queue's arguments cannot change: a declaration with another x-delivery-limit fails
    with PRECONDITION_FAILED. The API and the workers still run on the old queues, and say
    what to do."""
    with private_rabbitmq() as node:
        ours = settings.replace(broker_url=node.url)
        with Connection(ours.broker_url) as connection:
            for queue in WORK_QUEUES:
                arguments = {**queue.queue_arguments, "x-delivery-limit": EARLIER_DELIVERY_LIMIT}
                earlier = Queue(queue.name, EXCHANGE, queue.routing_key, queue_arguments=arguments)
                earlier.bind(connection.default_channel).declare()
        reset(ours)
        with api(ours) as app, running_workers(ours) as (persist, projector):
            traffic = Traffic(app, "upgrade").run(limit=200)
            wait_until_stored(ours, traffic.acknowledged)
            assert_stored_exactly_once(ours, traffic.acknowledged, traffic.sent)
            wait_until_projected(ours)
        parked = dead_letters(ours)
        limits = delivery_limits(node)

    assert len(traffic.acknowledged) == 200
    assert parked == []
    assert limits == dict.fromkeys((PERSIST_QUEUE, PROJECTION_QUEUE), EARLIER_DELIVERY_LIMIT)
    for worker in (persist, projector):
        for queue in (PERSIST_QUEUE, PROJECTION_QUEUE):
            assert (
                f"Queue {queue} keeps the delivery limit it was created with, not "
                f"{DELIVERY_LIMIT}; to change it, recreate the queue" in worker.output()
            )
