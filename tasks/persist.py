"""persist_event and persist_events: store accepted events in PostgreSQL, exactly once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from celery import Task
from sqlalchemy import column, func, update, values
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from ingest.events import parse_utc, payload_sha256
from models import Event, session_scope
from tasks.celery_app import app
from tasks.projection import project_to_mysql

logger = logging.getLogger(__name__)

# Connection loss, server shutdown, lock timeouts, deadlocks: worth retrying without end,
# since PostgreSQL is the source of truth and the message must not be dead-lettered for it.
TRANSIENT_POSTGRES_ERRORS = (OperationalError, InterfaceError)

# A broker that blocks publishers (memory alarm) must not hold the persist worker forever.
LINK_CONFIRM_TIMEOUT = 10

PERSIST_OPTIONS: dict[str, Any] = {
    "bind": True,
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "autoretry_for": TRANSIENT_POSTGRES_ERRORS,
    "max_retries": None,
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
}


INSERT_NEW_EVENTS = (
    insert(Event).on_conflict_do_nothing(index_elements=[Event.event_id]).returning(Event.event_id)
)


@app.task(name="ingest.persist_event", **PERSIST_OPTIONS)
def persist_event(self: Task, event: dict[str, Any]) -> None:
    persist(self, [event])


@app.task(name="ingest.persist_events", **PERSIST_OPTIONS)
def persist_events(self: Task, events: list[dict[str, Any]]) -> None:
    persist(self, events)


def persist(task: Task, events: Sequence[dict[str, Any]]) -> None:
    settings = task.app.settings
    with session_scope(settings.postgres_url) as session:
        inserted = store_events(session, events)
    event_ids = list(dict.fromkeys(event["event_id"] for event in events))
    logger.info(
        "Stored events",
        extra={"event_ids": event_ids, "inserted": inserted, "request_id": request_id(task)},
    )
    if settings.mysql_url:
        chain_projection(task, event_ids)


def store_events(session: Session, events: Sequence[dict[str, Any]]) -> int:
    """Insert the events that are new; mark a reused event_id whose payload differs. Returns
    how many rows were inserted."""
    rows = [event_row(event) for event in events]
    # Executed with many parameter sets, SQLAlchemy sends multi-row INSERTs from one cached
    # compiled statement: several times faster than compiling a fresh VALUES list per batch.
    inserted = set(session.scalars(INSERT_NEW_EVENTS, rows))
    first_seen: set[str] = set()
    duplicates = []
    for row in rows:
        if row["event_id"] in inserted and row["event_id"] not in first_seen:
            first_seen.add(row["event_id"])
        else:
            duplicates.append(row)
    if duplicates:
        mark_conflicts(session, duplicates)
    return len(inserted)


def event_row(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_id": event["event_id"],
        "event_type": event["event_type"],
        "source": event.get("source"),
        "occurred_at": parse_utc(event["occurred_at"]),
        "received_at": parse_utc(event["received_at"]),
        "payload": event["payload"],
        "payload_sha256": payload_sha256(event["payload"]),
    }


def mark_conflicts(session: Session, duplicates: Sequence[dict[str, Any]]) -> None:
    """A redelivered message is no conflict; the same event_id with another payload is."""
    arrived = values(column("event_id"), column("payload_sha256"), name="arrived").data(
        [(row["event_id"], row["payload_sha256"]) for row in duplicates]
    )
    session.execute(
        update(Event)
        .where(Event.event_id == arrived.c.event_id)
        .where(Event.payload_sha256 != arrived.c.payload_sha256)
        .values(conflict_payload_sha256=arrived.c.payload_sha256, conflict_at=func.now())
    )


def chain_projection(task: Task, event_ids: list[str]) -> None:
    """Publish the projection of what was just stored. If the publish fails the rows stay
    unprojected and the reconciler repairs them; failing here would only redo the insert."""
    try:
        project_to_mysql.apply_async(
            args=[event_ids],
            headers={"request_id": request_id(task)},
            confirm_timeout=LINK_CONFIRM_TIMEOUT,
        )
    except Exception:
        logger.warning(
            "Could not publish the projection; the reconciler will project these events",
            exc_info=True,
            extra={"event_ids": event_ids},
        )


def request_id(task: Task) -> str | None:
    return getattr(task.request, "request_id", None)
