"""MySQL, the read projection: the same event fields, keyed by event_id and upserted."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Index, String
from sqlalchemy.dialects.mysql import DATETIME
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# MySQL keeps no offset: every time here is UTC, with microseconds.
UtcDateTime = DateTime().with_variant(DATETIME(fsp=6), "mysql")


class ProjectionBase(DeclarativeBase):
    pass


class EventProjection(ProjectionBase):
    __tablename__ = "events_projection"
    __table_args__ = (
        Index("ix_events_projection_type_occurred_at", "event_type", "occurred_at"),
        Index("ix_events_projection_occurred_at", "occurred_at"),
        {
            "comment": "Read projection of PostgreSQL events, eventually complete.",
            "mysql_charset": "utf8mb4",
            "mysql_collate": "utf8mb4_bin",
        },
    )

    event_id: Mapped[str] = mapped_column(
        String(128), primary_key=True, comment="Client-chosen idempotency key."
    )
    event_type: Mapped[str] = mapped_column(String(128), comment="Kind of event.")
    source: Mapped[str | None] = mapped_column(String(128), comment="Sending system, if given.")
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="When it happened (UTC).")
    received_at: Mapped[datetime] = mapped_column(
        UtcDateTime, comment="When the API accepted it (UTC)."
    )
    stored_at: Mapped[datetime] = mapped_column(
        UtcDateTime, comment="When PostgreSQL stored it (UTC)."
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, comment="The event's JSON object.")
    payload_sha256: Mapped[str] = mapped_column(String(64), comment="SHA-256 of the payload.")
    projected_at: Mapped[datetime] = mapped_column(
        UtcDateTime, comment="When this row was last upserted (UTC)."
    )
