"""What is known about one event: served by GET /v1/events/<id> and `ingest status`.

PostgreSQL says whether it is stored, and whether MySQL refused it for good; MySQL itself says
whether the projection holds it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ingest.config import Settings
from models import Event, engine_for
from models.postgres import ProjectionRefusal

logger = logging.getLogger(__name__)


def event_status(settings: Settings, event_id: str) -> dict[str, Any] | None:
    """The event's processing state, or None while it is not (yet) stored."""
    with Session(engine_for(settings.postgres_url)) as session:
        row = session.scalar(select(Event).where(Event.event_id == event_id))
    if row is None:
        return None
    projection, projected_at = _projection(settings, event_id)
    refusal = None
    if projection in ("pending", "unknown"):
        refusal = _refusal(settings, event_id)
        if refusal is not None:
            projection = "refused"
    return {
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": "projected" if projected_at else "stored",
        "received_at": _iso(row.received_at),
        "stored_at": _iso(row.stored_at),
        "projection": projection,
        "projected_at": _iso(projected_at),
        "refusal": refusal,
        "conflict": row.conflict_payload_sha256 is not None,
        "conflict_at": _iso(row.conflict_at),
        "schema_version": row.schema_version,
        "schema_violations": row.schema_violations,
    }


def _projection(settings: Settings, event_id: str) -> tuple[str, datetime | None]:
    """Whether MySQL holds the event: done (with when), pending, off or unknown."""
    if not settings.mysql_url:
        return "off", None
    try:
        with engine_for(settings.mysql_url).connect() as connection:
            projected_at = connection.scalar(
                text("SELECT projected_at FROM events_projection WHERE event_id = :event_id"),
                {"event_id": event_id},
            )
    except DBAPIError as exc:
        logger.warning("MySQL could not be read for an event's status: %s", exc.orig or exc)
        return "unknown", None
    if projected_at is None:
        return "pending", None
    return "done", projected_at.replace(tzinfo=UTC)  # MySQL keeps UTC without an offset


def _refusal(settings: Settings, event_id: str) -> dict[str, Any] | None:
    """Why MySQL refused the event for good, if it did (the record goes once MySQL takes it)."""
    with Session(engine_for(settings.postgres_url)) as session:
        refusal = session.get(ProjectionRefusal, event_id)
    if refusal is None:
        return None
    return {
        "error_code": refusal.error_code,
        "error_message": refusal.error_message,
        "refused_at": _iso(refusal.refused_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
