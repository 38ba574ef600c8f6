"""segment rejects: messages of a Segment batch that were not valid, kept for an operator

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

A Segment batch holding an invalid message still answers 200 (every SDK drops the whole batch
on a 4xx, good messages too), so the invalid message is kept here with why; `ingest segment
rejects` lists them. MySQL is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(engine_name: str) -> None:
    globals()[f"upgrade_{engine_name}"]()


def downgrade(engine_name: str) -> None:
    globals()[f"downgrade_{engine_name}"]()


def upgrade_postgres() -> None:
    op.create_table(
        "segment_rejects",
        sa.Column(
            "id",
            sa.BigInteger(),
            sa.Identity(always=True),
            nullable=False,
            comment="Surrogate key.",
        ),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            nullable=False,
            comment="When the API received the batch (UTC).",
        ),
        sa.Column(
            "key_sha256",
            sa.String(length=64),
            nullable=True,
            comment="SHA-256 of the write key that sent it; NULL with auth off.",
        ),
        sa.Column(
            "library",
            sa.Text(),
            nullable=True,
            comment="context.library.name of the message, as sent.",
        ),
        sa.Column("message_id", sa.Text(), nullable=True, comment="messageId, as sent."),
        sa.Column(
            "reasons",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            comment="Each field with what is wrong.",
        ),
        sa.Column(
            "message",
            sa.Text(),
            nullable=False,
            comment="The message as it arrived, as compact JSON text.",
        ),
        sa.PrimaryKeyConstraint("id"),
        comment="Segment messages refused inside a batch answered 200, with why.",
    )
    op.create_index("ix_segment_rejects_received_at", "segment_rejects", ["received_at"])


def downgrade_postgres() -> None:
    op.drop_index("ix_segment_rejects_received_at", table_name="segment_rejects")
    op.drop_table("segment_rejects")


def upgrade_mysql() -> None:
    pass


def downgrade_mysql() -> None:
    pass
