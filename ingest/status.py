"""What PostgreSQL holds about one event: served by GET /v1/events/<id> and `ingest status`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Event, engine_for


def event_status(postgres_url: str, event_id: str) -> dict[str, Any] | None:
    """The event's processing state, or None while it is not (yet) stored."""
    with Session(engine_for(postgres_url)) as session:
        row = session.scalar(select(Event).where(Event.event_id == event_id))
    if row is None:
        return None
    return {
        "event_id": row.event_id,
        "event_type": row.event_type,
        "status": "projected" if row.projected_at else "stored",
        "received_at": _iso(row.received_at),
        "stored_at": _iso(row.stored_at),
        "projected_at": _iso(row.projected_at),
        "projection_attempts": row.projection_attempts,
        "conflict": row.conflict_payload_sha256 is not None,
        "conflict_at": _iso(row.conflict_at),
    }


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None
