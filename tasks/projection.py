"""project_to_mysql and reconcile_projection: keep the MySQL projection eventually complete.

The persist worker hands over the ids it has just stored; the projection reads those rows from
PostgreSQL as ready-made MySQL text (nothing to parse or convert in Python) and upserts them in
one statement. PostgreSQL keeps no per-row bookkeeping: MySQL itself says which events it
holds. The reconciler walks `events` once, in the order of the transactions that inserted them,
from a checkpoint, and projects whatever MySQL lacks.

A row MySQL refuses for what it holds fails its whole statement: the rows are then split in
halves until the refused ones stand alone, the others go in, and each refused row is recorded in
PostgreSQL's `projection_refusals` (with MySQL's error) instead of failing the task or stopping
the reconciler. A later projection that MySQL takes clears the record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from itertools import takewhile

from celery import Task
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ingest.config import Settings
from ingest.contract import PROJECT_TO_MYSQL, RECONCILE_PROJECTION
from models import engine_for
from models.engines import execute
from models.errors import is_refusal, is_transient, mysql_error
from tasks.backoff import backoff_seconds
from tasks.celery import app

logger = logging.getLogger(__name__)

# Events read from PostgreSQL and upserted into MySQL at a time. A message may name 1,000
# (PROJECTION_MAX_IDS); 16 threads each holding that many rows at once kept the worker's peak
# some 13 MiB higher (scripts/benchmark.py); chunks cost no more CPU per event.
PROJECT_CHUNK = 200

# Bytes of rows per upsert statement, at most: a payload of 4 MiB (MAX_STORED_PAYLOAD_BYTES)
# goes alone, 8 MiB as hex, under MySQL's max_allowed_packet (16 MiB by default); the driver's
# executemany had cut its statements at 64 KiB.
STATEMENT_BYTES = 1024 * 1024

# The rows go to MySQL as SQL that PostgreSQL writes (STORED_ROWS): text as hex strings, times
# in UTC, the payload as the jsonb's text (the text payload_sha256 hashes). The worker only joins
# them into statements: the driver's quoting of nine values per row had taken half its CPU.
UPSERT_PROJECTION = """
INSERT INTO events_projection
    (event_id, event_type, source, occurred_at, received_at, stored_at, payload,
     payload_sha256, projected_at)
VALUES {}
ON DUPLICATE KEY UPDATE
    event_type = VALUES(event_type), source = VALUES(source),
    occurred_at = VALUES(occurred_at), received_at = VALUES(received_at),
    stored_at = VALUES(stored_at), payload = VALUES(payload),
    payload_sha256 = VALUES(payload_sha256), projected_at = VALUES(projected_at)
"""


def mysql_text(expression: str) -> str:
    """SQL for PostgreSQL that writes text of any content as a MySQL literal: a hex string in
    utf8mb4, which needs no escaping, whatever MySQL's sql_mode."""
    return f"'_utf8mb4 X''' || encode(convert_to({expression}, 'UTF8'), 'hex') || ''''"


def mysql_quoted(expression: str) -> str:
    """The same for text that PostgreSQL wrote itself, without a quote or a backslash in it."""
    return f"'''' || {expression} || ''''"


def mysql_time(column: str) -> str:
    """The same for a time of `events`, in UTC as DATETIME(6) reads it (ISO: psycopg2 sets
    DateStyle so)."""
    return mysql_quoted(f"(events.{column} AT TIME ZONE 'UTC')::text")


# Each stored event as the row MySQL takes, projected_at being MySQL's clock at the upsert.
ROW_SQL = " || ', ' || ".join(
    [
        mysql_text("events.event_id"),
        mysql_text("event_type"),
        f"coalesce({mysql_text('source')}, 'NULL')",
        mysql_time("occurred_at"),
        mysql_time("received_at"),
        mysql_time("stored_at"),
        mysql_text("payload::text"),
        mysql_quoted("payload_sha256"),
        "'UTC_TIMESTAMP(6)'",
    ]
)
# With each row, whether MySQL refused the event before, so that taking it now clears that
# record.
STORED_ROWS = f"""
SELECT events.event_id, '(' || {ROW_SQL} || ')' AS row_sql,
       projection_refusals.event_id IS NOT NULL AS refused_before
FROM events LEFT JOIN projection_refusals USING (event_id)
WHERE events.event_id = ANY(%s)
"""

RECORD_REFUSAL = """
INSERT INTO projection_refusals (event_id, error_code, error_message, refused_at)
VALUES (%s, %s, %s, now())
ON CONFLICT (event_id) DO UPDATE SET error_code = excluded.error_code,
    error_message = excluded.error_message, refused_at = excluded.refused_at
"""
CLEAR_REFUSALS = "DELETE FROM projection_refusals WHERE event_id = ANY(%s)"

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
@app.task(name=PROJECT_TO_MYSQL, bind=True, acks_late=True, ignore_result=True, max_retries=None)
def project_to_mysql(self: Task, event_ids: list[str], maybe_projected: Sequence[str] = ()) -> None:
    """Upsert the stored events `event_ids` into MySQL, read from PostgreSQL, and those of
    `maybe_projected` that MySQL does not hold yet."""
    settings = self.app.settings
    assert settings.mysql_url, "projection is off when MYSQL_URL is unset"
    try:
        if maybe_projected:
            event_ids = [*event_ids, *missing_in_mysql(settings.mysql_url, maybe_projected)]
        projected = project(settings, event_ids)
    except DBAPIError as exc:
        if not is_transient(exc):
            raise
        if self.request.retries >= settings.projection_max_retries:
            logger.warning(
                "Projection retries ran out; the reconciler will project these events",
                extra={"event_ids": event_ids, "error": str(exc.orig or exc)},
            )
            return
        raise self.retry(exc=exc, countdown=backoff_seconds(self.request.retries)) from exc
    logger.info("Projected events", extra={"event_ids": event_ids, "projected": projected})


def project(settings: Settings, event_ids: Sequence[str]) -> int:
    """Upsert the stored events among `event_ids` into MySQL as PostgreSQL holds them, a chunk
    at a time; rows MySQL refuses for good are recorded, not retried. Safe to run twice.
    Returns how many rows MySQL took."""
    assert settings.mysql_url
    return sum(
        _project_chunk(settings, event_ids[start : start + PROJECT_CHUNK])
        for start in range(0, len(event_ids), PROJECT_CHUNK)
    )


def _project_chunk(settings: Settings, event_ids: Sequence[str]) -> int:
    """`project` for at most PROJECT_CHUNK events: one read from PostgreSQL, one upsert into
    MySQL."""
    assert settings.mysql_url  # for the type checker: `project` checked it
    rows = execute(settings.postgres_url, STORED_ROWS, (list(event_ids),))
    if not rows:
        return 0
    refused = upsert(settings.mysql_url, [(row.event_id, row.row_sql) for row in rows])
    if refused:
        logger.warning(
            "MySQL refused events for good; they are recorded in projection_refusals",
            extra={
                "event_ids": list(refused),
                "error_codes": sorted({code for code, _ in refused.values() if code}),
            },
        )
        execute(
            settings.postgres_url,
            RECORD_REFUSAL,
            [(event_id, code, message) for event_id, (code, message) in refused.items()],
        )
    taken_again = [
        row.event_id for row in rows if row.refused_before and row.event_id not in refused
    ]
    if taken_again:
        execute(settings.postgres_url, CLEAR_REFUSALS, (taken_again,))
    return len(rows) - len(refused)


def upsert(mysql_url: str, rows: list[tuple[str, str]]) -> dict[str, tuple[int | None, str]]:
    """Upsert `rows` (event_id, the row as SQL), in statements of at most STATEMENT_BYTES but
    for a row that is larger alone. Returns the rows MySQL refused for good (see `_upsert`)."""
    refused: dict[str, tuple[int | None, str]] = {}
    statement: list[tuple[str, str]] = []
    size = 0
    for row in rows:
        if statement and size + len(row[1]) > STATEMENT_BYTES:
            refused.update(_upsert(mysql_url, statement))
            statement, size = [], 0
        statement.append(row)
        size += len(row[1])  # hex and digits: characters are bytes
    if statement:
        refused.update(_upsert(mysql_url, statement))
    return refused


def _upsert(mysql_url: str, rows: list[tuple[str, str]]) -> dict[str, tuple[int | None, str]]:
    """Upsert `rows` in one statement; when MySQL refuses one for good, split them in halves
    until each refused row stands alone and the others are in. Returns the refused rows'
    event ids with MySQL's error code and message."""
    try:
        execute(mysql_url, UPSERT_PROJECTION.format(", ".join(sql for _, sql in rows)))
    except DBAPIError as exc:
        if not is_refusal(exc):
            raise
        if len(rows) == 1:
            return {rows[0][0]: mysql_error(exc)}
        middle = len(rows) // 2
        return {**_upsert(mysql_url, rows[:middle]), **_upsert(mysql_url, rows[middle:])}
    return {}


def missing_in_mysql(mysql_url: str, event_ids: Sequence[str]) -> list[str]:
    placeholders = ", ".join(["%s"] * len(event_ids))
    present = {
        row.event_id
        for row in execute(
            mysql_url,
            f"SELECT event_id FROM events_projection WHERE event_id IN ({placeholders})",
            tuple(event_ids),
        )
    }
    return [event_id for event_id in event_ids if event_id not in present]


@app.task(name=RECONCILE_PROJECTION, bind=True, acks_late=True, ignore_result=True)
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
    return project(settings, missing_in_mysql(settings.mysql_url, event_ids))


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
