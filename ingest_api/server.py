"""The API's HTTP server: `python -m ingest_api.server [granian options]`.

granian (a Rust HTTP server) runs the Flask app through ingest_api.rsgi, with ingest's defaults;
granian options given on the command line or as GRANIAN_* variables override them. Before any
worker starts it refuses to serve without the API's settings, gives the workers one empty
directory for their Prometheus counters (PROMETHEUS_MULTIPROC_DIR, a fresh temporary one unless
set), and has granian log JSON lines like the rest of ingest.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from granian.cli import cli as granian_cli

from ingest.config import ConfigError, Settings
from ingest.logs import configure_logging, logging_dict
from ingest_api.rsgi import BODY_TIMEOUT_VARIABLE, THREADS_VARIABLE

logger = logging.getLogger("ingest_api.server")  # not "__main__" under `python -m`

TARGET = "ingest_api.rsgi:create_rsgi_app"
# Threads per worker that run the app; each waits a few ms on a broker confirm per request.
THREADS = 16
DEFAULTS: dict[str, Any] = {
    "interface": "rsgi",
    "factory": True,
    "workers": 2,
    "http": "1",
    "websockets": False,
    # The whole request head must arrive within this; the body gets as long again (ingest_api.rsgi).
    "http1_header_read_timeout": 30_000,
    # Requests in progress per worker, slow clients included; more wait in the listen backlog.
    "backpressure": 256,
    # A worker that dies is replaced; one that dies again within 5.5 s stops the server.
    "respawn_failed_workers": True,
    "respawn_interval": 1.0,
}


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    try:
        Settings.from_env().check_api()
    except ConfigError as exc:
        logger.error("The API refuses to start: %s", exc)
        sys.exit(1)
    with _metrics_directory(), _log_config_file() as log_config:
        try:
            threads, context = parse(sys.argv[1:] if argv is None else argv, log_config)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.exceptions.Exit as exc:  # --help, --version
            sys.exit(exc.exit_code)
        # The workers read these when they build the app (ingest_api.rsgi.create_rsgi_app).
        os.environ[THREADS_VARIABLE] = str(threads)
        os.environ[BODY_TIMEOUT_VARIABLE] = str(context.params["http1_header_read_timeout"] / 1000)
        with context:
            granian_cli.invoke(context)


def parse(argv: list[str], log_config: Path | None = None) -> tuple[int, click.Context]:
    """The app threads per worker and granian's command for `argv`; a bad option raises."""
    # --help goes on to granian, which lists its own options.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--threads", type=int, default=THREADS, help="app threads per worker")
    own, granian_args = parser.parse_known_args(argv)
    if own.threads < 1:
        raise click.BadParameter(f"--threads must be 1 or more, not {own.threads}")
    defaults = {**DEFAULTS, **({"log_config": log_config} if log_config else {})}
    context = granian_cli.make_context("granian", [*granian_args, TARGET], default_map=defaults)
    return own.threads, context


@contextmanager
def _metrics_directory() -> Iterator[None]:
    """An empty directory for the workers' counters: counts of an earlier run must not add up.

    A worker that dies leaves its counter files, so its counts stay in the sum; the API has no
    live gauges, which are all that prometheus_client's mark_process_dead would remove.
    """
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        for stale in Path(directory).glob("*.db"):
            stale.unlink()
        yield
        return
    own = tempfile.mkdtemp(prefix="ingest-api-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = own
    try:
        yield
    finally:
        shutil.rmtree(own, ignore_errors=True)


@contextmanager
def _log_config_file() -> Iterator[Path]:
    """ingest's logging dictConfig as the JSON file granian's --log-config reads."""

    def importable(value: Any) -> str:
        return f"{value.__module__}.{value.__qualname__}"  # the formatter's "()" class

    with tempfile.NamedTemporaryFile("w", prefix="ingest-api-logging-", suffix=".json") as file:
        json.dump(logging_dict(), file, default=importable)
        file.flush()
        yield Path(file.name)


if __name__ == "__main__":
    main()
