"""`ingest schemas`: the data contracts, one JSON Schema (draft 2020-12) per event type.

add, retire and mode change the registry in PostgreSQL; every API process picks the change up
within INGEST_SCHEMA_RELOAD_SECONDS. check tries sample events against a schema without sending
them; infer drafts a schema from events already stored.
"""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import IO, Any

import click

from ingest.canonical import loads_json
from ingest.event_schemas import CompiledSchema, SchemaRefused, compile_schema
from ingest.schema_infer import infer_schema
from ingest_cli.context import CliContext, database_errors, pass_cli
from models.postgres import MODES
from models.schema_registry import (
    RegistryError,
    add_version,
    list_types,
    retire_version,
    set_mode,
    stored_payloads,
    type_schemas,
)

MODE = click.Choice(MODES)
BY_HELP = "Who makes the change, as the registry records it (default: user@host)."


def default_actor() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()} (ingest schemas)"


def read_json(path: str) -> Any:
    """The JSON document in the file, or on standard input for '-'."""
    try:
        with click.open_file(path, encoding="utf-8") as file:
            return loads_json(file.read())
    except ValueError as exc:
        raise click.ClickException(f"{path} is not JSON: {exc}") from None
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror}") from None


@click.group("schemas")
def schemas_group() -> None:
    """Data contracts: a JSON Schema per event type, and how strictly it is enforced."""


@schemas_group.command("add")
@click.argument("event_type")
@click.argument("file")
@click.option("--mode", type=MODE, help="Set the type's mode too (a new type starts in warn).")
@click.option("--by", default=None, help=BY_HELP)
@pass_cli
def add_command(
    cli: CliContext, event_type: str, file: str, mode: str | None, by: str | None
) -> None:
    """Add the schema in FILE ('-': standard input) as the next version of EVENT_TYPE's schema.

    The same schema as the newest active version adds nothing. A schema is refused, with why,
    when it is not draft 2020-12 or breaks one of ingest's bounds (docs/data-contracts.md)."""
    document = read_json(file)
    settings = cli.settings()
    try:
        with database_errors():
            version, added = add_version(
                settings.postgres_url, event_type, document, by or default_actor(), mode
            )
    except SchemaRefused as exc:
        raise click.ClickException(f"Schema refused: {exc}") from None
    found = type_schemas(settings.postgres_url, event_type)
    mode_now = found.mode if found else mode
    what = "added" if added else "is already the newest active version"
    click.echo(f"{event_type} version {version.version} {what} (mode {mode_now}).")


@schemas_group.command("list")
@pass_cli
def list_command(cli: CliContext) -> None:
    """Show every event type with a schema: its mode, versions and the active one."""
    with database_errors():
        found = list_types(cli.settings().postgres_url)
    for item in found:
        active = item.newest_active if item.newest_active is not None else "none (all retired)"
        click.echo(
            f"{item.event_type}  mode {item.mode}, {item.versions} version(s), newest active "
            f"{active}, changed {item.changed_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    click.echo(f"{len(found)} event type(s) with a schema.")


@schemas_group.command("show")
@click.argument("event_type")
@click.argument("version", type=int, required=False)
@pass_cli
def show_command(cli: CliContext, event_type: str, version: int | None) -> None:
    """Print EVENT_TYPE's mode and versions as JSON, or VERSION's schema alone."""
    with database_errors():
        found = type_schemas(cli.settings().postgres_url, event_type)
    if found is None:
        raise click.ClickException(f"No schema is registered for {event_type!r}.")
    if version is None:
        click.echo(json.dumps(found.as_dict(), indent=2))
        return
    versions = {item.version: item for item in found.versions}
    if version not in versions:
        raise click.ClickException(f"{event_type!r} has no schema version {version}.")
    click.echo(json.dumps(versions[version].schema, indent=2))


@schemas_group.command("retire")
@click.argument("event_type")
@click.argument("version", type=int)
@click.option("--by", default=None, help=BY_HELP)
@pass_cli
def retire_command(cli: CliContext, event_type: str, version: int, by: str | None) -> None:
    """Retire VERSION: it checks no event from now on (an event that pins it breaks its
    contract), and stays readable; the newest active version left checks the others."""
    try:
        with database_errors():
            retired = retire_version(
                cli.settings().postgres_url, event_type, version, by or default_actor()
            )
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    assert retired.retired_at is not None
    click.echo(
        f"{event_type} version {version} retired at {retired.retired_at:%Y-%m-%d %H:%M:%S} UTC "
        f"by {retired.retired_by}."
    )


@schemas_group.command("mode")
@click.argument("event_type")
@click.argument("mode", type=MODE)
@click.option("--by", default=None, help=BY_HELP)
@pass_cli
def mode_command(cli: CliContext, event_type: str, mode: str, by: str | None) -> None:
    """Set how EVENT_TYPE is enforced: off (not checked), warn (accepted, violations recorded
    with the event) or enforce (refused with 422)."""
    try:
        with database_errors():
            set_mode(cli.settings().postgres_url, event_type, mode, by or default_actor())
    except RegistryError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{event_type} is now in mode {mode}.")


@schemas_group.command("check")
@click.argument("event_type")
@click.argument("file")
@click.option("--version", type=int, help="Check against this version, not the newest active.")
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Check against this schema file instead of the registry (no database needed).",
)
@pass_cli
def check_command(
    cli: CliContext, event_type: str, file: str, version: int | None, schema_file: Path | None
) -> None:
    """Check the events in FILE (JSON lines: events, or bare payloads; '-': standard input)
    against EVENT_TYPE's schema, sending nothing. Exits with 1 when any line fails."""
    schema, named = (
        (_compiled(read_json(str(schema_file))), str(schema_file))
        if schema_file
        else _registered(cli, event_type, version)
    )
    with click.open_file(file, encoding="utf-8") as lines:
        checked, failed = _check_lines(schema, lines)
    click.echo(f"{checked - failed} of {checked} event(s) pass {named}.")
    if failed:
        raise SystemExit(1)


@schemas_group.command("infer")
@click.argument("event_type")
@click.option("--sample", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Default: stdout.")
@pass_cli
def infer_command(cli: CliContext, event_type: str, sample: int, output: Path | None) -> None:
    """Draft a schema from the payloads of EVENT_TYPE's newest stored events.

    Every one of them passes the draft: tighten it (enums, patterns, additionalProperties), then
    `ingest schemas add`."""
    with database_errors():
        payloads = stored_payloads(cli.settings().postgres_url, event_type, sample)
    if not payloads:
        raise click.ClickException(f"No event of type {event_type!r} is stored.")
    draft = json.dumps(infer_schema(payloads, title=event_type), indent=2) + "\n"
    if output is None:
        click.echo(draft, nl=False)
    else:
        output.write_text(draft, encoding="utf-8")
    click.echo(f"Drafted from {len(payloads)} stored event(s) of {event_type}.", err=True)


def _compiled(document: Any) -> CompiledSchema:
    try:
        return compile_schema(document)
    except SchemaRefused as exc:
        raise click.ClickException(f"Schema refused: {exc}") from None


def _registered(
    cli: CliContext, event_type: str, version: int | None
) -> tuple[CompiledSchema, str]:
    with database_errors():
        found = type_schemas(cli.settings().postgres_url, event_type)
    if found is None:
        raise click.ClickException(f"No schema is registered for {event_type!r}.")
    chosen = version if version is not None else found.newest_active
    versions = {item.version: item for item in found.versions}
    if chosen not in versions:
        raise click.ClickException(f"{event_type!r} has no schema version {chosen or 'active'}.")
    state = "retired" if versions[chosen].retired_at else "active"
    return _compiled(versions[chosen].schema), f"version {chosen} of {event_type} ({state})"


def _check_lines(schema: CompiledSchema, lines: IO[str]) -> tuple[int, int]:
    """Check each line; print what each failing one breaks. Returns (checked, failed)."""
    checked = failed = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        checked += 1
        try:
            document = loads_json(line)
        except ValueError as exc:
            failed += 1
            click.echo(f"line {number}: not JSON: {exc}")
            continue
        is_event = isinstance(document, dict) and "payload" in document
        payload = document["payload"] if is_event else document
        violations = schema.violations(payload, at="/payload" if is_event else "")
        if violations:
            failed += 1
            for violation in violations:
                click.echo(
                    f"line {number}: {violation.pointer or '/'}: {violation.rule}: "
                    f"{violation.message}"
                )
    return checked, failed
