"""What every command shares: the environment (over `.env`) and the Settings read from it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import click
from dotenv import dotenv_values
from sqlalchemy.exc import OperationalError

from ingest.config import ConfigError, Settings


@dataclass(frozen=True)
class CliContext:
    environ: dict[str, str]

    @classmethod
    def load(cls, env_file: Path) -> CliContext:
        """The process environment over the values in `env_file`, which never override it."""
        from_file = dotenv_values(env_file) if env_file.is_file() else {}
        values = {name: value for name, value in from_file.items() if value is not None}
        return cls({**values, **os.environ})

    def settings(self) -> Settings:
        try:
            return Settings.from_env(self.environ)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None


pass_cli = click.make_pass_decorator(CliContext)


@contextmanager
def database_errors() -> Iterator[None]:
    """A database that cannot be reached is a one-line error, not a traceback."""
    try:
        yield
    except OperationalError as exc:
        raise click.ClickException(f"database error: {exc.orig or exc}".strip()) from None
