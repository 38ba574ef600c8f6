"""events and events_projection

Revision ID: 0001
Revises:
Create Date: 2026-11-27

"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(engine_name: str) -> None:
    globals()[f"upgrade_{engine_name}"]()


def downgrade(engine_name: str) -> None:
    globals()[f"downgrade_{engine_name}"]()


def upgrade_postgres() -> None:
    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger(),
            sa.Identity(always=True),
            nullable=False,
            comment="Surrogate key.",
        ),
        sa.Column(
            "event_id",
            sa.String(length=128),
            nullable=False,
            comment="Client-chosen idempotency key.",
        ),
        sa.Column(
            "event_type",
            sa.String(length=128),
            nullable=False,
            comment="Kind of event, set by the client.",
        ),
        sa.Column(
            "source",
            sa.String(length=128),
            nullable=True,
            comment="Optional name of the sending system.",
        ),
        sa.Column(
            "occurred_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the event happened, per the client (UTC).",
        ),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the API accepted the event (UTC).",
        ),
        sa.Column(
            "stored_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When the row was written.",
        ),
        sa.Column(
            "payload", postgresql.JSONB(), nullable=False, comment="The event's JSON object."
        ),
        sa.Column(
            "payload_sha256",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the canonical JSON of the payload.",
        ),
        sa.Column(
            "projected_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the MySQL projection last took the row; NULL = pending.",
        ),
        sa.Column(
            "projection_attempts",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="How many projection attempts touched the row.",
        ),
        sa.Column(
            "conflict_payload_sha256",
            sa.String(length=64),
            nullable=True,
            comment="SHA-256 of a later payload that reused this event_id; NULL = no conflict.",
        ),
        sa.Column(
            "conflict_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When a conflicting duplicate last arrived.",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
        comment="Every accepted event, stored exactly once (source of truth).",
    )
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"], unique=False)
    op.create_index(
        "ix_events_type_occurred_at", "events", ["event_type", "occurred_at"], unique=False
    )
    op.create_index(
        "ix_events_unprojected",
        "events",
        ["stored_at"],
        unique=False,
        postgresql_where=sa.text("projected_at IS NULL"),
    )


def downgrade_postgres() -> None:
    op.drop_index(
        "ix_events_unprojected",
        table_name="events",
        postgresql_where=sa.text("projected_at IS NULL"),
    )
    op.drop_index("ix_events_type_occurred_at", table_name="events")
    op.drop_index("ix_events_occurred_at", table_name="events")
    op.drop_table("events")


# The projection's indexes: CREATE INDEX has no IF NOT EXISTS in MySQL 8, so each is created
# only when missing (a run cut short may have left some).
PROJECTION_INDEXES = {
    "ix_events_projection_occurred_at": ["occurred_at"],
    "ix_events_projection_type_occurred_at": ["event_type", "occurred_at"],
}


def upgrade_mysql() -> None:
    # MySQL DDL is not transactional: every step is safe to re-run after a partial failure,
    # in statements that MariaDB and MySQL 8 both accept.
    op.create_table(
        "events_projection",
        sa.Column(
            "event_id",
            sa.String(length=128),
            nullable=False,
            comment="Client-chosen idempotency key.",
        ),
        sa.Column("event_type", sa.String(length=128), nullable=False, comment="Kind of event."),
        sa.Column(
            "source", sa.String(length=128), nullable=True, comment="Sending system, if given."
        ),
        sa.Column(
            "occurred_at", mysql.DATETIME(fsp=6), nullable=False, comment="When it happened (UTC)."
        ),
        sa.Column(
            "received_at",
            mysql.DATETIME(fsp=6),
            nullable=False,
            comment="When the API accepted it (UTC).",
        ),
        sa.Column(
            "stored_at",
            mysql.DATETIME(fsp=6),
            nullable=False,
            comment="When PostgreSQL stored it (UTC).",
        ),
        sa.Column("payload", sa.JSON(), nullable=False, comment="The event's JSON object."),
        sa.Column(
            "payload_sha256",
            sa.String(length=64),
            nullable=False,
            comment="SHA-256 of the payload.",
        ),
        sa.Column(
            "projected_at",
            mysql.DATETIME(fsp=6),
            nullable=False,
            comment="When this row was last upserted (UTC).",
        ),
        sa.PrimaryKeyConstraint("event_id"),
        comment="Read projection of PostgreSQL events, eventually complete.",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
        if_not_exists=True,
    )
    # Offline (--sql) there is no database to ask: the script is for an empty one.
    existing = (
        set()
        if op.get_context().as_sql
        else {index["name"] for index in sa.inspect(op.get_bind()).get_indexes("events_projection")}
    )
    for name, columns in PROJECTION_INDEXES.items():
        if name not in existing:
            op.create_index(name, "events_projection", columns, unique=False)


def downgrade_mysql() -> None:
    # Dropping the table drops its indexes; MySQL 8 has no DROP INDEX IF EXISTS.
    op.drop_table("events_projection", if_exists=True)
