"""Structured logs: one JSON line per request and per task, tied together by the request id."""

from __future__ import annotations

import json
import uuid
from typing import Any

import requests

from ingest.config import Settings
from ingest.contract import PERSIST_EVENT, PROJECT_TO_MYSQL
from tasks.celery import create_celery
from testlib.api import API_KEY, AUTH, event
from testlib.data import projected_count
from testlib.processes import Worker, running_api
from testlib.wait import wait_until


def json_lines(output: str) -> list[dict[str, Any]]:
    """The JSON lines of a worker's output (its start-up banner is plain text)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def task_line(worker: Worker, task: str, request_id: str) -> dict[str, Any] | None:
    return next(
        (
            line
            for line in json_lines(worker.output())
            if line["message"] == "task"
            and line.get("task") == task
            and line.get("request_id") == request_id
        ),
        None,
    )


def test_request_and_task_lines_carry_the_request_id_and_never_the_payload_or_key(
    pipeline: Settings, workers: tuple[Worker, Worker]
) -> None:
    persist, projector = workers
    request_id = f"trace-{uuid.uuid4().hex}"
    secret = f"card-{uuid.uuid4().hex}"  # stands for anything private in a payload
    sent = event(f"log-{uuid.uuid4().hex[:8]}", payload={"card": secret, "amount": 12})

    with running_api(pipeline) as api:
        answer = requests.post(
            f"{api.url}/v1/events",
            json=sent,
            headers={**AUTH, "X-Request-ID": request_id},
            timeout=10,
        )
        assert answer.status_code == 202
        assert answer.headers["X-Request-ID"] == request_id
        wait_until(lambda: projected_count(pipeline) == 1, what="the event in MySQL")
        persisted = wait_until(
            lambda: task_line(persist, PERSIST_EVENT, request_id),
            what="the persist task's log line",
        )
        projected = wait_until(
            lambda: task_line(projector, PROJECT_TO_MYSQL, request_id),
            what="the projection task's log line",
        )
        api_output = api.output()
        api_lines = api.json_lines()  # every line of the server and the app is JSON

    [request_line] = [
        line
        for line in api_lines
        if line["message"] == "request" and line.get("request_id") == request_id
    ]
    assert request_line["method"] == "POST"
    assert request_line["route"] == "/v1/events"
    assert request_line["status"] == 202
    assert request_line["outcome"] == "accepted"
    assert request_line["event_ids"] == [sent["event_id"]]
    assert 0 < request_line["duration_ms"] < 10_000

    for line, task in ((persisted, PERSIST_EVENT), (projected, PROJECT_TO_MYSQL)):
        assert line["task"] == task
        assert line["event_ids"] == [sent["event_id"]]
        assert line["outcome"] == "success"
        assert 0 < line["duration_ms"] < 10_000
        assert line["level"] == "INFO"
        assert len(line["task_id"]) >= 32
    assert persisted["task_id"] != projected["task_id"]

    for output in (api_output, persist.output(), projector.output()):
        assert secret not in output
        assert API_KEY not in output


def test_a_failing_task_logs_its_failure_without_the_payload(
    pipeline: Settings, workers: tuple[Worker, Worker]
) -> None:
    persist, _ = workers
    request_id = f"poison-{uuid.uuid4().hex}"
    secret = f"card-{uuid.uuid4().hex}"
    # Past the API's checks (straight onto the queue): PostgreSQL refuses the 129-character type,
    # and the database error that Celery logs would otherwise quote the statement's values.
    poison = {
        **event("poison-1", payload={"card": secret}),
        "event_type": "t" * 129,
        "occurred_at": "2026-11-27T09:00:00+00:00",
        "received_at": "2026-11-27T09:00:01+00:00",
    }
    celery = create_celery(pipeline)
    with celery.connection_for_write() as connection:
        celery.send_task(
            PERSIST_EVENT,
            args=[poison],
            headers={"request_id": request_id},
            connection=connection,
        )

    failed = wait_until(
        lambda: task_line(persist, PERSIST_EVENT, request_id),
        what="the failed task's log line",
    )
    assert failed["outcome"] == "failure"
    assert failed["level"] == "WARNING"
    assert failed["event_ids"] == ["poison-1"]
    wait_until(lambda: "StringDataRightTruncation" in persist.output(), what="Celery's error line")
    assert secret not in persist.output()
