"""Flower, as `celery -A tasks flower` runs it: behind basic auth, it sees both queues' tasks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from flask.testing import FlaskClient

from ingest.config import Settings
from ingest.contract import (
    PERSIST_EVENT,
    PERSIST_EVENTS,
    PERSIST_QUEUE,
    PROJECT_TO_MYSQL,
    PROJECTION_QUEUE,
)
from testlib.api import AUTH, event
from testlib.data import projected_count
from testlib.processes import Flower, Worker
from testlib.wait import wait_until

LOGIN = ("operator", "flower-test-password")


@pytest.fixture
def flower(pipeline: Settings, management_api: str) -> Iterator[Flower]:
    running = Flower(pipeline, LOGIN, management_api)
    yield running
    running.stop()
    running.log.unlink(missing_ok=True)


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
        lambda: len(succeeded(flower, PERSIST_EVENT)) == 3,
        what="3 successful persist_event tasks in Flower",
    )
    # The persist worker gathers the ids of tasks that end close together into one projection.
    wait_until(
        lambda: 1 <= len(succeeded(flower, PROJECT_TO_MYSQL)) <= 4,
        what="successful project_to_mysql tasks in Flower",
    )
    [batch_task] = succeeded(flower, PERSIST_EVENTS)
    assert batch_task["worker"].split("@")[0] == workers[0].name
    projection = succeeded(flower, PROJECT_TO_MYSQL)[0]
    assert projection["worker"].split("@")[0] == workers[1].name

    # The broker tab: queue depths through RabbitMQ's management API.
    queues = {q["name"] for q in flower.get("/api/queues/length").json()["active_queues"]}
    assert {PERSIST_QUEUE, PROJECTION_QUEUE} <= queues


def test_flower_refuses_requests_without_the_login(flower: Flower) -> None:
    for path in ("/", "/tasks", "/api/tasks", "/api/workers"):
        assert requests.get(f"{flower.url}{path}", timeout=10).status_code == 401, path
        wrong = requests.get(f"{flower.url}{path}", auth=(LOGIN[0], "wrong"), timeout=10)
        assert wrong.status_code == 401, path
    assert flower.get("/api/tasks").status_code == 200
