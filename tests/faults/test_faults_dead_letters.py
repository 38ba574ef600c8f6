"""Fault 7 and Celery's acking pitfalls: a message no code can process is parked in ingest.dead
with the broker's reason, never acked away and never looping; `ingest dead-letters replay`
sends it back once the cause is fixed."""

from __future__ import annotations

import json
import os
import pickle
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kombu import Connection
from kombu.transport.native_delayed_delivery import (
    declare_native_delayed_delivery_exchanges_and_queues,
)

from ingest.canonical import utc_now
from ingest.config import Settings
from ingest.contract import PERSIST_EVENT, PERSIST_QUEUE, declare_topology
from ingest_api.events import message_event
from ingest_api.schemas import EventSchema
from ingest_cli.dead_letters import DeadLetter
from tasks.celery import create_celery
from testlib.api import AUTH, event
from testlib.commands import invoke
from testlib.data import dead_letters, publish_raw, reset, stored_ids
from testlib.faults import api, event_held, lock_waiters, process_on_port
from testlib.private_servers import RabbitNode
from testlib.processes import Worker
from testlib.servers import admin_sql
from testlib.wait import wait_until

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def module_settings(settings: Settings, broker: RabbitNode) -> Settings:
    return settings.replace(broker_url=broker.url)


@pytest.fixture(scope="module")
def persist(module_settings: Settings) -> Iterator[Worker]:
    # Pool children: the test of a message that kills its worker kills the child running it.
    worker = Worker(module_settings, PERSIST_QUEUE, "persist", INGEST_WORKER_POOL="prefork")
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def faulty(module_settings: Settings, persist: Worker) -> Settings:
    """A private broker, a persist worker (no projector), everything empty."""
    reset(module_settings)
    return module_settings


def one_dead_letter(settings: Settings) -> DeadLetter:
    [letter] = wait_until(lambda: dead_letters(settings), timeout=30, what="a dead letter")
    return letter


def celery_headers(task: str, task_id: str) -> dict[str, Any]:
    return {"task": task, "id": task_id, "lang": "py", "root_id": task_id, "retries": 0}


def failing_task(settings: Settings) -> None:
    """A well-formed persist_event whose event PostgreSQL refuses for good (id too long), as
    an older producer could send it."""
    celery = create_celery(settings)
    try:
        celery.send_task(
            PERSIST_EVENT,
            args=[
                message_event(EventSchema().load(event("x")), utc_now().isoformat(), None)
                | {"event_id": "x" * 200}
            ],
            task_id="poison-fails",
        )
    finally:
        celery.close()


def undecodable(settings: Settings) -> None:
    publish_raw(
        settings,
        b'[[{"event_id": "poison-decode"',
        application_headers=celery_headers(PERSIST_EVENT, "poison-decode"),
        content_type="application/json",
        content_encoding="utf-8",
    )


def unknown_task(settings: Settings) -> None:
    publish_raw(
        settings,
        json.dumps([[], {}, {}]).encode(),
        application_headers=celery_headers("ingest.no_such_task", "poison-unknown"),
        content_type="application/json",
        content_encoding="utf-8",
    )


def pickled(settings: Settings) -> None:
    publish_raw(
        settings,
        pickle.dumps(([{"event_id": "poison-pickle"}], {}, {})),
        application_headers=celery_headers(PERSIST_EVENT, "poison-pickle"),
        content_type="application/x-python-serialize",
        content_encoding="binary",
    )


def not_a_task(settings: Settings) -> None:
    publish_raw(settings, b"hello", content_type="text/plain")


@pytest.mark.parametrize(
    ("send", "task_id"),
    [
        (failing_task, "poison-fails"),
        (undecodable, "poison-decode"),
        (unknown_task, "poison-unknown"),
        (pickled, "poison-pickle"),
        (not_a_task, None),
    ],
    ids=["task-fails-for-good", "undecodable-body", "unknown-task", "pickle", "not-a-task"],
)
def test_a_poison_message_is_dead_lettered_once_with_its_reason(
    faulty: Settings,
    persist: Worker,
    broker: RabbitNode,
    send: Callable[[Settings], None],
    task_id: str | None,
) -> None:
    send(faulty)

    letter = one_dead_letter(faulty)
    assert letter.reason == "rejected"
    assert letter.queue == PERSIST_QUEUE
    assert letter.task_id == task_id
    # Parked, not looping: nothing left in the work queue, no second death.
    time.sleep(1)
    assert broker.queue_depths()[PERSIST_QUEUE] == (0, 0)
    assert [letter.count for letter in dead_letters(faulty)] == [1]
    # By id: a pool child of the test before may still run its "deadly" task once more.
    assert "unretryable" not in stored_ids(faulty)
    assert persist.process.poll() is None


# The limit an operator sets by policy to park such a message sooner than the queue's own.
POLICY_LIMIT = 10


def test_a_message_that_kills_its_worker_is_parked_after_the_delivery_limit(
    faulty: Settings, persist: Worker, broker: RabbitNode
) -> None:
    killed: set[int] = set()

    def next_victim() -> int | str | None:
        if dead_letters(faulty):
            return "parked"
        alive = set(map(process_on_port, lock_waiters(faulty))) - killed - {None}
        return alive.pop() if alive else None

    limit = f'{{"delivery-limit": {POLICY_LIMIT}}}'
    with (
        broker.policy("delivery-limit", r"^ingest\.persist$", limit),
        api(faulty) as app,
        event_held(faulty, "deadly"),
    ):
        response = app.test_client().post("/v1/events", json=event("deadly"), headers=AUTH)
        assert response.status_code == 202
        while (victim := wait_until(next_victim, timeout=30, what="the next delivery")) != "parked":
            assert isinstance(victim, int)
            os.kill(victim, signal.SIGKILL)
            killed.add(victim)
            # Each broker delivery costs a kill or two (a child killed before it reported the
            # task as started gets it run again by the pool, not by the broker).
            assert len(killed) <= 2 * (POLICY_LIMIT + 1), "not parked: redelivered on and on"

    letter = one_dead_letter(faulty)
    assert letter.reason == "delivery_limit"
    assert letter.queue == PERSIST_QUEUE
    assert len(killed) >= POLICY_LIMIT + 1
    assert persist.process.poll() is None

    # The cause gone (the lock released), a replay stores the event.
    replayed = invoke(faulty, "dead-letters", "replay")
    assert replayed.exit_code == 0, replayed.output
    wait_until(lambda: stored_ids(faulty) == {"deadly"}, what="the replayed event stored")
    assert dead_letters(faulty) == []


@contextmanager
def exchanges_deleted(settings: Settings, *names: str) -> Iterator[None]:
    """The broker without these exchanges: a publish to one fails (404), then they return."""
    with Connection(settings.broker_url) as connection:
        for name in names:
            connection.default_channel.exchange_delete(name)
    try:
        yield
    finally:
        with Connection(settings.broker_url) as connection:
            declare_topology(connection)
            declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")


def test_a_retry_that_cannot_be_published_is_dead_lettered_not_dropped(
    faulty: Settings,
) -> None:
    """Celery's retry() turns a failed publish of the retry into Reject(requeue=False): the
    dead-letter exchange keeps that message. Both ways a retry leaves are gone here: the work
    exchange (no delay) and the delayed-delivery entry exchange."""
    with api(faulty) as app, event_held(faulty, "unretryable"):
        response = app.test_client().post("/v1/events", json=event("unretryable"), headers=AUTH)
        assert response.status_code == 202
        wait_until(lambda: lock_waiters(faulty), what="the task to wait on the row")
        with exchanges_deleted(faulty, "ingest", "celery_delayed_27"):
            # A transient error: the task retries, and the retry cannot be published. A lost
            # connection is first run again at once on a fresh one, so it is lost twice.
            cut: set[int] = set()
            for _ in range(2):
                cut |= wait_until(
                    lambda seen=cut: set(lock_waiters(faulty)) - seen,
                    what="the task to wait on the row on a connection not yet cut",
                )
                admin_sql(
                    faulty.postgres_url,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'",
                )
            letter = one_dead_letter(faulty)

    assert letter.reason == "rejected"
    assert letter.queue == PERSIST_QUEUE
    # By id: a pool child of the test before may still run its "deadly" task once more.
    assert "unretryable" not in stored_ids(faulty)

    replayed = invoke(faulty, "dead-letters", "replay")
    assert replayed.exit_code == 0, replayed.output
    wait_until(lambda: "unretryable" in stored_ids(faulty), what="the replayed event stored")
    assert dead_letters(faulty) == []
