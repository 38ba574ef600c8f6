"""Faults 3, 4 and 8 on a private RabbitMQ: stopped, blocked by a memory alarm, restarted
mid-run, and a delay longer than its consumer_timeout."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from ingest.canonical import utc_now
from ingest.config import Settings
from ingest.contract import PERSIST_EVENT, PERSIST_QUEUE, PROJECT_TO_MYSQL, PROJECTION_QUEUE
from ingest_api.events import message_event
from ingest_api.health import READINESS_MAX_AGE
from ingest_api.schemas import EventSchema
from ingest_api.server import THREADS as API_THREADS
from tasks.celery import create_celery
from testlib.api import AUTH, READ_AUTH, event
from testlib.data import dead_letters, reset, stored_count, stored_ids
from testlib.faults import (
    Traffic,
    api,
    assert_stored_exactly_once,
    wait_until_projected,
    wait_until_stored,
)
from testlib.private_servers import RabbitNode, private_rabbitmq
from testlib.processes import running_api, running_beat, running_worker, running_workers
from testlib.wait import wait_until

pytestmark = pytest.mark.slow

PUBLISH_TIMEOUT = Settings.publish_timeout
# Scheduling noise on a shared 2-core machine, on top of the publish timeout.
SLACK = 1.0
CONSUMER_TIMEOUT_MS = 5000


def test_with_the_broker_stopped_posts_answer_503_in_time_and_readyz_is_503(
    faulty: Settings, broker: RabbitNode
) -> None:
    with api(faulty) as app:
        client = app.test_client()
        # A pooled broker connection exists when the broker goes away.
        assert client.post("/v1/events", json=event("before-stop"), headers=AUTH).status_code == 202
        assert client.get("/readyz").status_code == 200

        broker.stop()
        try:
            traffic = Traffic(app, "stopped", threads=8).run(limit=80)
            # Readiness is checked at most every READINESS_MAX_AGE seconds per process.
            ready, readyz_seconds = wait_until(
                lambda: (answer := timed_get(client, "/readyz"))[0].status_code == 503 and answer,
                timeout=READINESS_MAX_AGE + PUBLISH_TIMEOUT + SLACK,
                what="/readyz to say the broker is down",
            )
        finally:
            broker.start()

        print(
            f"broker stopped: slowest 503 {traffic.slowest_refusal:.2f}s, "
            f"/readyz {readyz_seconds:.2f}s"
        )
        assert traffic.acknowledged == set()
        assert len(traffic.refused) == 80
        assert traffic.slowest_refusal <= PUBLISH_TIMEOUT + SLACK
        assert ready.status_code == 503
        assert ready.json["checks"] == {"postgres": "ok", "broker": "down"}
        assert readyz_seconds <= PUBLISH_TIMEOUT + SLACK

        assert client.post("/v1/events", json=event("after-start"), headers=AUTH).status_code == 202
        wait_until(
            lambda: client.get("/readyz").status_code == 200,
            timeout=READINESS_MAX_AGE + SLACK,
            what="/readyz to say ready again",
        )


def timed_get(client: FlaskClient, path: str) -> tuple[TestResponse, float]:
    began = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - began


def test_with_a_memory_alarm_posts_answer_503_in_time_never_202(
    faulty: Settings, broker: RabbitNode
) -> None:
    with api(faulty) as app, running_workers(faulty):
        client = app.test_client()
        assert (
            client.post("/v1/events", json=event("before-alarm"), headers=AUTH).status_code == 202
        )

        with broker.memory_alarm():
            blocked = Traffic(app, "alarm", threads=8).run(limit=40)

        print(f"memory alarm: slowest 503 {blocked.slowest_refusal:.2f}s")
        assert blocked.acknowledged == set()
        assert len(blocked.refused) == 40
        # Each waited for a confirm that did not come, and no longer than the timeout.
        assert PUBLISH_TIMEOUT <= blocked.slowest_refusal <= PUBLISH_TIMEOUT + SLACK

        after = Traffic(app, "after-alarm").run(limit=40)
        assert len(after.acknowledged) == 40
        acknowledged = after.acknowledged | {"before-alarm"}
        wait_until_stored(faulty, acknowledged)
        assert_stored_exactly_once(faulty, acknowledged, acknowledged | blocked.refused)
        wait_until_projected(faulty)
    assert dead_letters(faulty) == []


def test_single_events_waiting_for_a_blocked_broker_hold_no_thread_of_the_server(
    faulty: Settings, broker: RabbitNode
) -> None:
    """Through the server as it runs in production: more single events than it has app threads
    wait for confirms that do not come, and a status read is answered at once meanwhile."""
    waiting = 3 * API_THREADS  # one worker: three times its app threads
    with running_workers(faulty), running_api(faulty, workers=1) as server:
        assert post_event(server.url, "before-alarm").status_code == 202
        wait_until_stored(faulty, {"before-alarm"})

        with broker.memory_alarm(), ThreadPoolExecutor(waiting) as pool:
            posts = [pool.submit(post_event, server.url, f"blocked-{n}") for n in range(waiting)]
            time.sleep(0.5)  # every POST is in the server, waiting for its confirm
            started = time.monotonic()
            status = requests.get(f"{server.url}/v1/events/before-alarm", headers=READ_AUTH)
            read_seconds = time.monotonic() - started
            unanswered = sum(not post.done() for post in posts)
            answers = [post.result() for post in posts]

    print(f"status read during the alarm: {read_seconds:.3f}s, {unanswered} POSTs waiting")
    assert status.status_code == 200
    assert unanswered == waiting
    assert read_seconds < SLACK
    assert [answer.status_code for answer in answers] == [503] * waiting
    assert all(answer.elapsed.total_seconds() <= PUBLISH_TIMEOUT + SLACK for answer in answers)
    assert_stored_exactly_once(faulty, {"before-alarm"}, {"before-alarm"} | blocked_ids(waiting))


def post_event(url: str, event_id: str) -> requests.Response:
    return requests.post(f"{url}/v1/events", json=event(event_id), headers=AUTH, timeout=30)


def blocked_ids(count: int) -> set[str]:
    return {f"blocked-{n}" for n in range(count)}


def test_a_broker_restart_mid_run_loses_nothing_and_duplicates_nothing(
    faulty: Settings, broker: RabbitNode
) -> None:
    with api(faulty) as app, running_workers(faulty), running_beat(faulty):
        traffic = Traffic(app, "restart", pause=0.02).start()
        wait_until(lambda: stored_count(faulty) >= 300, what="the run to be under way")

        broker.stop()
        broker.start()

        restarted_with = len(traffic.acknowledged)
        wait_until(
            lambda: len(traffic.acknowledged) >= restarted_with + 300,
            timeout=60,
            what="the API to accept events again",
        )
        wait_until(
            lambda: stored_count(faulty) >= restarted_with + 300,
            timeout=60,
            what="the workers to store events again",
        )
        traffic.stop()

        print(
            f"broker restart: {len(traffic.acknowledged)} acknowledged, "
            f"{len(traffic.refused)} answered 503 while it was down"
        )
        assert traffic.refused, "the restart did not hit the run"
        wait_until_stored(faulty, traffic.acknowledged)
        assert_stored_exactly_once(faulty, traffic.acknowledged, traffic.sent)
        wait_until_projected(faulty)
    assert dead_letters(faulty) == []


def test_a_delay_longer_than_the_consumer_timeout_leaves_the_worker_running(
    settings: Settings,
) -> None:
    """Retries publish the task again with a countdown. On quorum queues Celery sends it through
    the broker's delay queues, so no worker holds an unacknowledged message meanwhile; a worker
    holding it past consumer_timeout would lose its channel (celery#6760)."""
    delay = 3 * CONSUMER_TIMEOUT_MS / 1000
    with private_rabbitmq(consumer_timeout_ms=CONSUMER_TIMEOUT_MS) as node:
        ours = settings.replace(broker_url=node.url)
        reset(ours)
        with running_worker(ours, PERSIST_QUEUE, "persist") as persist:
            celery = create_celery(ours)
            sent_at = time.monotonic()
            celery.send_task(
                PERSIST_EVENT,
                args=[
                    message_event(EventSchema().load(event("delayed")), utc_now().isoformat(), None)
                ],
                countdown=delay,
            )
            celery.close()
            wait_until(
                lambda: stored_ids(ours) == {"delayed"},
                timeout=delay + 30,
                what="the delayed task to run",
            )
            ran_after = time.monotonic() - sent_at

            # The worker kept its channel: it takes new work at once.
            with api(ours) as app:
                response = app.test_client().post("/v1/events", json=event("fresh"), headers=AUTH)
            assert response.status_code == 202
            wait_until(lambda: stored_ids(ours) == {"delayed", "fresh"}, timeout=10)
            assert persist.process.poll() is None

    assert ran_after >= delay
    log = persist.output()
    assert "PRECONDITION_FAILED" not in log
    assert "Connection to broker lost" not in log


def test_a_worker_first_on_a_fresh_broker_binds_every_queue_for_delayed_delivery(
    settings: Settings,
) -> None:
    """Celery binds the work queues to its delay exchanges once, at worker start, and only
    those that exist by then; a delayed message for an unbound queue would be dropped."""
    with private_rabbitmq() as node:
        ours = settings.replace(broker_url=node.url)
        with running_worker(ours, PERSIST_QUEUE, "persist"):
            celery = create_celery(ours)
            celery.send_task(PROJECT_TO_MYSQL, args=[["not-stored"]], countdown=1)
            celery.close()
            wait_until(
                lambda: node.queue_depths().get(PROJECTION_QUEUE) == (1, 0),
                timeout=15,
                what="the delayed message in ingest.projection",
            )
