"""The API from a client's side: the test keys, a valid event, an API whose published messages
no worker takes, and what it published."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask.testing import FlaskClient
from kombu import Connection
from werkzeug.test import TestResponse

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, declare_topology
from ingest_api.app import close_app, create_app
from testlib.servers import isolated_vhost

API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# A read key: event status and /openapi.json; the write key above only sends.
READ_KEY = "test-read-key"
READ_AUTH = {"Authorization": f"Bearer {READ_KEY}"}
# An admin key: reads and changes event schemas (/v1/schemas), nothing else.
ADMIN_KEY = "test-admin-key"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    """A valid event; `fields` override or add to it."""
    return {
        "event_id": event_id,
        "event_type": "order.created",
        "occurred_at": "2026-11-27T10:00:00+01:00",
        "source": "shop",
        "payload": {"order_id": event_id, "total": 12.5, "items": [{"sku": "A-1", "qty": 2}]},
        **fields,
    }


@contextmanager
def unconsumed_api(settings: Settings, name: str, **limits: int) -> Iterator[FlaskClient]:
    """A test client of an API with these limits, publishing to a vhost of its own.

    No worker consumes that vhost, even when a test before started the run's workers, so its
    persist queue holds exactly what the API published.
    """
    with isolated_vhost(settings.broker_url, f"ingest-test-{os.getpid()}-{name}") as broker_url:
        own = settings.replace(broker_url=broker_url, **limits)
        with Connection(own.broker_url) as connection:
            declare_topology(connection)
        app = create_app(own)
        try:
            yield app.test_client()
        finally:
            close_app(app)


def broker_url(client: FlaskClient) -> str:
    return client.application.extensions["ingest.settings"].broker_url


def queued_messages(client: FlaskClient) -> int:
    """Messages waiting on the persist queue of the client's API."""
    with Connection(broker_url(client)) as connection:
        declared = connection.default_channel.queue_declare(PERSIST_QUEUE, passive=True)
        return declared.message_count


def take_queued_events(client: FlaskClient) -> list[dict[str, Any]]:
    """Every event in the messages on the persist queue of the client's API, which this empties."""
    found: list[dict[str, Any]] = []
    with Connection(broker_url(client)) as connection:
        channel = connection.default_channel
        while (message := channel.basic_get(PERSIST_QUEUE, no_ack=True)) is not None:
            found.extend(_events_in(json.loads(message.body)[0]))
    return found


def _events_in(args: list[Any]) -> list[dict[str, Any]]:
    """persist_event's one event, or persist_events' events, sent as one JSON text."""
    if len(args) == 1:
        return [args[0]]
    event_ids, events_json = args
    events = json.loads(events_json)
    assert [event["event_id"] for event in events] == event_ids
    return events


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    """The response is an RFC 9457 problem with this status; returns its body."""
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.mimetype == "application/problem+json"
    body = json.loads(response.get_data())
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    return body
