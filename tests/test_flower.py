"""Flower, as `celery -A tasks flower` runs it: behind basic auth, it sees both queues' tasks."""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask.testing import FlaskClient

from ingest.config import Settings
from tests.conftest import AUTH, event
from tests.servers import free_port
from tests.support import ROOT, VENV_BIN, Worker, projected_count, service_env, wait_until

LOGIN = ("operator", "flower-test-password")


class Flower:
    def __init__(self, settings: Settings, broker_api: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = Path(tempfile.mkstemp(prefix="flower-", suffix=".log")[1])
        command = [
            str(VENV_BIN / "celery"), "-A", "tasks", "flower",
            "--address=127.0.0.1", f"--port={self.url.rsplit(':', 1)[1]}",
        ]  # fmt: skip
        # Flower reads FLOWER_<OPTION> variables, as the compose service and `ingest up` set them.
        env = service_env(settings, FLOWER_BASIC_AUTH=":".join(LOGIN), FLOWER_BROKER_API=broker_api)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        try:
            wait_until(self._ready, timeout=60, what="Flower to answer")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"flower exited:\n{self.log.read_text(errors='replace')}")
        try:
            return requests.get(f"{self.url}/healthcheck", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def get(self, path: str, **params: str) -> requests.Response:
        return requests.get(f"{self.url}{path}", params=params, auth=LOGIN, timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)
        self.log.unlink(missing_ok=True)


@pytest.fixture
def flower(pipeline: Settings, management_api: str) -> Iterator[Flower]:
    running = Flower(pipeline, management_api)
    yield running
    running.stop()


def succeeded(flower: Flower, task: str) -> list[dict]:
    tasks = flower.get("/api/tasks", taskname=task, state="SUCCESS").json()
    return list(tasks.values())


def test_flower_shows_both_queues_tasks_behind_basic_auth(
    flower: Flower, client: FlaskClient, pipeline: Settings, workers: tuple[Worker, Worker]
) -> None:
    def online() -> bool:
        status = flower.get("/api/workers", status="true").json()
        names = {name.split("@")[0] for name, up in status.items() if up}
        return {worker.name for worker in workers} <= names

    # Flower hears task events only once it follows the workers.
    wait_until(online, timeout=60, what="Flower to see both workers")
    for n in range(3):
        assert client.post("/v1/events", json=event(f"fl-{n}"), headers=AUTH).status_code == 202
    batch = {"batch": [event("fl-3"), event("fl-4")]}
    assert client.post("/v1/batch", json=batch, headers=AUTH).status_code == 202
    wait_until(lambda: projected_count(pipeline) == 5, what="5 events in MySQL")

    wait_until(
        lambda: len(succeeded(flower, "ingest.persist_event")) == 3,
        what="3 successful persist_event tasks in Flower",
    )
    # The persist worker gathers the ids of tasks that end close together into one projection.
    wait_until(
        lambda: 1 <= len(succeeded(flower, "ingest.project_to_mysql")) <= 4,
        what="successful project_to_mysql tasks in Flower",
    )
    [batch_task] = succeeded(flower, "ingest.persist_events")
    assert batch_task["worker"].split("@")[0] == workers[0].name
    projection = succeeded(flower, "ingest.project_to_mysql")[0]
    assert projection["worker"].split("@")[0] == workers[1].name

    # The broker tab: queue depths through RabbitMQ's management API.
    queues = {q["name"] for q in flower.get("/api/queues/length").json()["active_queues"]}
    assert {"ingest.persist", "ingest.projection"} <= queues


def test_flower_refuses_requests_without_the_login(flower: Flower) -> None:
    for path in ("/", "/tasks", "/api/tasks", "/api/workers"):
        assert requests.get(f"{flower.url}{path}", timeout=10).status_code == 401, path
        wrong = requests.get(f"{flower.url}{path}", auth=(LOGIN[0], "wrong"), timeout=10)
        assert wrong.status_code == 401, path
    assert flower.get("/api/tasks").status_code == 200
