"""Helpers the tests share: waiting, counting rows, running workers as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text

from ingest.config import Settings
from models import engine_for

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> T:
    """Poll until `predicate()` is truthy and return it; fail with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def scalar(url: str, sql: str, **params: Any) -> Any:
    with engine_for(url).connect() as connection:
        return connection.execute(text(sql), params).scalar()


def rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine_for(url).connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(sql), params)]


def stored_count(settings: Settings) -> int:
    return scalar(settings.postgres_url, "SELECT count(*) FROM events")


def projected_count(settings: Settings) -> int:
    assert settings.mysql_url
    return scalar(settings.mysql_url, "SELECT count(*) FROM events_projection")


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment a service process of these settings runs with."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BROKER_", "POSTGRES_", "MYSQL_", "INGEST_", "CELERY_"))
    }
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


class Worker:
    """A `celery -A tasks worker` subprocess, its output in a log file."""

    def __init__(
        self, settings: Settings, queue: str, name: str, concurrency: int = 2, **env: str
    ) -> None:
        self.name = f"{name}-{os.getpid()}-{time.monotonic_ns()}"
        self.log = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        command = [
            str(VENV_BIN / "celery"), "-A", "tasks", "worker",
            "-Q", queue, "-n", f"{self.name}@%h", "-c", str(concurrency),
            "--without-mingle", "--without-gossip", "-l", "info",
        ]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=service_env(settings, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, timeout=60, what=f"worker {name} to be ready")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.output()}")
        return " ready." in self.output()

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pool_children(self) -> list[int]:
        found = subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in found.stdout.split()]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Kill the whole worker: the main process and its pool children."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()


@contextmanager
def running_workers(settings: Settings, **env: str) -> Iterator[tuple[Worker, Worker]]:
    """A persist worker and a projection worker, stopped on exit."""
    persist = Worker(settings, "ingest.persist", "persist", **env)
    try:
        projector = Worker(settings, "ingest.projection", "projector", **env)
    except BaseException:
        persist.stop()
        raise
    try:
        yield persist, projector
    finally:
        persist.stop()
        projector.stop()
