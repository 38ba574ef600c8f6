"""PostgreSQL, the source of truth: one row per event_id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Identity,
    Index,
    Integer,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# A row's transaction id, 64 bits: every transaction older than a snapshot's xmin has ended,
# so rows below it can no longer appear behind the reconciler's checkpoint.
INSERT_XID = text("(pg_current_xact_id()::text)::bigint")


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_type_occurred_at", "event_type", "occurred_at"),
        Index("ix_events_insert_xid", "insert_xid", "id"),
        {"comment": "Every accepted event, stored exactly once (source of truth)."},
    )

    id: Mapped[int] = mapped_column(
        BigInteger, Identity(always=True), primary_key=True, comment="Surrogate key."
    )
    event_id: Mapped[str] = mapped_column(
        String(128), unique=True, comment="Client-chosen idempotency key."
    )
    event_type: Mapped[str] = mapped_column(
        String(128), comment="Kind of event, set by the client."
    )
    source: Mapped[str | None] = mapped_column(
        String(128), comment="Optional name of the sending system."
    )
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), comment="When the event happened, per the client (UTC)."
    )
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), comment="When the API accepted the event (UTC)."
    )
    stored_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True),
        server_default=func.now(),
        comment="When the row was written.",
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, comment="The event's JSON object.")
    payload_sha256: Mapped[str] = mapped_column(
        String(64), comment="SHA-256 of the payload's jsonb text: equal payloads, equal hashes."
    )
    insert_xid: Mapped[int] = mapped_column(
        BigInteger,
        server_default=INSERT_XID,
        comment="Id of the transaction that inserted the row: the reconciler's keyset.",
    )
    conflict_payload_sha256: Mapped[str | None] = mapped_column(
        String(64),
        comment="SHA-256 of a later payload that reused this event_id; NULL = no conflict.",
    )
    conflict_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="When a conflicting duplicate last arrived."
    )
    schema_version: Mapped[int | None] = mapped_column(
        Integer, comment="The version of its type's schema the event was checked against."
    )
    schema_violations: Mapped[list[dict[str, str]] | None] = mapped_column(
        JSONB, comment="What the event broke of that schema, accepted in warn mode; NULL = nothing."
    )


class ProjectionCheckpoint(Base):
    """How far the reconciler has compared PostgreSQL with MySQL, as a keyset position."""

    __tablename__ = "projection_checkpoint"
    __table_args__ = ({"comment": "The reconciler's position: every event before it is in MySQL."},)

    name: Mapped[str] = mapped_column(String(32), primary_key=True, comment="Which projection.")
    insert_xid: Mapped[int] = mapped_column(
        BigInteger, comment="insert_xid of the last event checked."
    )
    event_pk: Mapped[int] = mapped_column(BigInteger, comment="id of the last event checked.")
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), comment="When it last moved."
    )


class ProjectionRefusal(Base):
    """A stored event MySQL refused for good: kept out of the way of the others, until a retry
    gets it in (`ingest refusals retry`)."""

    __tablename__ = "projection_refusals"
    __table_args__ = ({"comment": "Stored events MySQL refused, with why; none = none refused."},)

    event_id: Mapped[str] = mapped_column(
        String(128), primary_key=True, comment="The refused event (events.event_id)."
    )
    error_code: Mapped[int | None] = mapped_column(
        Integer, comment="MySQL's error code, e.g. 4025 (json_valid) or 1153 (packet too large)."
    )
    error_message: Mapped[str] = mapped_column(Text, comment="MySQL's error message.")
    refused_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), comment="When MySQL last refused it."
    )


class SegmentReject(Base):
    """A message of a Segment batch that was not valid: the batch still answers 200 (the SDKs
    drop a whole batch on a 4xx), so the message is kept here for an operator (`ingest segment
    rejects`)."""

    __tablename__ = "segment_rejects"
    __table_args__ = (
        Index("ix_segment_rejects_received_at", "received_at"),
        {"comment": "Segment messages refused inside a batch answered 200, with why."},
    )

    id: Mapped[int] = mapped_column(
        BigInteger, Identity(always=True), primary_key=True, comment="Surrogate key."
    )
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), comment="When the API received the batch (UTC)."
    )
    key_sha256: Mapped[str | None] = mapped_column(
        String(64), comment="SHA-256 of the write key that sent it; NULL with auth off."
    )
    library: Mapped[str | None] = mapped_column(
        Text, comment="context.library.name of the message, as sent."
    )
    message_id: Mapped[str | None] = mapped_column(Text, comment="messageId, as sent.")
    reasons: Mapped[dict[str, Any]] = mapped_column(JSONB, comment="Each field with what is wrong.")
    message: Mapped[str] = mapped_column(
        Text, comment="The message as it arrived, as compact JSON text."
    )


MODES = ("off", "warn", "enforce")


class EventSchemaVersion(Base):
    __tablename__ = "event_schemas"
    __table_args__ = (
        CheckConstraint("version >= 1", name="ck_event_schemas_version_positive"),
        {"comment": "JSON Schema versions per event type; never changed, only added or retired."},
    )

    event_type: Mapped[str] = mapped_column(
        String(128), primary_key=True, comment="The event type whose payloads it describes."
    )
    version: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="1, 2, ... per event type, in the order added."
    )
    schema: Mapped[Any] = mapped_column(JSONB, comment="The JSON Schema (draft 2020-12).")
    schema_sha256: Mapped[str] = mapped_column(
        String(64), comment="SHA-256 of the schema as compact JSON with sorted keys."
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), comment="When it was added."
    )
    created_by: Mapped[str] = mapped_column(
        Text, comment="Who added it: an admin key's place in INGEST_ADMIN_KEYS, or a CLI user."
    )
    retired_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), comment="When it was retired; NULL while active."
    )
    retired_by: Mapped[str | None] = mapped_column(Text, comment="Who retired it.")


class EventContract(Base):
    __tablename__ = "event_contracts"
    __table_args__ = (
        CheckConstraint("mode IN ('off', 'warn', 'enforce')", name="ck_event_contracts_mode_known"),
        {"comment": "How each event type with a schema is enforced."},
    )

    event_type: Mapped[str] = mapped_column(String(128), primary_key=True, comment="Event type.")
    mode: Mapped[str] = mapped_column(
        String(8), comment="off: not checked; warn: accepted, violations recorded; enforce: 422."
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), comment="When the mode was set."
    )
    updated_by: Mapped[str] = mapped_column(Text, comment="Who set it.")


class SchemaRegistryGeneration(Base):
    __tablename__ = "schema_registry_generation"
    __table_args__ = (
        CheckConstraint("id = 1", name="ck_schema_registry_generation_one_row"),
        {"comment": "One row, bumped by every change of event_schemas or event_contracts."},
    )

    id: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="Always 1."
    )
    generation: Mapped[int] = mapped_column(
        BigInteger, comment="Changes so far; the API reloads the registry when it moves."
    )
    changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), comment="When it last moved."
    )
