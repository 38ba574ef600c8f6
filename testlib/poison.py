"""Events MySQL refuses for good, as an older API let them through, for the refusal tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ingest.canonical import compact_json
from ingest.config import Settings
from ingest.contract import PERSIST_EVENTS, event_ids_of
from ingest_api.schemas import MAX_PAYLOAD_DEPTH
from tasks.celery import create_celery
from testlib.data import rows


def too_deep_for_mariadb() -> dict[str, Any]:
    """A payload one level deeper than the API takes: PostgreSQL stores it, MariaDB's JSON
    check refuses it (error 4025)."""
    payload: dict[str, Any] = {}
    for _ in range(MAX_PAYLOAD_DEPTH):
        payload = {"level": payload}
    return payload


def persist_as_sent(settings: Settings, events: list[dict[str, Any]]) -> None:
    """One persist_events message carrying `events` unchecked, as the API publishes events it
    accepted (before the API refused payloads MySQL cannot hold, it accepted such ones)."""
    received_at = datetime.now(UTC).isoformat()
    celery = create_celery(settings)
    try:
        celery.send_task(
            PERSIST_EVENTS,
            args=[
                event_ids_of(events),
                compact_json([{**event, "received_at": received_at} for event in events]),
            ],
        )
    finally:
        celery.close()


def refusals(settings: Settings) -> dict[str, int | None]:
    """Each refused event's MySQL error code, from projection_refusals."""
    found = rows(settings.postgres_url, "SELECT event_id, error_code FROM projection_refusals")
    return {row["event_id"]: row["error_code"] for row in found}
