"""`ingest migrate`, `ingest reconcile` and `ingest status`."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import click
from alembic import command
from alembic.config import Config

from ingest.config import Settings
from ingest_cli.context import CliContext, database_errors, pass_cli
from models.status import event_status

# The checkout's alembic.ini: the package lives in ROOT/ingest_cli/.
ALEMBIC_INI = Path(__file__).resolve().parents[1] / "alembic.ini"

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def migrate(settings: Settings, configure_logging: bool = False) -> None:
    """`alembic upgrade head` on PostgreSQL, and on MySQL when MYSQL_URL is set; with
    `configure_logging`, alembic.ini's logging shows each step."""
    if not ALEMBIC_INI.is_file():
        raise click.ClickException(
            f"{ALEMBIC_INI} is missing: install ingest from its checkout (pip install -e .)"
        )
    config = Config(str(ALEMBIC_INI))
    config.attributes["settings"] = settings
    config.attributes["configure_logging"] = configure_logging
    with database_errors():
        command.upgrade(config, "head")


@click.command("migrate")
@pass_cli
def migrate_command(cli: CliContext) -> None:
    """Migrate both databases to the newest schema.

    Runs `alembic upgrade head` on PostgreSQL, and on MySQL when MYSQL_URL is set.
    Safe to run again: a database already at the newest revision is left as it is.
    """
    settings = cli.settings()
    migrate(settings, configure_logging=True)
    if settings.mysql_url:
        click.echo("PostgreSQL and MySQL are at the newest revision.")
    else:
        click.echo("PostgreSQL is at the newest revision; MYSQL_URL is unset, MySQL was skipped.")


class Duration(click.ParamType):
    """Seconds, or a number with a unit: 90s, 15m, 2h, 1d."""

    name = "duration"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        match = DURATION.match(str(value))
        if match is None:
            self.fail(f"must be seconds or a duration like 90s, 15m, 2h, 1d, not {value!r}")
        return timedelta(seconds=float(match[1]) * UNIT_SECONDS[match[2]])


@click.command("reconcile")
@click.option(
    "--since",
    "grace",
    type=Duration(),
    default=None,
    help="Project events stored longer ago than this: seconds or 90s, 15m, 2h, 1d "
    "[default: INGEST_RECONCILE_GRACE_SECONDS]. 0 projects every event MySQL lacks.",
)
@click.option(
    "--from-start",
    is_flag=True,
    help="Compare every stored event again, not only those after the checkpoint (after MySQL "
    "lost rows, say).",
)
@pass_cli
def reconcile_command(cli: CliContext, grace: timedelta | None, from_start: bool) -> None:
    """Project into MySQL what it still lacks, now.

    Every stored event older than the grace period and not in MySQL is projected. The walk
    goes on from where the last one stopped (its checkpoint), in chunks of
    INGEST_RECONCILE_CHUNK_SIZE: the same repair celery beat runs every
    INGEST_RECONCILE_INTERVAL_SECONDS. Events younger than the grace period are left alone,
    since their chained projection task is probably still on its way.
    """
    # Imported when needed: it loads Celery, which the other commands do without.
    from tasks.projection import reconcile

    settings = cli.settings()
    if not settings.mysql_url:
        raise click.ClickException("MYSQL_URL is unset: the projection is off, nothing to do")
    with database_errors():
        projected = reconcile(settings, grace, from_start=from_start)
    if projected is None:
        raise click.ClickException("Another reconciler is running; try again when it is done")
    click.echo(f"Projected {projected} event{'s' if projected != 1 else ''} into MySQL.")


@click.command("status")
@click.argument("event_id")
@pass_cli
def status_command(cli: CliContext, event_id: str) -> None:
    """Show what PostgreSQL and MySQL hold about an event.

    Prints the JSON that GET /v1/events/EVENT_ID answers.
    Exits with 1 while the event is not (yet) stored.
    """
    settings = cli.settings()
    with database_errors():
        status = event_status(settings, event_id)
    if status is None:
        click.echo(f"No event {event_id!r} is stored (yet).", err=True)
        raise SystemExit(1)
    click.echo(json.dumps(status, indent=2))
