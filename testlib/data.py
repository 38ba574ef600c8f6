"""What the databases and the broker hold: counting rows, emptying tables and queues, reading
the dead letters, publishing a message as any producer could."""

from __future__ import annotations

from typing import Any

import amqp
from kombu import Connection
from sqlalchemy import text

from ingest.config import Settings
from ingest.contract import DEAD_QUEUE_DECLARATION, PERSIST_QUEUE, WORK_QUEUES, declare_topology
from ingest_cli.dead_letters import DeadLetter, peek
from models import engine_for


def scalar(url: str, sql: str, **params: Any) -> Any:
    with engine_for(url).connect() as connection:
        return connection.execute(text(sql), params).scalar()


def rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine_for(url).connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(sql), params)]


def stored_count(settings: Settings) -> int:
    return scalar(settings.postgres_url, "SELECT count(*) FROM events")


def projected_count(settings: Settings) -> int:
    assert settings.mysql_url
    return scalar(settings.mysql_url, "SELECT count(*) FROM events_projection")


def stored_ids(settings: Settings) -> set[str]:
    return {row["event_id"] for row in rows(settings.postgres_url, "SELECT event_id FROM events")}


def projected_ids(settings: Settings) -> set[str]:
    assert settings.mysql_url
    return {
        row["event_id"]
        for row in rows(settings.mysql_url, "SELECT event_id FROM events_projection")
    }


def reset(settings: Settings) -> None:
    """Empty both tables and every queue."""
    with engine_for(settings.postgres_url).begin() as connection:
        connection.execute(text("TRUNCATE events, projection_checkpoint, projection_refusals"))
    assert settings.mysql_url
    with engine_for(settings.mysql_url).begin() as connection:
        connection.execute(text("TRUNCATE events_projection"))
    with Connection(settings.broker_url) as connection:
        declare_topology(connection)
        channel = connection.default_channel
        for queue in (*WORK_QUEUES, DEAD_QUEUE_DECLARATION):
            queue.bind(channel).purge()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every message in ingest.dead, as `ingest dead-letters list` reads it, left in place."""
    with Connection(settings.broker_url) as connection:
        declare_topology(connection)
        return peek(connection, limit=1_000_000)[1]


def publish_raw(
    settings: Settings, body: bytes, routing_key: str = PERSIST_QUEUE, **properties: Any
) -> None:
    """A message as any producer could send it, confirmed by the broker."""
    with Connection(settings.broker_url) as connection:
        declare_topology(connection)
        channel = connection.channel()
        try:
            channel.basic_publish_confirm(
                amqp.Message(body, delivery_mode=2, **properties),
                exchange="ingest",
                routing_key=routing_key,
                mandatory=True,
            )
        finally:
            channel.close()
