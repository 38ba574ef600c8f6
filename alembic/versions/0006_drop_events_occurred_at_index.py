"""drop events.ix_events_occurred_at: an index no query of ingest reads, kept up by every insert

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29

Reports ask MySQL's projection, which keeps its own indexes on occurred_at; in PostgreSQL, the
lookups by time are per event type (`ix_events_type_occurred_at`, which `ingest schemas infer`
reads). Maintaining the lone occurred_at index cost the persist path about 4 us of PostgreSQL
CPU per event. MySQL is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade(engine_name: str) -> None:
    globals()[f"upgrade_{engine_name}"]()


def downgrade(engine_name: str) -> None:
    globals()[f"downgrade_{engine_name}"]()


def upgrade_postgres() -> None:
    op.drop_index("ix_events_occurred_at", table_name="events")


def downgrade_postgres() -> None:
    op.create_index("ix_events_occurred_at", "events", ["occurred_at"], unique=False)


def upgrade_mysql() -> None:
    pass


def downgrade_mysql() -> None:
    pass
