"""A 202 only for a message the broker confirmed on a queue, each request by its own deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from kombu import Connection

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE
from ingest_api.app import close_app, create_app
from testlib.api import AUTH, event
from testlib.private_servers import DelayingProxy

CONFIRM_DELAY = 2.0


@pytest.fixture
def slow_broker(private_vhost: Settings) -> Iterator[tuple[DelayingProxy, Flask]]:
    """The API publishing through a proxy that can hold the broker's answers back."""
    address, vhost = private_vhost.broker_url.split("@")[1].split("/")
    host, port = address.split(":")
    proxy = DelayingProxy((host, int(port)))
    app = create_app(
        private_vhost.replace(broker_url=f"amqp://guest:guest@127.0.0.1:{proxy.port}/{vhost}")
    )
    try:
        yield proxy, app
    finally:
        close_app(app)
        proxy.close()


def test_no_202_for_an_event_whose_queue_was_deleted(private_vhost: Settings) -> None:
    app = create_app(private_vhost)
    try:
        client = app.test_client()
        assert client.post("/v1/events", json=event("before"), headers=AUTH).status_code == 202
        with Connection(private_vhost.broker_url) as connection:
            connection.default_channel.queue_delete(PERSIST_QUEUE)

        after = client.post("/v1/events", json=event("after"), headers=AUTH)
    finally:
        close_app(app)

    # Without `mandatory` the broker confirmed the message and dropped it: a 202 for nothing.
    # Returned, it is published again on a connection that declares the queue anew.
    assert after.status_code == 202
    [queued] = messages_in(private_vhost, PERSIST_QUEUE)
    assert '"event_id":"after"' in queued


def test_each_request_waits_for_the_broker_until_its_own_deadline(
    slow_broker: tuple[DelayingProxy, Flask], private_vhost: Settings
) -> None:
    proxy, app = slow_broker
    assert app.test_client().post("/v1/events", json=event("warm"), headers=AUTH).status_code == 202
    proxy.delay = CONFIRM_DELAY
    answers: dict[str, int] = {}

    def post(event_id: str, after: float) -> None:
        time.sleep(after)
        response = app.test_client().post("/v1/events", json=event(event_id), headers=AUTH)
        answers[event_id] = response.status_code

    # "first" is published alone and confirmed after 2 s; "early" and "late" wait for it and
    # leave together at ~2 s, confirmed at ~4 s: past the 3 s of "early", within those of "late".
    posts = [("first", 0.0), ("early", 0.1), ("late", 1.6)]
    threads = [threading.Thread(target=post, args=post_args) for post_args in posts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert private_vhost.publish_timeout == 3.0
    # Published with the earliest deadline of their group, both would have been refused.
    assert answers == {"first": 202, "early": 503, "late": 202}
    queued = "".join(messages_in(private_vhost, PERSIST_QUEUE))
    assert '"late"' in queued


def messages_in(settings: Settings, queue: str) -> list[str]:
    """The bodies of the messages in `queue`, which this empties."""
    bodies: list[str] = []
    with Connection(settings.broker_url) as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(queue, no_ack=True)) is not None:
            body = message.body
            bodies.append(body.decode() if isinstance(body, bytes) else body)
    return bodies
