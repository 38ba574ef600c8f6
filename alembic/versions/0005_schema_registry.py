"""schema registry: JSON Schema versions per event type, their enforcement, and each event's check

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02

event_schemas holds numbered versions of a JSON Schema per event type; a trigger refuses any
change of a version but its retirement, and any delete. event_contracts holds each type's mode
(off, warn, enforce). Every change of either bumps schema_registry_generation, which each API
process polls to reload. events gains the version an event was checked against and, in warn
mode, what it broke. MySQL is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VERSIONS_ARE_IMMUTABLE = """
CREATE FUNCTION event_schemas_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'event_schemas: a version is never deleted, only retired'
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF (NEW.event_type, NEW.version, NEW.schema, NEW.schema_sha256, NEW.created_at, NEW.created_by)
           IS DISTINCT FROM
       (OLD.event_type, OLD.version, OLD.schema, OLD.schema_sha256, OLD.created_at, OLD.created_by)
       OR (OLD.retired_at IS NOT NULL AND (NEW.retired_at, NEW.retired_by)
                                          IS DISTINCT FROM (OLD.retired_at, OLD.retired_by))
    THEN
        RAISE EXCEPTION 'event_schemas: version % of % is never changed, only retired once',
            OLD.version, OLD.event_type
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$
"""
BUMP_GENERATION = """
CREATE FUNCTION schema_registry_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE schema_registry_generation SET generation = generation + 1, changed_at = now();
    RETURN NULL;
END $$
"""


def upgrade(engine_name: str) -> None:
    globals()[f"upgrade_{engine_name}"]()


def downgrade(engine_name: str) -> None:
    globals()[f"downgrade_{engine_name}"]()


def upgrade_postgres() -> None:
    op.create_table(
        "event_schemas",
        sa.Column(
            "event_type",
            sa.String(length=128),
            nullable=False,
            comment="The event type whose payloads it describes.",
        ),
        sa.Column(
            "version",
            sa.Integer(),
            nullable=False,
            comment="1, 2, ... per event type, in the order added.",
        ),
        sa.Column(
            "schema",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="The JSON Schema (draft 2020-12).",
        ),
        sa.Column(
            "schema_sha256",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the schema as compact JSON with sorted keys.",
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When it was added.",
        ),
        sa.Column(
            "created_by",
            sa.Text(),
            nullable=False,
            comment="Who added it: an admin key's place in INGEST_ADMIN_KEYS, or a CLI user.",
        ),
        sa.Column(
            "retired_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When it was retired; NULL while active.",
        ),
        sa.Column("retired_by", sa.Text(), nullable=True, comment="Who retired it."),
        sa.CheckConstraint("version >= 1", name="ck_event_schemas_version_positive"),
        sa.PrimaryKeyConstraint("event_type", "version"),
        comment="JSON Schema versions per event type; never changed, only added or retired.",
    )
    op.create_table(
        "event_contracts",
        sa.Column("event_type", sa.String(length=128), nullable=False, comment="Event type."),
        sa.Column(
            "mode",
            sa.String(length=8),
            nullable=False,
            comment="off: not checked; warn: accepted, violations recorded; enforce: 422.",
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the mode was set.",
        ),
        sa.Column("updated_by", sa.Text(), nullable=False, comment="Who set it."),
        sa.CheckConstraint(
            "mode IN ('off', 'warn', 'enforce')", name="ck_event_contracts_mode_known"
        ),
        sa.PrimaryKeyConstraint("event_type"),
        comment="How each event type with a schema is enforced.",
    )
    op.create_table(
        "schema_registry_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False, comment="Always 1."),
        sa.Column(
            "generation",
            sa.BigInteger(),
            nullable=False,
            comment="Changes so far; the API reloads the registry when it moves.",
        ),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When it last moved.",
        ),
        sa.CheckConstraint("id = 1", name="ck_schema_registry_generation_one_row"),
        sa.PrimaryKeyConstraint("id"),
        comment="One row, bumped by every change of event_schemas or event_contracts.",
    )
    op.execute("INSERT INTO schema_registry_generation (id, generation) VALUES (1, 0)")
    op.execute(VERSIONS_ARE_IMMUTABLE)
    op.execute(
        "CREATE TRIGGER event_schemas_immutable BEFORE UPDATE OR DELETE ON event_schemas "
        "FOR EACH ROW EXECUTE FUNCTION event_schemas_immutable()"
    )
    op.execute(BUMP_GENERATION)
    for table in ("event_schemas", "event_contracts"):
        op.execute(
            f"CREATE TRIGGER {table}_bump AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
            f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION schema_registry_bump()"
        )
    op.add_column(
        "events",
        sa.Column(
            "schema_version",
            sa.Integer(),
            nullable=True,
            comment="The version of its type's schema the event was checked against.",
        ),
    )
    op.add_column(
        "events",
        sa.Column(
            "schema_violations",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=True,
            comment="What the event broke of that schema, accepted in warn mode; NULL = nothing.",
        ),
    )


def downgrade_postgres() -> None:
    op.drop_column("events", "schema_violations")
    op.drop_column("events", "schema_version")
    op.drop_table("schema_registry_generation")
    op.drop_table("event_contracts")
    op.drop_table("event_schemas")
    op.execute("DROP FUNCTION schema_registry_bump()")
    op.execute("DROP FUNCTION event_schemas_immutable()")


def upgrade_mysql() -> None:
    pass


def downgrade_mysql() -> None:
    pass
