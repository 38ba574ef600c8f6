"""What the benchmark runs against: its own databases and vhost, the service's processes, and
their memory. Only the service's public entry points are used: the command lines `ingest up`
runs (built by the same functions of ingest_cli.services), `alembic upgrade head`, the
environment variables of .env.example, the HTTP API and the tables `events` and
`events_projection`.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import MySQLdb
import psycopg2
from bench_cpu import read_processes, tree
from kombu import Connection

from ingest.config import Settings
from ingest.contract import DEAD_QUEUE, PERSIST_QUEUE, PROJECTION_QUEUE
from ingest_api import server as api_server
from ingest_cli.services import (
    beat_argv,
    projector_argv,
    serve_argv,
    up_command,
    worker_argv,
)
from testlib.processes import ROOT, VENV_BIN, Beat, HttpService, ServiceProcess, service_env
from testlib.servers import (
    SharedServers,
    isolated_databases,
    isolated_vhost,
    with_database,
    with_vhost,
)

logger = logging.getLogger(__name__)

# How the API's server command starts its server; the bare baseline's script takes its place.
API_SERVER = ["-m", api_server.__name__]
BARE_APP = ROOT / "scripts" / "bare_app.py"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
START_TIMEOUT = 90.0
# No statement of the benchmark's own may wait without end (a lock held by a stuck worker).
BOUNDED_WAITS = "-c lock_timeout=60s -c statement_timeout=600s"


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


def run_command(command: Sequence[str], timeout: float = 300, **kwargs: Any) -> str:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(command)} did not finish within {timeout:.0f}s") from None
    if done.returncode != 0:
        raise BenchError(f"{' '.join(command)} failed: {done.stderr or done.stdout}")
    return done.stdout


def up_default(option: str) -> Any:
    """The default `ingest up` gives one of its options, read from the command itself."""
    return next(param.default for param in up_command.params if param.name == option)


def http_argv(port: int, bare: bool = False) -> list[str]:
    """The API's server command as `ingest up` runs it, on `port`; with `bare`, the same server
    and options serving the bare Flask app in the API's place."""
    argv = serve_argv(f"127.0.0.1:{port}", up_default("workers"))
    if not bare:
        return argv
    if argv[1:3] != API_SERVER:
        raise BenchError(f"`ingest serve` no longer runs `python {' '.join(API_SERVER)}`: {argv}")
    return [argv[0], str(BARE_APP), *argv[3:]]


def celery_options() -> tuple[str, ...]:
    """The options `ingest up` gives both Celery workers."""
    concurrency = up_default("concurrency")
    return ("-l", "info", *(("-c", str(concurrency)) if concurrency else ()))


def rss_bytes(pids: Iterable[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as statm:
                total += int(statm.read().split()[1]) * PAGE_SIZE
        except (OSError, IndexError, ValueError):
            continue  # exited between the listing and the read
    return total


@dataclass(frozen=True)
class TableCounts:
    rows: int
    distinct: int
    this_run: int
    last_write: datetime | None


class BenchStack:
    """Own PostgreSQL and MariaDB databases and RabbitMQ vhost, dropped on close, and the
    processes started on them, stopped on close."""

    def __init__(self, servers: SharedServers, keep_logs: bool = False) -> None:
        self.servers = servers
        self.keep_logs = keep_logs
        self.name = f"ingest_bench_{os.getpid()}"
        self.vhost = self.name.replace("_", "-")
        self.api_key = secrets.token_urlsafe(24)
        self.logs = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
        self.processes: list[ServiceProcess] = []
        self.postgres_url = with_database(servers.postgres_admin_url, self.name)
        self.mysql_url = with_database(servers.mysql_admin_url, self.name)
        self.broker_url = with_vhost(servers.broker_url, self.vhost)
        self._created = ExitStack()

    # -- set-up and clean-up ---------------------------------------------------------------

    def create(self) -> None:
        logger.info("Creating databases and vhost %s", self.name)
        self._created.enter_context(isolated_databases(self.servers, self.name))
        self._created.enter_context(isolated_vhost(self.servers.broker_url, self.vhost))
        logger.info("Migrating (alembic upgrade head)")
        run_command([str(VENV_BIN / "alembic"), "upgrade", "head"], cwd=ROOT, env=self.env())

    def close(self) -> None:
        """Stop every process, drop what was created; each step runs even if another fails."""
        for process in reversed(self.processes):
            try:
                process.stop()
            except Exception:
                logger.exception("Could not stop %s", process.name)
        self.processes.clear()
        try:
            self._created.close()
        except Exception:
            logger.exception("Dropping the databases or the vhost failed")
        if self.keep_logs:
            logger.info("Logs kept in %s", self.logs)
        else:
            shutil.rmtree(self.logs, ignore_errors=True)

    # -- the service -----------------------------------------------------------------------

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a service process: the variables of .env.example, nothing
        inherited that could point it elsewhere."""
        settings = Settings(
            broker_url=self.broker_url,
            postgres_url=self.postgres_url,
            mysql_url=self.mysql_url,
            api_keys=(self.api_key,),
        )
        # PYTHONUNBUFFERED as `ingest up` runs its children.
        return service_env(settings, INGEST_AUTH="on", PYTHONUNBUFFERED="1", **extra)

    def start_api(self) -> HttpService:
        return self._start_http("api", False, self.env())

    def start_bare(self) -> HttpService:
        # The server's workers import the bare app by name.
        return self._start_http("bare-flask", True, self.env(PYTHONPATH=str(BARE_APP.parent)))

    def _start_http(self, name: str, bare: bool, env: dict[str, str]) -> HttpService:
        server = HttpService(
            name,
            lambda port: http_argv(port, bare),
            env,
            self.logs / f"{name}.log",
            timeout=START_TIMEOUT,
        )
        self.processes.append(server)
        return server

    def start_persist_worker(self) -> ServiceProcess:
        return self._start_worker("persist", worker_argv(celery_options()), PERSIST_QUEUE)

    def start_projection_worker(self) -> ServiceProcess:
        argv = projector_argv(celery_options(), Settings().projector_concurrency)
        return self._start_worker("projection", argv, PROJECTION_QUEUE)

    def start_beat(self) -> Beat:
        """celery beat as `ingest up` runs it, ready once it has started its scheduler."""
        # Its schedule file lives with the logs: a real beat in this checkout keeps var/'s.
        command = beat_argv(("-l", "info", "-s", str(self.logs / "celerybeat-schedule")))
        beat = Beat(command, self.env(), self.logs / "beat.log", START_TIMEOUT)
        self.processes.append(beat)
        return beat

    def _start_worker(self, name: str, command: list[str], queue: str) -> ServiceProcess:
        """A Celery worker, ready once it consumes from its queue."""
        worker = ServiceProcess(name, command, self.env(), self.logs / f"{name}.log")
        self.processes.append(worker)
        worker.wait_ready(
            lambda: self.queue_state(queue)[1] > 0,
            START_TIMEOUT,
            f"{name} to consume from {queue}",
            interval=0.5,
        )
        return worker

    def stop(self, process: ServiceProcess) -> None:
        self.processes.remove(process)
        process.stop()

    # -- the broker ------------------------------------------------------------------------

    def broker(self, **options: Any) -> Connection:
        return Connection(self.broker_url, connect_timeout=10, **options)

    def queue_state(self, queue: str) -> tuple[int, int]:
        """(ready messages, consumers) of a queue; (0, 0) while it does not exist."""
        with self.broker() as connection:
            channel = connection.channel()
            try:
                _, messages, consumers = channel.queue_declare(queue, passive=True)
            except connection.channel_errors:
                return 0, 0
            return messages, consumers

    def purge_queues(self) -> None:
        with self.broker() as connection:
            for queue in (PERSIST_QUEUE, PROJECTION_QUEUE, DEAD_QUEUE):
                channel = connection.channel()
                try:
                    channel.queue_purge(queue)
                except connection.channel_errors:
                    pass  # not declared yet: nothing to purge
                finally:
                    channel.close()

    # -- the databases ---------------------------------------------------------------------

    def postgres(self) -> Any:
        connection = psycopg2.connect(self.postgres_url, connect_timeout=10, options=BOUNDED_WAITS)
        connection.autocommit = True
        return connection

    def postgres_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """Run one statement in its own connection; its first row, if it returns rows."""
        connection = self.postgres()
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone() if cursor.description else None
        finally:
            connection.close()

    def mysql_one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        connection = mysql_connect(self.mysql_url)
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.fetchone() if cursor.description else None
        finally:
            connection.close()

    def reset(self) -> None:
        """Empty both tables and every queue."""
        self.purge_queues()
        self.postgres_one("TRUNCATE events")
        self.mysql_one("TRUNCATE TABLE events_projection")

    def rows(self) -> tuple[int, int]:
        """Rows in PostgreSQL `events` and in MySQL `events_projection`."""
        (stored,) = self.postgres_one("SELECT count(*) FROM events") or (0,)
        (projected,) = self.mysql_one("SELECT count(*) FROM events_projection") or (0,)
        return int(stored), int(projected)

    def postgres_counts(self, prefix: str) -> TableCounts:
        rows, distinct, this_run, last = self.postgres_one(
            "SELECT count(*), count(DISTINCT event_id),"
            " count(*) FILTER (WHERE starts_with(event_id, %s)), max(stored_at) FROM events",
            (prefix,),
        ) or (0, 0, 0, None)
        return TableCounts(rows, distinct, this_run, last)

    def mysql_counts(self, prefix: str) -> TableCounts:
        rows, distinct, this_run, last = self.mysql_one(
            "SELECT count(*), count(DISTINCT event_id), coalesce(sum(left(event_id, %s) = %s), 0),"
            " max(projected_at) FROM events_projection",
            (len(prefix), prefix),
        ) or (0, 0, 0, None)
        # MySQL keeps naive UTC.
        last = last.replace(tzinfo=UTC) if last is not None else None
        return TableCounts(int(rows), int(distinct), int(this_run), last)


def mysql_connect(url: str) -> Any:
    parts = urlsplit(url)
    options: dict[str, Any] = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "connect_timeout": 10,
        "read_timeout": 600,
        "write_timeout": 600,
        "init_command": "SET SESSION lock_wait_timeout = 60",
        "autocommit": True,
    }
    if parts.password:
        options["password"] = unquote(parts.password)
    database = parts.path.lstrip("/")
    if database:
        options["database"] = database
    return MySQLdb.connect(**options)


class RssSampler(threading.Thread):
    """Samples the RSS of each group of processes (a root and its descendants) until stopped."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.interval = interval
        self.groups: dict[str, int] = {}
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def watch(self, name: str, root_pid: int) -> None:
        with self._lock:
            self.groups[name] = root_pid

    def sample(self) -> tuple[float, dict[str, int]]:
        with self._lock:
            groups = dict(self.groups)
        processes = read_processes()
        taken = (
            time.monotonic(),
            {name: rss_bytes(tree(processes, [pid])) for name, pid in groups.items()},
        )
        with self._lock:
            self.samples.append(taken)
        return taken

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=10)

    def window(self, start: float, end: float) -> list[dict[str, int]]:
        with self._lock:
            return [values for taken, values in self.samples if start <= taken <= end]
