"""persist_event and persist_events: store accepted events in PostgreSQL, exactly once.

A message's events go to PostgreSQL as one JSON parameter of one statement that commits by
itself: one round trip, whatever the number of events. Their ids travel on to the projection,
gathered with those of the process's other tasks (tasks/chaining.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Task
from sqlalchemy.exc import DBAPIError

from ingest.canonical import compact_json
from ingest.contract import PERSIST_EVENT, PERSIST_EVENTS, event_ids_of, events_repr
from models.engines import execute
from models.errors import is_transient
from tasks.backoff import backoff_seconds
from tasks.celery import app
from tasks.chaining import ProjectionChain
from tasks.projection import project_to_mysql

logger = logging.getLogger(__name__)

projections = ProjectionChain(project_to_mysql)

# Retries of a PostgreSQL outage wait at most this long apart, and never give up: PostgreSQL is
# the source of truth and the message must not be dead-lettered for it.
RETRY_BACKOFF_MAX = 60

PERSIST_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "max_retries": None,
}

# The payload's hash is PostgreSQL's: SHA-256 of the jsonb's text, one spelling per value.
PAYLOAD_SHA256 = "encode(sha256(convert_to(payload::text, 'UTF8')), 'hex')"

# The first of several rows with one event_id wins, as it would in a VALUES list; of each
# event, jsonb_to_recordset takes the fields it names and ignores the rest (an event the API
# did not check against a schema has no schema_version or schema_violations: NULL).
INSERT_EVENTS = f"""
INSERT INTO events
    (event_id, event_type, source, occurred_at, received_at, payload, payload_sha256,
     schema_version, schema_violations)
SELECT event_id, event_type, source, occurred_at, received_at, payload, {PAYLOAD_SHA256},
       schema_version, schema_violations
FROM jsonb_to_recordset(%s::jsonb) AS arrived(
    event_id text, event_type text, source text, occurred_at timestamptz,
    received_at timestamptz, payload jsonb, schema_version integer, schema_violations jsonb)
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

# A redelivered message is no conflict; the same event_id with another payload is.
MARK_CONFLICTS = f"""
UPDATE events
SET conflict_payload_sha256 = arrived.payload_sha256, conflict_at = now()
FROM (SELECT event_id, {PAYLOAD_SHA256} AS payload_sha256
      FROM jsonb_to_recordset(%s::jsonb) AS arrived(event_id text, payload jsonb)
      WHERE event_id = ANY(%s)) AS arrived
WHERE events.event_id = arrived.event_id AND events.payload_sha256 <> arrived.payload_sha256
"""


@app.task(name=PERSIST_EVENT, **PERSIST_OPTIONS)
def persist_event(self: Task, event: dict[str, Any]) -> None:
    persist(self, [event["event_id"]], compact_json([event]))


@app.task(name=PERSIST_EVENTS, **PERSIST_OPTIONS)
def persist_events(self: Task, events: list[Any], events_json: str | None = None) -> None:
    """`events`: the events' ids, and `events_json` the events as one JSON array, as the API
    sends them (the worker hands the text to PostgreSQL unread); or the events themselves."""
    if events_json is None:
        events_json, events = compact_json(events), event_ids_of(events)
    persist(self, events, events_json)


def persist(task: Task, event_ids: list[str], events_json: str) -> None:
    settings = task.app.settings
    try:
        inserted, duplicates = store_events(settings.postgres_url, event_ids, events_json)
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        # The retry carries the same arguments: Flower must still show ids, never payloads.
        raise task.retry(
            exc=exc,
            countdown=backoff_seconds(task.request.retries, cap=RETRY_BACKOFF_MAX),
            argsrepr=events_repr(event_ids),
        ) from exc
    logger.info(
        "Stored events",
        extra={"event_ids": event_ids, "inserted": len(inserted), "request_id": request_id(task)},
    )
    if settings.mysql_url:
        projections.add(inserted, duplicates, request_id(task))


def store_events(
    postgres_url: str, event_ids: Sequence[str], events_json: str
) -> tuple[list[str], list[str]]:
    """Insert the events of `events_json` (a JSON array) that are new; mark a reused event_id
    whose payload differs. Returns the ids inserted now and the ids that were there already.
    Safe to run twice."""
    inserted = [row.event_id for row in execute(postgres_url, INSERT_EVENTS, (events_json,))]
    new = set(inserted)
    duplicates = list(dict.fromkeys(event_id for event_id in event_ids if event_id not in new))
    if duplicates:
        execute(postgres_url, MARK_CONFLICTS, (events_json, duplicates))
    return inserted, duplicates


def request_id(task: Task) -> str | None:
    return getattr(task.request, "request_id", None)
