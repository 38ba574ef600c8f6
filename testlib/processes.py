"""The service's processes as real subprocesses: the API, Celery workers, celery beat, Flower.

Each runs in a session of its own (its whole tree can be stopped) with its output in a log file,
and is ready once it says so or answers over HTTP; one that dies while starting fails at once
with the end of its log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, PROJECTION_QUEUE
from ingest_cli.services import process_environ
from testlib.wait import HarnessError, free_port, http_status, wait_until

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service process of these settings runs with, as `ingest` starts it:
    nothing inherited that could point it elsewhere."""
    env = process_environ(
        {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("BROKER_", "POSTGRES_", "MYSQL_", "INGEST_", "CELERY_"))
        }
    )
    env.update(
        BROKER_URL=settings.broker_url,
        POSTGRES_URL=settings.postgres_url,
        INGEST_API_KEYS=",".join(settings.api_keys),
        INGEST_READ_KEYS=",".join(settings.read_keys),
        INGEST_RECONCILE_GRACE_SECONDS=str(settings.reconcile_grace_seconds),
        INGEST_RECONCILE_INTERVAL_SECONDS=str(settings.reconcile_interval_seconds),
        INGEST_PROJECTION_MAX_RETRIES=str(settings.projection_max_retries),
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    if settings.mysql_url:
        env["MYSQL_URL"] = settings.mysql_url
    env.update(extra)
    return env


def temp_log(name: str) -> Path:
    """A new empty log file under the temporary directory."""
    descriptor, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
    os.close(descriptor)
    return Path(path)


class ServiceProcess:
    """`command` as a subprocess in a session of its own, its output in `log`."""

    def __init__(
        self, name: str, command: Sequence[str], env: dict[str, str], log: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.command = list(command)
        self.log = log
        with log.open("wb") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, lines: int = 50) -> str:
        try:
            return "\n".join(self.output().splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise HarnessError(
                f"{self.name} exited with {self.process.returncode}; its log ends:\n{self.tail()}"
            )

    def wait_ready(
        self, ready: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
    ) -> None:
        """Until `ready()`; if the process dies first or it takes longer, stop it and fail."""

        def alive_and_ready() -> bool:
            self.check_alive()
            return ready()

        try:
            wait_until(alive_and_ready, timeout=timeout, interval=interval, what=what)
        except BaseException:
            self.stop()
            raise

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole session: the main process and every child it started."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM for a clean shutdown, then SIGKILL to whatever is left of the session."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", self.name, STOP_TIMEOUT)
        self.kill()


class HttpService(ServiceProcess):
    """A server on a free port of 127.0.0.1, ready once GET `health` answers 200.

    `command` gets the port and returns the command line.
    """

    def __init__(
        self,
        name: str,
        command: Callable[[int], Sequence[str]],
        env: dict[str, str],
        log: Path,
        health: str = "/healthz",
        timeout: float = START_TIMEOUT,
        cwd: Path = ROOT,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(name, command(self.port), env, log, cwd)
        self.wait_ready(
            lambda: self.status(health) == 200, timeout, f"{name} to answer {health}", 0.25
        )

    def status(self, path: str) -> int:
        """The status of GET `path`; 0 when nothing answered."""
        return http_status(self.port, path)


def api_server_command(port: int, workers: int) -> list[str]:
    return [
        str(VENV_BIN / "python"), "-m", "ingest_api.server",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip


class ApiServer(HttpService):
    """The API as it runs in production: `python -m ingest_api.server` (granian)."""

    def __init__(self, settings: Settings, workers: int, **env: str) -> None:
        super().__init__(
            "api",
            lambda port: api_server_command(port, workers),
            service_env(settings, **env),
            temp_log("api"),
        )

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line the server and the app logged; each must be one JSON object."""
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]


@contextmanager
def running_api(settings: Settings, workers: int = 2, **env: str) -> Iterator[ApiServer]:
    server = ApiServer(settings, workers, **env)
    try:
        yield server
    finally:
        server.stop()
        server.log.unlink(missing_ok=True)


class Worker(ServiceProcess):
    """A `celery -A tasks worker` consuming `queue`, ready once Celery says so."""

    def __init__(
        self, settings: Settings, queue: str, name: str, concurrency: int = 2, **env: str
    ) -> None:
        unique = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        command = [
            str(VENV_BIN / "celery"), "-A", "tasks", "worker",
            "-Q", queue, "-n", f"{unique}@%h", "-c", str(concurrency),
            "--without-mingle", "--without-gossip", "-l", "info",
        ]  # fmt: skip
        super().__init__(unique, command, service_env(settings, **env), temp_log(name))
        self.wait_ready(lambda: " ready." in self.output(), START_TIMEOUT, f"worker {name}")

    def pool_children(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in found.stdout.split()]


@contextmanager
def running_worker(settings: Settings, queue: str, name: str) -> Iterator[Worker]:
    """One worker, stopped on exit."""
    worker = Worker(settings, queue, name)
    try:
        yield worker
    finally:
        worker.stop()


@contextmanager
def running_workers(settings: Settings, **env: str) -> Iterator[tuple[Worker, Worker]]:
    """A persist worker and a projection worker, stopped on exit."""
    persist = Worker(settings, PERSIST_QUEUE, "persist", **env)
    try:
        projector = Worker(settings, PROJECTION_QUEUE, "projector", **env)
    except BaseException:
        persist.stop()
        raise
    try:
        yield persist, projector
    finally:
        persist.stop()
        projector.stop()


class Beat(ServiceProcess):
    """celery beat, ready once it has started its scheduler."""

    def __init__(
        self, command: Sequence[str], env: dict[str, str], log: Path, timeout: float = START_TIMEOUT
    ) -> None:
        super().__init__("beat", command, env, log)
        self.wait_ready(lambda: "beat: Starting" in self.output(), timeout, "beat to start", 0.5)


@contextmanager
def running_beat(settings: Settings) -> Iterator[Beat]:
    """`celery -A tasks beat`: sends reconcile_projection every reconcile interval."""
    with tempfile.TemporaryDirectory(prefix="ingest-beat-") as directory:
        command = [
            str(VENV_BIN / "celery"), "-A", "tasks", "beat", "-l", "info",
            "-s", str(Path(directory) / "schedule"),
        ]  # fmt: skip
        beat = Beat(command, service_env(settings), Path(directory) / "beat.log")
        try:
            yield beat
        finally:
            beat.stop()


def flower_command(port: int) -> list[str]:
    return [
        str(VENV_BIN / "celery"),
        "-A",
        "tasks",
        "flower",
        "--address=127.0.0.1",
        f"--port={port}",
    ]


class Flower(HttpService):
    """`celery -A tasks flower` behind basic auth, reading queue depths through `broker_api`."""

    def __init__(self, settings: Settings, login: tuple[str, str], broker_api: str) -> None:
        self.login = login
        # Flower reads FLOWER_<OPTION> variables, as the compose service and `ingest up` set them.
        env = service_env(settings, FLOWER_BASIC_AUTH=":".join(login), FLOWER_BROKER_API=broker_api)
        super().__init__("flower", flower_command, env, temp_log("flower"), health="/healthcheck")

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", params=params, auth=self.login, timeout=10)
