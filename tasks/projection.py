"""project_to_mysql and reconcile_projection: keep the MySQL projection eventually complete.

Nothing here writes PostgreSQL rows other than their projection bookkeeping, in transactions
of its own, so the projection can never block, slow or roll back the PostgreSQL write.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Task
from sqlalchemy import select, update
from sqlalchemy.dialects.mysql import Insert
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.exc import InterfaceError, OperationalError

from ingest.config import Settings
from ingest.events import utc_now
from models import Event, EventProjection, session_scope
from tasks.celery_app import app

logger = logging.getLogger(__name__)

# Either database unreachable or timing out: retry later; the reconciler is the backstop.
TRANSIENT_ERRORS = (OperationalError, InterfaceError)
PROJECTED_COLUMNS = (
    "event_id",
    "event_type",
    "source",
    "occurred_at",
    "received_at",
    "stored_at",
    "payload",
    "payload_sha256",
)


def _upsert_projection() -> Insert:
    """One cached statement; executed with many records it becomes one multi-row upsert."""
    statement = mysql_insert(EventProjection)
    refreshed = [*PROJECTED_COLUMNS[1:], "projected_at"]
    return statement.on_duplicate_key_update({name: statement.inserted[name] for name in refreshed})


UPSERT_PROJECTION = _upsert_projection()


# max_retries=None: INGEST_PROJECTION_MAX_RETRIES decides when to give up; Celery's own cap
# (3) would fail the task first, and the failed message would be dead-lettered.
@app.task(
    name="ingest.project_to_mysql", bind=True, acks_late=True, ignore_result=True, max_retries=None
)
def project_to_mysql(self: Task, event_ids: list[str]) -> None:
    settings = self.app.settings
    try:
        projected = project_events(settings, event_ids)
    except TRANSIENT_ERRORS as exc:
        record_failed_attempt(settings, event_ids)
        if self.request.retries >= settings.projection_max_retries:
            logger.warning(
                "Projection retries ran out; the reconciler will project these events",
                extra={"event_ids": event_ids, "error": str(exc.orig or exc)},
            )
            return
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    logger.info("Projected events", extra={"event_ids": event_ids, "projected": projected})


def backoff_seconds(retries: int, base: float = 1.0, cap: float = 300.0) -> int:
    """Exponential backoff with full jitter, in whole seconds, at least 1: delayed delivery on
    quorum queues counts whole seconds and refuses less than 1, which dead-letters the retry."""
    return random.randint(1, max(1, int(min(cap, base * 2**retries))))


def project_events(settings: Settings, event_ids: Sequence[str]) -> int:
    """Upsert the still-unprojected events among `event_ids` into MySQL, read from PostgreSQL
    (never from task arguments). Safe to run twice. Returns how many rows were upserted."""
    assert settings.mysql_url, "projection is off when MYSQL_URL is unset"
    with session_scope(settings.postgres_url) as session:
        rows = session.execute(
            select(*(getattr(Event, name) for name in PROJECTED_COLUMNS)).where(
                Event.event_id.in_(event_ids), Event.projected_at.is_(None)
            )
        ).all()
    if not rows:
        return 0
    projected_at = naive_utc(utc_now())
    records = [projection_record(row._asdict(), projected_at) for row in rows]
    with session_scope(settings.mysql_url) as session:
        session.execute(UPSERT_PROJECTION, records)
    with session_scope(settings.postgres_url) as session:
        session.execute(
            update(Event)
            .where(Event.event_id.in_([record["event_id"] for record in records]))
            .values(projected_at=utc_now(), projection_attempts=Event.projection_attempts + 1)
        )
    return len(records)


def projection_record(row: dict[str, Any], projected_at: datetime) -> dict[str, Any]:
    """A PostgreSQL row as MySQL stores it: every time in naive UTC."""
    record = {
        name: naive_utc(value) if isinstance(value, datetime) else value
        for name, value in row.items()
    }
    record["projected_at"] = projected_at
    return record


def naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def record_failed_attempt(settings: Settings, event_ids: Sequence[str]) -> None:
    """Count the attempt if PostgreSQL can be reached; the count is informative only."""
    try:
        with session_scope(settings.postgres_url) as session:
            session.execute(
                update(Event)
                .where(Event.event_id.in_(event_ids), Event.projected_at.is_(None))
                .values(projection_attempts=Event.projection_attempts + 1)
            )
    except TRANSIENT_ERRORS:
        logger.warning("Could not count a failed projection attempt", exc_info=True)


@app.task(name="ingest.reconcile_projection", bind=True, acks_late=True, ignore_result=True)
def reconcile_projection(self: Task) -> None:
    settings = self.app.settings
    if not settings.mysql_url:
        return
    try:
        projected = reconcile(settings)
    except TRANSIENT_ERRORS:
        # The next beat tick tries again; a dead letter would help nobody here.
        logger.warning("Reconciliation stopped early", exc_info=True)
        return
    logger.info("Reconciled the projection", extra={"projected": projected})


def reconcile(settings: Settings, grace: timedelta | None = None) -> int:
    """Project, chunk by chunk, every event stored longer than `grace` ago and still not in
    MySQL. Returns how many events it projected."""
    if grace is None:
        grace = timedelta(seconds=settings.reconcile_grace_seconds)
    total = 0
    while True:
        with session_scope(settings.postgres_url) as session:
            event_ids = session.scalars(
                select(Event.event_id)
                .where(Event.projected_at.is_(None), Event.stored_at <= utc_now() - grace)
                .order_by(Event.stored_at)
                .limit(settings.reconcile_chunk_size)
            ).all()
        if not event_ids:
            return total
        total += project_events(settings, event_ids)
