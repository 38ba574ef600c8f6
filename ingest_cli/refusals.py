"""`ingest refusals list|retry`: the stored events MySQL refused for good, and another try.

The projection sets such an event aside (table projection_refusals, with MySQL's error) so the
events around it go on. Once the cause is gone (MySQL's max_allowed_packet raised, say), a retry
projects them again; each one MySQL takes leaves the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import click

from ingest.config import Settings
from ingest_cli.context import CliContext, database_errors, pass_cli
from models.engines import execute

LIST_REFUSALS = """
SELECT event_id, error_code, error_message, refused_at FROM projection_refusals
ORDER BY refused_at, event_id LIMIT %s
"""
REFUSED_AMONG = "SELECT event_id FROM projection_refusals WHERE event_id = ANY(%s)"


@dataclass(frozen=True)
class Refusal:
    event_id: str
    error_code: int | None
    error_message: str
    refused_at: datetime

    def describe(self) -> str:
        code = self.error_code if self.error_code is not None else "-"
        return (
            f"{self.event_id}\n"
            f"  refused: MySQL error {code}: {self.error_message}\n"
            f"  at: {self.refused_at:%Y-%m-%d %H:%M:%S} UTC"
        )


def refusals(settings: Settings, limit: int | None = None) -> list[Refusal]:
    """The refused events, oldest refusal first."""
    return [Refusal(*row) for row in execute(settings.postgres_url, LIST_REFUSALS, (limit,))]


def retry_refusals(settings: Settings, event_ids: list[str]) -> tuple[list[str], list[str]]:
    """Project the refused events among `event_ids` (all of them when empty) again. Returns the
    ids MySQL took now and those it still refuses."""
    # Imported when needed: it loads Celery, which the other commands do without.
    from tasks.projection import project

    wanted = event_ids or [refusal.event_id for refusal in refusals(settings)]
    refused = [row.event_id for row in execute(settings.postgres_url, REFUSED_AMONG, (wanted,))]
    project(settings, refused)
    still = {row.event_id for row in execute(settings.postgres_url, REFUSED_AMONG, (refused,))}
    return [event_id for event_id in refused if event_id not in still], sorted(still)


@click.group("refusals")
def refusals_group() -> None:
    """Stored events MySQL refused for good: list them, or project them again.

    MySQL refuses a row for what it holds (a JSON document it cannot store, a row over its
    max_allowed_packet). The projection records it with MySQL's error and goes on with the
    other events; GET /v1/events/<id> answers projection "refused".
    """


@refusals_group.command("list")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@pass_cli
def list_command(cli: CliContext, limit: int) -> None:
    """Show each refused event with MySQL's error and when; the oldest first."""
    settings = cli.settings()
    with database_errors():
        found = refusals(settings, limit + 1)
    for number, refusal in enumerate(found[:limit], start=1):
        click.echo(f"{number}. {refusal.describe()}")
    more = " (or more)" if len(found) > limit else ""
    click.echo(f"MySQL refuses {min(len(found), limit)}{more} stored event(s).")


@refusals_group.command("retry")
@click.argument("event_ids", nargs=-1)
@pass_cli
def retry_command(cli: CliContext, event_ids: tuple[str, ...]) -> None:
    """Project the refused EVENT_IDS again (every refused event when none is named).

    An event MySQL takes now leaves the list; one it refuses again stays, with the new error.
    Exits with 1 while any of them is still refused.
    """
    settings = cli.settings()
    if not settings.mysql_url:
        raise click.ClickException("MYSQL_URL is unset: the projection is off, nothing to do")
    with database_errors():
        taken, still = retry_refusals(settings, list(event_ids))
    unknown = sorted(set(event_ids) - set(taken) - set(still))
    if unknown:
        click.echo(f"Not refused (nothing to retry): {', '.join(unknown)}", err=True)
    click.echo(f"MySQL took {len(taken)} event(s); {len(still)} still refused.")
    for event_id in still:
        click.echo(f"  still refused: {event_id}")
    if still:
        raise SystemExit(1)
