"""`ingest segment rejects`: the Segment messages refused inside batches answered 200.

Every Segment SDK drops a whole batch on a 4xx, its good messages too, so /segment/v1/batch
accepts the valid messages, answers 200, and keeps each invalid one (table segment_rejects)
with why, when and a hash of the key that sent it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

from ingest.config import Settings
from ingest_cli.context import CliContext, database_errors, pass_cli
from models.engines import execute

LIST_REJECTS = """
SELECT received_at, key_sha256, library, message_id, reasons, message FROM segment_rejects
ORDER BY received_at DESC, id DESC LIMIT %s
"""
# Characters of the message shown per reject; the table holds it whole.
SHOWN_MESSAGE_CHARS = 200


@dataclass(frozen=True)
class SegmentReject:
    received_at: datetime
    key_sha256: str | None
    library: str | None
    message_id: str | None
    reasons: dict[str, Any]
    message: str

    def describe(self, key_names: dict[str, str]) -> str:
        why = "; ".join(
            f"{field}: {' '.join(problems)}" for field, problems in self.reasons.items()
        )
        key = key_names.get(self.key_sha256 or "", self.key_sha256 or "none (auth off)")
        shown = self.message[:SHOWN_MESSAGE_CHARS]
        more = f"... ({len(self.message)} characters)" if len(self.message) > len(shown) else ""
        return (
            f"messageId {self.message_id or '-'} from {self.library or 'an unnamed library'}\n"
            f"  why: {why}\n"
            f"  at: {self.received_at:%Y-%m-%d %H:%M:%S} UTC, key: {key}\n"
            f"  message: {shown}{more}"
        )


def key_sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def segment_rejects(settings: Settings, limit: int) -> list[SegmentReject]:
    """The refused messages, the newest first."""
    return [SegmentReject(*row) for row in execute(settings.postgres_url, LIST_REJECTS, (limit,))]


@click.group("segment")
def segment_group() -> None:
    """The Segment-compatible API (/segment/v1/...): what it refused."""


@segment_group.command("rejects")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@pass_cli
def rejects_command(cli: CliContext, limit: int) -> None:
    """Show each Segment message refused inside a batch answered 200, the newest first.

    The key is named by its place in INGEST_API_KEYS (never shown), or by its SHA-256 when it
    is no longer listed.
    """
    settings = cli.settings()
    key_names = {
        key_sha256(key): f"INGEST_API_KEYS #{number}"
        for number, key in enumerate(settings.api_keys, start=1)
    }
    with database_errors():
        found = segment_rejects(settings, limit + 1)
    for number, reject in enumerate(found[:limit], start=1):
        click.echo(f"{number}. {reject.describe(key_names)}")
    more = " (or more)" if len(found) > limit else ""
    click.echo(f"{min(len(found), limit)}{more} Segment message(s) refused.")
