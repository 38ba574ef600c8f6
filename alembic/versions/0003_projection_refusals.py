"""projection refusals: stored events MySQL refused for good, with why

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

A row MySQL refuses for what it holds (a JSON document it cannot store, a row over
max_allowed_packet) is set aside here instead of holding back the rows around it; the status
lookup, the metrics and `ingest refusals` read it. MySQL itself is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(engine_name: str) -> None:
    globals()[f"upgrade_{engine_name}"]()


def downgrade(engine_name: str) -> None:
    globals()[f"downgrade_{engine_name}"]()


def upgrade_postgres() -> None:
    op.create_table(
        "projection_refusals",
        sa.Column(
            "event_id",
            sa.String(length=128),
            nullable=False,
            comment="The refused event (events.event_id).",
        ),
        sa.Column(
            "error_code",
            sa.Integer(),
            nullable=True,
            comment="MySQL's error code, e.g. 4025 (json_valid) or 1153 (packet too large).",
        ),
        sa.Column("error_message", sa.Text(), nullable=False, comment="MySQL's error message."),
        sa.Column(
            "refused_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
            comment="When MySQL last refused it.",
        ),
        sa.PrimaryKeyConstraint("event_id"),
        comment="Stored events MySQL refused, with why; none = none refused.",
    )


def downgrade_postgres() -> None:
    op.drop_table("projection_refusals")


def upgrade_mysql() -> None:
    pass


def downgrade_mysql() -> None:
    pass
