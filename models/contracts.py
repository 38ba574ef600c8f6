"""The schema registry in PostgreSQL: numbered JSON Schema versions per event type, and how each
type is enforced. A version is never changed, only added or retired (triggers of migration 0005
refuse anything else), and every change bumps one generation number that the API polls."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.postgres import Base

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
