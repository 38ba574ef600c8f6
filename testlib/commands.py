"""The `ingest` command run in this process, as the tests drive it."""

from __future__ import annotations

import os

from click.testing import CliRunner, Result

from ingest.config import Settings
from ingest_cli import main
from testlib.processes import service_env


def invoke(settings: Settings, *args: str, **env: str) -> Result:
    """Run `ingest ARGS` in this process, with the settings' environment and no .env file."""
    return CliRunner().invoke(
        main, ["--env-file", os.devnull, *args], env=service_env(settings, **env)
    )
