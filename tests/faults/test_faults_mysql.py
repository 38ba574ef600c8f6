"""MySQL out of reach, and fault 6: the projection's publish refused while MySQL is down for
longer than the projection's retries. PostgreSQL never waits for MySQL; the reconciler
completes the projection once MySQL is back, past a row MySQL refuses for good."""

from __future__ import annotations

import json
import time

import pytest
from flask import Flask

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, PROJECT_TO_MYSQL, PROJECTION_QUEUE
from ingest_cli.maintenance import migrate
from tasks.celery import create_celery
from testlib.api import READ_AUTH, event
from testlib.data import dead_letters, projected_ids, reset, stored_count
from testlib.faults import (
    Traffic,
    api,
    assert_stored_exactly_once,
    wait_until_projected,
    wait_until_stored,
)
from testlib.poison import persist_as_sent, refusals, too_deep_for_mariadb
from testlib.private_servers import MariaDBServer, RabbitNode
from testlib.processes import running_beat, running_worker, running_workers
from testlib.wait import wait_until

pytestmark = pytest.mark.slow

REFUSE_PUBLISHES = json.dumps({"max-length": 0, "overflow": "reject-publish"})


@pytest.fixture
def faulty(settings: Settings, broker: RabbitNode, mariadb: MariaDBServer) -> Settings:
    ours = settings.replace(broker_url=broker.url, mysql_url=mariadb.url)
    migrate(ours)
    reset(ours)
    return ours


def seconds_to_store(app: Flask, settings: Settings, prefix: str, count: int) -> float:
    """Post `count` events and return how long until all of them were in PostgreSQL."""
    began = time.monotonic()
    traffic = Traffic(app, prefix).run(limit=count)
    assert len(traffic.acknowledged) == count
    wait_until_stored(settings, traffic.acknowledged)
    return time.monotonic() - began


def given_up(worker_log: str) -> set[str]:
    """Event ids whose projection ran out of retries, from the worker's JSON log lines."""
    ids: set[str] = set()
    for line in worker_log.splitlines():
        if line.startswith("{") and "Projection retries ran out" in line:
            ids.update(json.loads(line)["event_ids"])
    return ids


def test_with_mysql_unreachable_events_land_in_postgres_at_full_speed(
    faulty: Settings, mariadb: MariaDBServer
) -> None:
    with api(faulty) as app, running_workers(faulty), running_beat(faulty):
        with_mysql = seconds_to_store(app, faulty, "up", 1000)
        wait_until_projected(faulty)

        mariadb.pause()  # connections hang rather than fail: the harder case
        try:
            without_mysql = seconds_to_store(app, faulty, "down", 1000)
            assert stored_count(faulty) == 2000
        finally:
            mariadb.resume()
        wait_until_projected(faulty)

    print(f"1000 events stored in {with_mysql:.1f}s with MySQL, {without_mysql:.1f}s without")
    assert without_mysql <= 2 * with_mysql + 2


def test_a_refused_projection_publish_and_a_long_mysql_outage_are_repaired(
    faulty: Settings, broker: RabbitNode, mariadb: MariaDBServer
) -> None:
    # More retries than Celery's default cap of 3, which must not be the one that counts.
    faulty = faulty.replace(projection_max_retries=4)
    mariadb.kill()
    try:
        with api(faulty) as app, running_worker(faulty, PERSIST_QUEUE, "persist") as persist:
            # A quorum queue refuses publishes only while it is over its length: one message
            # that nobody consumes yet keeps it over a max-length of 0.
            celery = create_celery(faulty)
            celery.send_task(PROJECT_TO_MYSQL, args=[[]])
            celery.close()
            with broker.policy("refuse-projection", r"^ingest\.projection$", REFUSE_PUBLISHES):
                refused = Traffic(app, "refused").run(limit=200)
                wait_until_stored(faulty, refused.acknowledged)
                assert broker.queue_depths()[PROJECTION_QUEUE] == (1, 0)
            assert "Could not publish the projection" in persist.output()

            with (
                running_worker(faulty, PROJECTION_QUEUE, "projector") as projector,
                running_beat(faulty),
            ):
                # Publishes go through again, and meet a MySQL that stays down longer than the
                # projection's retries.
                retried = Traffic(app, "retried").run(limit=100)
                wait_until_stored(faulty, retried.acknowledged)
                wait_until(
                    lambda: retried.acknowledged <= given_up(projector.output()),
                    timeout=60,
                    what="the projection to run out of retries",
                )
                # What GET /v1/events/<id> says meanwhile: stored, MySQL not readable.
                some_id = min(retried.acknowledged)
                status = app.test_client().get(f"/v1/events/{some_id}", headers=READ_AUTH).json
                assert (status["status"], status["projection"]) == ("stored", "unknown")

                mariadb.start()
                wait_until_projected(faulty)
    finally:
        if not mariadb.running():
            mariadb.start()

    acknowledged = refused.acknowledged | retried.acknowledged
    assert_stored_exactly_once(faulty, acknowledged, acknowledged)
    assert projected_ids(faulty) == acknowledged
    assert dead_letters(faulty) == []


def test_a_refused_row_after_a_long_mysql_outage_holds_back_none_of_the_others(
    faulty: Settings, mariadb: MariaDBServer
) -> None:
    mariadb.kill()
    try:
        with (
            api(faulty) as app,
            running_worker(faulty, PERSIST_QUEUE, "persist"),
            running_worker(faulty, PROJECTION_QUEUE, "projector") as projector,
        ):
            before = Traffic(app, "before").run(limit=100)
            # One message, one row in it that MySQL will refuse, among good ones.
            batch = [event(f"batch-{number}") for number in range(9)]
            batch.insert(4, event("poisoned", payload=too_deep_for_mariadb()))
            persist_as_sent(faulty, batch)
            sent = before.acknowledged | {item["event_id"] for item in batch}
            wait_until_stored(faulty, sent)
            wait_until(
                lambda: sent <= given_up(projector.output()),
                timeout=60,
                what="the projection to run out of retries",
            )

            mariadb.start()
            with running_beat(faulty):
                after = Traffic(app, "after").run(limit=50)
                sent |= after.acknowledged
                good = sent - {"poisoned"}
                wait_until(
                    lambda: projected_ids(faulty) == good,
                    timeout=120,
                    interval=0.5,
                    what="every good event in MySQL",
                )
            status = app.test_client().get("/v1/events/poisoned", headers=READ_AUTH).json
    finally:
        if not mariadb.running():
            mariadb.start()

    assert_stored_exactly_once(faulty, sent, sent)
    assert refusals(faulty) == {"poisoned": 4025}
    assert (status["projection"], status["refusal"]["error_code"]) == ("refused", 4025)
    assert dead_letters(faulty) == []
