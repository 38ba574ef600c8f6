"""The `ingest` command: run the service's processes, migrate, repair, inspect and send events.

Every command reads its settings from the environment over the values of `.env` in the current
directory (a variable already set is never overridden by the file).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ingest_cli.context import CliContext
from ingest_cli.dead_letters import dead_letters
from ingest_cli.maintenance import migrate_command, reconcile_command, status_command
from ingest_cli.refusals import refusals_group
from ingest_cli.roles import create_roles_command
from ingest_cli.schemas import schemas_group
from ingest_cli.segment import segment_group
from ingest_cli.send import send_command
from ingest_cli.services import (
    beat_command,
    flower_command,
    projector_command,
    serve_command,
    up_command,
    worker_command,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--env-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=".env",
    show_default=True,
    help="Read variables from this file; the environment wins over it. Missing = ignored.",
)
@click.version_option(package_name="ingest")
@click.pass_context
def main(ctx: click.Context, env_file: Path) -> None:
    """Run and operate ingest: HTTP -> RabbitMQ -> PostgreSQL -> MySQL.

    `ingest up` runs the whole service on this machine; the other commands run one part of it
    or help to repair and inspect it. `ingest COMMAND --help` tells more.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = CliContext.load(env_file)


for command in (
    up_command,
    serve_command,
    worker_command,
    projector_command,
    beat_command,
    flower_command,
    migrate_command,
    create_roles_command,
    reconcile_command,
    status_command,
    refusals_group,
    segment_group,
    schemas_group,
    dead_letters,
    send_command,
):
    main.add_command(command)
