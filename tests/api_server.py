"""The API as it runs in production: `python -m ingest_api.server` (granian), as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from ingest.config import Settings
from tests.servers import free_port
from tests.support import ROOT, VENV_BIN, service_env, wait_until


class ApiServer:
    def __init__(self, settings: Settings, workers: int, **env: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = Path(tempfile.mkstemp(prefix="api-", suffix=".log")[1])
        port = self.url.rsplit(":", 1)[1]
        command = [
            str(VENV_BIN / "python"), "-m", "ingest_api.server",
            "--host", "127.0.0.1", "--port", port, "--workers", str(workers),
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
        try:
            wait_until(self._ready, timeout=60, what="the API server to answer /healthz")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(
                f"the API server exited with {self.process.returncode}:\n{self.output()}"
            )
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:  # not listening yet, or no worker booted yet
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def json_lines(self) -> list[dict[str, Any]]:
        """Every line the server and the app logged; each must be one JSON object."""
        return [json.loads(line) for line in self.output().splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the main process and its workers
                self.process.wait(timeout=30)
        self.log.unlink(missing_ok=True)


@contextmanager
def running_api(settings: Settings, workers: int = 2, **env: str) -> Iterator[ApiServer]:
    server = ApiServer(settings, workers, **env)
    try:
        yield server
    finally:
        server.stop()
