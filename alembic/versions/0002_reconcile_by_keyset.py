"""reconcile by keyset: no per-row projection bookkeeping in PostgreSQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

The projection no longer marks each PostgreSQL row (an UPDATE and a dead tuple per event):
MySQL itself says what it holds, and the reconciler walks `events` once, in the order of the
transactions that inserted them, from a checkpoint. payload_sha256 becomes PostgreSQL's own:
the SHA-256 of the jsonb's text, computed in the INSERT.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INSERT_XID = sa.text("(pg_current_xact_id()::text)::bigint")
PAYLOAD_SHA256 = "encode(sha256(convert_to(payload::text, 'UTF8')), 'hex')"


def upgrade(engine_name: str) -> None:
    globals()[f"upgrade_{engine_name}"]()


def downgrade(engine_name: str) -> None:
    globals()[f"downgrade_{engine_name}"]()


def upgrade_postgres() -> None:
    # Rows stored before this revision get 0: the reconciler checks them first, once.
    op.add_column(
        "events",
        sa.Column(
            "insert_xid",
            sa.BigInteger(),
            server_default="0",
            nullable=False,
            comment="Id of the transaction that inserted the row: the reconciler's keyset.",
        ),
    )
    op.alter_column("events", "insert_xid", server_default=INSERT_XID)
    op.create_index("ix_events_insert_xid", "events", ["insert_xid", "id"], unique=False)
    op.drop_index(
        "ix_events_unprojected",
        table_name="events",
        postgresql_where=sa.text("projected_at IS NULL"),
    )
    op.drop_column("events", "projection_attempts")
    op.drop_column("events", "projected_at")
    op.execute(f"UPDATE events SET payload_sha256 = {PAYLOAD_SHA256}")
    op.alter_column(
        "events",
        "payload_sha256",
        existing_type=sa.String(length=64),
        existing_nullable=False,
        comment="SHA-256 of the payload's jsonb text: equal payloads, equal hashes.",
        existing_comment="SHA-256 of the canonical JSON of the payload.",
    )
    op.create_table(
        "projection_checkpoint",
        sa.Column("name", sa.String(length=32), nullable=False, comment="Which projection."),
        sa.Column(
            "insert_xid",
            sa.BigInteger(),
            nullable=False,
            comment="insert_xid of the last event checked.",
        ),
        sa.Column(
            "event_pk", sa.BigInteger(), nullable=False, comment="id of the last event checked."
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When it last moved.",
        ),
        sa.PrimaryKeyConstraint("name"),
        comment="The reconciler's position: every event before it is in MySQL.",
    )


def downgrade_postgres() -> None:
    # The hashes stay PostgreSQL's; the older version only compares them with new ones.
    op.alter_column(
        "events",
        "payload_sha256",
        existing_type=sa.String(length=64),
        existing_nullable=False,
        comment="SHA-256 of the canonical JSON of the payload.",
        existing_comment="SHA-256 of the payload's jsonb text: equal payloads, equal hashes.",
    )
    op.drop_table("projection_checkpoint")
    op.add_column(
        "events",
        sa.Column(
            "projected_at",
            sa.DateTime(timezone=True),
            nullable=True,
            comment="When the MySQL projection last took the row; NULL = pending.",
        ),
    )
    op.add_column(
        "events",
        sa.Column(
            "projection_attempts",
            sa.Integer(),
            server_default="0",
            nullable=False,
            comment="How many projection attempts touched the row.",
        ),
    )
    # Every row starts unprojected: the older reconciler upserts each into MySQL once more.
    op.create_index(
        "ix_events_unprojected",
        "events",
        ["stored_at"],
        unique=False,
        postgresql_where=sa.text("projected_at IS NULL"),
    )
    op.drop_index("ix_events_insert_xid", table_name="events")
    op.drop_column("events", "insert_xid")


def upgrade_mysql() -> None:
    pass


def downgrade_mysql() -> None:
    pass
