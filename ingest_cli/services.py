"""The service's processes: thin wrappers that exec the API's server or celery, and `ingest up`.

Each wrapper checks the settings its process needs, then replaces itself with the real
command; arguments after the options go to that command unchanged. The plain commands
(`python -m ingest_api.server`, `celery -A tasks worker ...`) keep working.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from ingest.config import ConfigError, Settings
from ingest.contract import PERSIST_QUEUE, PROJECTION_QUEUE
from ingest_cli.context import CliContext, pass_cli
from ingest_cli.maintenance import migrate
from ingest_cli.supervisor import supervise

BEAT_SCHEDULE = Path("var") / "celerybeat-schedule"
# glibc's malloc gives each thread that allocates under contention an arena of its own, up to
# eight per core, and keeps what each held at its peak: a worker's 16 threads, each handed
# messages of 100 events, grew by 1 to 5 MiB a run. Two arenas keep it flat and cost no CPU
# (scripts/drain.py). A value in the environment wins.
PROCESS_DEFAULTS = {"MALLOC_ARENA_MAX": "2"}
PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True}
extra_args = click.argument("extra", nargs=-1, type=click.UNPROCESSED)


def serve_argv(bind: str, workers: int, extra: tuple[str, ...] = ()) -> list[str]:
    host, _, port = bind.rpartition(":")
    return [
        sys.executable, "-m", "ingest_api.server", "--host", host.strip("[]"), "--port", port,
        "--workers", str(workers), *extra,
    ]  # fmt: skip


def celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "tasks", *args]


def worker_argv(extra: tuple[str, ...] = ()) -> list[str]:
    return celery_argv("worker", "-Q", PERSIST_QUEUE, "-n", "persist@%h", *extra)


def projector_argv(extra: tuple[str, ...] = (), concurrency: int | None = None) -> list[str]:
    """The projection worker, with `concurrency` threads unless `extra` gives its own `-c`
    (celery takes the last)."""
    threads = ("-c", str(concurrency)) if concurrency else ()
    return celery_argv("worker", "-Q", PROJECTION_QUEUE, "-n", "projector@%h", *threads, *extra)


def beat_argv(extra: tuple[str, ...] = (), schedule: Path = BEAT_SCHEDULE) -> list[str]:
    # Beat remembers when each task last ran in this file, under ./var/ by default.
    schedule.parent.mkdir(parents=True, exist_ok=True)
    return celery_argv("beat", "-s", str(schedule), *extra)


def flower_argv(address: str, port: int, extra: tuple[str, ...] = ()) -> list[str]:
    return celery_argv("flower", f"--address={address}", f"--port={port}", *extra)


def checked(settings: Settings, *, api: bool = False, flower: bool = False) -> Settings:
    """Fail before starting anything when a process would refuse to run or run unsafely."""
    try:
        if api:
            settings.check_api()
        if flower and not (settings.flower_basic_auth or "").partition(":")[2]:
            # Flower reads FLOWER_BASIC_AUTH itself; without it the dashboard would be open.
            raise ConfigError("FLOWER_BASIC_AUTH must be user:password; Flower needs a login")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return settings


def process_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment each process of the service runs with: `environ` over the defaults."""
    return {**PROCESS_DEFAULTS, **environ}


def run(cli: CliContext, argv: list[str]) -> None:
    """Become `argv`, with the environment over `.env`: signals go straight to it."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv[0], argv, process_environ(cli.environ))


@click.command("serve", context_settings=PASS_THROUGH)
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="HOST:PORT to listen on.")
@click.option(
    "--workers", type=click.IntRange(1), default=2, show_default=True, help="Server processes."
)
@extra_args
@pass_cli
def serve_command(cli: CliContext, bind: str, workers: int, extra: tuple[str, ...]) -> None:
    """Serve the HTTP API with granian.

    Runs `python -m ingest_api.server`: granian with 16 app threads per worker and a 30 s
    deadline on the request head and on the body. Extra arguments go to it (--threads, or any
    granian option), e.g. `ingest serve --bind 0.0.0.0:8000 --http1-header-read-timeout 10000`.
    """
    checked(cli.settings(), api=True)
    run(cli, serve_argv(bind, workers, extra))


@click.command("worker", context_settings=PASS_THROUGH)
@extra_args
@pass_cli
def worker_command(cli: CliContext, extra: tuple[str, ...]) -> None:
    """Run the persist worker (ingest.persist).

    It stores the events of queue ingest.persist in PostgreSQL.
    Runs `celery -A tasks worker -Q ingest.persist -n persist@%h`; extra arguments go to
    celery, e.g. `ingest worker -c 4 -l info`.
    """
    checked(cli.settings())
    run(cli, worker_argv(extra))


@click.command("projector", context_settings=PASS_THROUGH)
@extra_args
@pass_cli
def projector_command(cli: CliContext, extra: tuple[str, ...]) -> None:
    """Run the projection worker (ingest.projection).

    It upserts the events of queue ingest.projection into MySQL.
    Runs `celery -A tasks worker -Q ingest.projection -n projector@%h -c N`, N being
    INGEST_PROJECTOR_CONCURRENCY; extra arguments go to celery, e.g. `ingest projector -c 2
    -l info`.
    """
    settings = checked(cli.settings())
    run(cli, projector_argv(extra, settings.projector_concurrency))


@click.command("beat", context_settings=PASS_THROUGH)
@click.option(
    "--schedule",
    type=click.Path(dir_okay=False, path_type=Path),
    default=BEAT_SCHEDULE,
    show_default=True,
    help="File in which beat remembers when each task last ran.",
)
@extra_args
@pass_cli
def beat_command(cli: CliContext, schedule: Path, extra: tuple[str, ...]) -> None:
    """Run celery beat (schedules the reconciler).

    Beat starts the reconciler every INGEST_RECONCILE_INTERVAL_SECONDS.
    Runs `celery -A tasks beat -s SCHEDULE`; run exactly one beat per deployment. Extra
    arguments go to celery.
    """
    checked(cli.settings())
    run(cli, beat_argv(extra, schedule))


@click.command("flower", context_settings=PASS_THROUGH)
@click.option("--address", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@extra_args
@pass_cli
def flower_command(cli: CliContext, address: str, port: int, extra: tuple[str, ...]) -> None:
    """Run Flower, the task dashboard.

    Flower asks for the login in FLOWER_BASIC_AUTH (user:password).
    Runs `celery -A tasks flower`; extra arguments go to Flower.
    """
    checked(cli.settings(), flower=True)
    run(cli, flower_argv(address, port, extra))


@click.command("up")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="API's HOST:PORT.")
@click.option(
    "--workers", type=click.IntRange(1), default=2, show_default=True, help="API processes."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1),
    default=None,
    help="Threads (or processes) per Celery worker [default: INGEST_WORKER_CONCURRENCY, and "
    "INGEST_PROJECTOR_CONCURRENCY for the projection worker].",
)
@click.option("--flower-port", type=click.IntRange(1, 65535), default=5555, show_default=True)
@click.option(
    "--stop-timeout",
    type=click.FloatRange(0),
    default=20.0,
    show_default=True,
    help="Seconds each process gets to stop before it is killed.",
)
@pass_cli
def up_command(
    cli: CliContext,
    bind: str,
    workers: int,
    concurrency: int | None,
    flower_port: int,
    stop_timeout: float,
) -> None:
    """Run the whole service here, until Ctrl-C.

    Migrates both databases, then starts the API, the persist worker, the projection worker,
    celery beat and Flower, each log line prefixed with its process. Ctrl-C (or SIGTERM)
    stops them all; so does any of them exiting, and then `ingest up` exits with 1.
    """
    settings = checked(cli.settings(), api=True, flower=True)
    migrate(settings, configure_logging=True)
    celery_options = ("-l", "info", *(("-c", str(concurrency)) if concurrency else ()))
    # Python children would otherwise hold their output back in a pipe's block buffer.
    env = {**process_environ(cli.environ), "PYTHONUNBUFFERED": "1"}
    projector_env = env
    if settings.worker_metrics_port:
        # Each worker serves its task metrics on a port of its own: the projector takes the next.
        projector_port = settings.worker_metrics_port + 1
        projector_env = {**env, "INGEST_WORKER_METRICS_PORT": str(projector_port)}
        click.echo(
            f"Task metrics: worker on port {settings.worker_metrics_port}, "
            f"projector on port {projector_port}."
        )
    commands = {
        "api": (serve_argv(bind, workers), env),
        "worker": (worker_argv(celery_options), env),
        "projector": (
            projector_argv(celery_options, settings.projector_concurrency),
            projector_env,
        ),
        "beat": (beat_argv(("-l", "info")), env),
        "flower": (flower_argv("127.0.0.1", flower_port), env),
    }
    click.echo(f"API on http://{bind}, Flower on http://127.0.0.1:{flower_port}; Ctrl-C stops.")
    sys.exit(supervise(commands, stop_timeout))
