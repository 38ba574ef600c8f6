"""project_to_mysql and reconcile_projection: keep the MySQL projection eventually complete.

The persist worker hands over the rows it has just inserted, so the projection writes MySQL
without reading PostgreSQL again, and PostgreSQL keeps no per-row bookkeeping: MySQL itself
says which events it holds. The reconciler walks `events` once, in the order of the
transactions that inserted them, from a checkpoint, and projects whatever MySQL lacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any

from celery import Task
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ingest.config import Settings
from ingest.events import compact_json, event_ids_of, events_repr
from models import engine_for
from models.engines import execute
from models.errors import is_transient
from tasks.backoff import backoff_seconds
from tasks.celery_app import app

logger = logging.getLogger(__name__)

UPSERT_PROJECTION = """
INSERT INTO events_projection
    (event_id, event_type, source, occurred_at, received_at, stored_at, payload,
     payload_sha256, projected_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON DUPLICATE KEY UPDATE
    event_type = VALUES(event_type), source = VALUES(source),
    occurred_at = VALUES(occurred_at), received_at = VALUES(received_at),
    stored_at = VALUES(stored_at), payload = VALUES(payload),
    payload_sha256 = VALUES(payload_sha256), projected_at = VALUES(projected_at)
"""

STORED_ROWS = """
SELECT event_id, event_type, source, occurred_at, received_at, payload, payload_sha256,
       stored_at
FROM events WHERE event_id = ANY(%s)
"""

# The events after the checkpoint, in the order of their inserting transactions, that no
# running transaction can still add to: every transaction older than the snapshot's xmin ended.
EVENTS_AFTER = """
SELECT insert_xid, id, event_id, stored_at <= now() - make_interval(secs => %s) AS settled
FROM events
WHERE (insert_xid, id) > (%s, %s)
  AND insert_xid < (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint
ORDER BY insert_xid, id
LIMIT %s
"""

CHECKPOINT = "mysql"
# Before every event: (insert_xid, id) of the first one is at least (0, 1).
START = (-1, -1)
# One reconciler at a time, across every process: a PostgreSQL advisory lock with this key.
RECONCILE_LOCK = 0x1A6E57


# max_retries=None: INGEST_PROJECTION_MAX_RETRIES decides when to give up; Celery's own cap
# (3) would fail the task first, and the failed message would be dead-lettered.
@app.task(
    name="ingest.project_to_mysql", bind=True, acks_late=True, ignore_result=True, max_retries=None
)
def project_to_mysql(self: Task, rows: list[Any]) -> None:
    """`rows`: stored rows as the persist worker hands them over, or event ids to read."""
    settings = self.app.settings
    assert settings.mysql_url, "projection is off when MYSQL_URL is unset"
    try:
        if rows and isinstance(rows[0], str):
            rows = stored_rows(settings.postgres_url, rows)
        upsert_projection(settings.mysql_url, rows)
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        event_ids = [row if isinstance(row, str) else row["event_id"] for row in rows]
        if self.request.retries >= settings.projection_max_retries:
            logger.warning(
                "Projection retries ran out; the reconciler will project these events",
                extra={"event_ids": event_ids, "error": str(exc.orig or exc)},
            )
            return
        # The retry carries the same rows: Flower must still show ids, not payloads.
        raise self.retry(
            exc=exc,
            countdown=backoff_seconds(self.request.retries),
            argsrepr=events_repr(event_ids),
        ) from exc
    logger.info(
        "Projected events",
        extra={"event_ids": event_ids_of(rows), "projected": len(rows)},
    )


def upsert_projection(mysql_url: str, rows: Sequence[dict[str, Any]]) -> None:
    """One multi-row upsert; every time as naive UTC text, as MySQL keeps no offset (and
    the driver quotes text several times faster than datetimes)."""
    if not rows:
        return
    projected_at = mysql_datetime(datetime.now(UTC))
    execute(
        mysql_url,
        UPSERT_PROJECTION,
        [
            (
                row["event_id"],
                row["event_type"],
                row["source"],
                mysql_datetime(row["occurred_at"]),
                mysql_datetime(row["received_at"]),
                mysql_datetime(row["stored_at"]),
                compact_json(row["payload"]),
                row["payload_sha256"],
                projected_at,
            )
            for row in rows
        ],
    )


def stored_rows(postgres_url: str, event_ids: Sequence[str]) -> list[dict[str, Any]]:
    """The stored events among `event_ids`, read from PostgreSQL."""
    return [row._asdict() for row in execute(postgres_url, STORED_ROWS, (list(event_ids),))]


def mysql_datetime(moment: datetime | str) -> str:
    """A time (or an ISO 8601 text of one) as MySQL's DATETIME(6) literal, in UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


@app.task(name="ingest.reconcile_projection", bind=True, acks_late=True, ignore_result=True)
def reconcile_projection(self: Task) -> None:
    settings = self.app.settings
    if not settings.mysql_url:
        return
    try:
        projected = reconcile(settings, budget=settings.reconcile_interval_seconds)
    except DBAPIError:
        # The next beat tick tries again; a dead letter would help nobody here.
        logger.warning("Reconciliation stopped early", exc_info=True)
        return
    if projected is None:
        logger.info("Another reconciler is running; this tick leaves it to that one")
    else:
        logger.info("Reconciled the projection", extra={"projected": projected})


def reconcile(
    settings: Settings,
    grace: timedelta | None = None,
    budget: float | None = None,
    from_start: bool = False,
) -> int | None:
    """Project every stored event older than `grace` that MySQL lacks, chunk by chunk from the
    checkpoint (or from the first event), for at most `budget` seconds (the next run goes on
    from there). Returns how many events it projected, or None when another reconciler holds
    the lock."""
    assert settings.mysql_url, "projection is off when MYSQL_URL is unset"
    if grace is None:
        grace = timedelta(seconds=settings.reconcile_grace_seconds)
    stop_at = time.monotonic() + budget if budget is not None else None
    with reconciler_lock(settings.postgres_url) as locked:
        if not locked:
            return None
        position = START if from_start else checkpoint(settings.postgres_url)
        total = 0
        while stop_at is None or time.monotonic() < stop_at:
            chunk = execute(
                settings.postgres_url,
                EVENTS_AFTER,
                (grace.total_seconds(), *position, settings.reconcile_chunk_size),
            )
            # Younger events are the chained task's; the walk stops at the first of them.
            settled = list(takewhile(lambda row: row.settled, chunk))
            if not settled:
                return total
            total += project_missing(settings, [row.event_id for row in settled])
            position = (settled[-1].insert_xid, settled[-1].id)
            save_checkpoint(settings.postgres_url, position)
            if len(settled) < settings.reconcile_chunk_size:
                return total
        return total


def project_missing(settings: Settings, event_ids: Sequence[str]) -> int:
    """Project those of `event_ids` that MySQL does not hold; returns how many."""
    assert settings.mysql_url
    placeholders = ", ".join(["%s"] * len(event_ids))
    present = {
        row.event_id
        for row in execute(
            settings.mysql_url,
            f"SELECT event_id FROM events_projection WHERE event_id IN ({placeholders})",
            tuple(event_ids),
        )
    }
    missing = [event_id for event_id in event_ids if event_id not in present]
    if missing:
        upsert_projection(settings.mysql_url, stored_rows(settings.postgres_url, missing))
    return len(missing)


def checkpoint(postgres_url: str) -> tuple[int, int]:
    rows = execute(
        postgres_url,
        "SELECT insert_xid, event_pk FROM projection_checkpoint WHERE name = %s",
        (CHECKPOINT,),
    )
    return (rows[0].insert_xid, rows[0].event_pk) if rows else START


def save_checkpoint(postgres_url: str, position: tuple[int, int]) -> None:
    execute(
        postgres_url,
        "INSERT INTO projection_checkpoint (name, insert_xid, event_pk) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO UPDATE SET insert_xid = excluded.insert_xid,"
        " event_pk = excluded.event_pk, updated_at = now()",
        (CHECKPOINT, *position),
    )


@contextmanager
def reconciler_lock(postgres_url: str) -> Iterator[bool]:
    """Hold PostgreSQL's session lock for the reconciler, if no one else does."""
    with engine_for(postgres_url).connect() as connection:
        locked = connection.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": RECONCILE_LOCK}
        )
        connection.commit()
        try:
            yield bool(locked)
        finally:
            if locked:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": RECONCILE_LOCK})
                connection.commit()
