"""Faults 1 and 2: workers killed with -9 mid-task, again and again, and a crash between the
projection's publish and the ack. Every confirmed event is stored exactly once and projected
once, and no healthy message is parked for having been in flight at the crashes."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, PROJECTION_QUEUE
from models import engine_for
from testlib.api import AUTH, event
from testlib.data import dead_letters, rows, stored_count
from testlib.faults import (
    Traffic,
    api,
    assert_stored_exactly_once,
    event_held,
    lock_waiters,
    process_on_port,
    wait_until_projected,
    wait_until_stored,
)
from testlib.private_servers import RabbitNode
from testlib.processes import Worker, running_worker, running_workers
from testlib.wait import wait_until

pytestmark = pytest.mark.slow


def test_kill_9_of_a_pool_child_mid_task_loses_nothing(faulty: Settings) -> None:
    # Pool children exist with INGEST_WORKER_POOL=prefork; the default runs threads.
    with api(faulty) as app, running_workers(faulty, INGEST_WORKER_POOL="prefork") as (persist, _):
        with event_held(faulty, "held-child"):
            response = app.test_client().post("/v1/events", json=event("held-child"), headers=AUTH)
            assert response.status_code == 202
            [port] = wait_until(lambda: lock_waiters(faulty), what="the task to wait on the row")
            child = process_on_port(port)
            assert child in persist.pool_children()
            traffic = Traffic(app, "child").start(limit=400)

            os.kill(child, signal.SIGKILL)

            # The worker requeues the message of its lost child and runs it again.
            wait_until(
                lambda: set(map(process_on_port, lock_waiters(faulty))) - {child, None},
                what="the redelivered task to wait on the row again",
            )
        traffic.stop()
        acknowledged = traffic.acknowledged | {"held-child"}

        wait_until_stored(faulty, acknowledged)
        assert_stored_exactly_once(faulty, acknowledged, traffic.sent | acknowledged)
        wait_until_projected(faulty)
    assert "signal 9 (SIGKILL)" in persist.output()
    assert dead_letters(faulty) == []


def test_kill_9_of_the_whole_worker_then_a_restart_loses_nothing(faulty: Settings) -> None:
    with api(faulty) as app, running_workers(faulty) as (persist, _):
        traffic = Traffic(app, "worker", pause=0.01).start()
        with event_held(faulty, "held-worker"):
            response = app.test_client().post("/v1/events", json=event("held-worker"), headers=AUTH)
            assert response.status_code == 202
            wait_until(lambda: lock_waiters(faulty), what="a task to wait on the row")
            wait_until(lambda: stored_count(faulty) >= 200, what="the run to be under way")

            persist.kill()  # main process and pool children, mid-task

        stored_at_kill = stored_count(faulty)
        with running_worker(faulty, PERSIST_QUEUE, "persist"):
            wait_until(
                lambda: stored_count(faulty) >= stored_at_kill + 200,
                what="the run to go on after the restart",
            )
            traffic.stop()
            acknowledged = traffic.acknowledged | {"held-worker"}
            wait_until_stored(faulty, acknowledged)
            assert_stored_exactly_once(faulty, acknowledged, traffic.sent | acknowledged)
            wait_until_projected(faulty)
    print(f"worker killed with {stored_at_kill} of {len(traffic.acknowledged)} events stored")
    assert stored_at_kill < len(traffic.acknowledged)
    assert dead_letters(faulty) == []


def test_a_crash_between_the_projection_publish_and_the_ack_projects_once(
    faulty: Settings, broker: RabbitNode
) -> None:
    # With pool children, the main process that acks can be frozen while a child publishes.
    with api(faulty) as app, running_workers(faulty, INGEST_WORKER_POOL="prefork") as (persist, _):
        with event_held(faulty, "crash-after-link"):
            response = app.test_client().post(
                "/v1/events", json=event("crash-after-link"), headers=AUTH
            )
            assert response.status_code == 202
            wait_until(lambda: lock_waiters(faulty), what="the task to wait on the row")
            # The worker's main process sends the acks: frozen, it cannot ack what its
            # pool child finishes once the row is released.
            os.kill(persist.process.pid, signal.SIGSTOP)
        try:
            projected = wait_until(
                lambda: rows(
                    faulty.mysql_url or "", "SELECT event_id, projected_at FROM events_projection"
                ),
                what="the projection published by the frozen worker's child to be applied",
            )
            wait_until(
                lambda: broker.queue_depths()[PERSIST_QUEUE] == (0, 1),
                timeout=5,
                what="the broker to report the message delivered and not acknowledged",
            )
        finally:
            persist.kill()

        wait_until(
            lambda: broker.queue_depths()[PERSIST_QUEUE] == (1, 0),
            what="the broker to take the unacknowledged message back",
        )
        with running_worker(faulty, PERSIST_QUEUE, "persist"):
            # The redelivered message inserts nothing new; its projection finds MySQL has it.
            wait_until(
                lambda: (
                    broker.queue_depths()[PERSIST_QUEUE] == (0, 0)
                    and broker.queue_depths()[PROJECTION_QUEUE] == (0, 0)
                ),
                what="the redelivered message to be done",
            )

    assert rows(faulty.postgres_url, "SELECT event_id FROM events") == [
        {"event_id": "crash-after-link"}
    ]
    # Applied once: MySQL still holds the row of the first projection, untouched.
    assert [row["event_id"] for row in projected] == ["crash-after-link"]
    assert rows(faulty.mysql_url or "", "SELECT event_id, projected_at FROM events_projection") == (
        projected
    )
    assert dead_letters(faulty) == []


KILL_ROUNDS = 12


@contextmanager
def inserts_held(settings: Settings) -> Iterator[None]:
    """Every insert into `events` waits (a table lock) until the block exits: a worker started
    meanwhile takes its prefetched messages and finishes none of them."""
    with engine_for(settings.postgres_url).connect() as connection:
        connection.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()


def test_twelve_kill_9s_of_the_persist_worker_park_no_healthy_message(
    faulty: Settings, broker: RabbitNode
) -> None:
    with api(faulty) as app:
        traffic = Traffic(app, "rounds", pause=0.05).start()
        wait_until(
            lambda: broker.queue_depths()[PERSIST_QUEUE][0] >= 200, what="a backlog to build"
        )
        # The worst case for the messages at the head of the queue: each crash hands them back
        # (the broker counts a delivery), and the next worker gets them first, again.
        with inserts_held(faulty):
            for _ in range(KILL_ROUNDS):
                worker = Worker(faulty, PERSIST_QUEUE, "persist")
                try:
                    wait_until(lambda: lock_waiters(faulty), what="inserts waiting on the lock")
                    in_flight = broker.queue_depths()[PERSIST_QUEUE][1]
                finally:
                    worker.kill()
                assert in_flight > 0
        traffic.stop()
        parked = dead_letters(faulty)
        assert not parked, f"{len(parked)} healthy messages parked: {parked[0].describe()}"

        with running_workers(faulty):
            wait_until_stored(faulty, traffic.acknowledged)
            assert_stored_exactly_once(faulty, traffic.acknowledged, traffic.sent)
            wait_until_projected(faulty)
    print(
        f"{KILL_ROUNDS} kill -9 rounds, {in_flight} messages in flight at each: "
        f"{len(parked)} parked, {len(traffic.acknowledged)} events stored"
    )
    assert dead_letters(faulty) == []
