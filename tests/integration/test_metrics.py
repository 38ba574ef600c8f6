"""GET /metrics: what the API answered, summed over the server's workers; pipeline figures read at
scrape time; task outcomes served by the workers themselves."""

from __future__ import annotations

import os
import random
import signal
import string
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from flask.testing import FlaskClient
from kombu import Connection, Producer
from prometheus_client.parser import text_string_to_metric_families

from ingest.config import Settings
from ingest.contract import (
    DEAD_LETTER_EXCHANGE,
    DEAD_QUEUE_DECLARATION,
    PERSIST_EVENT,
    PERSIST_EVENTS,
    PERSIST_QUEUE,
    PROJECT_TO_MYSQL,
    PROJECTION_QUEUE,
)
from ingest_api.app import close_app, create_app
from ingest_api.metrics import PAGE_MAX_AGE
from models import engine_for
from testlib.api import AUTH, event
from testlib.data import projected_count, stored_count
from testlib.processes import Worker, running_api
from testlib.wait import free_port, wait_until


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(metrics: dict, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled counter that has not been incremented yet."""
    return metrics.get((name, frozenset(labels.items())), 0.0)


def scrape(client: FlaskClient) -> dict:
    response = client.get("/metrics")  # no key: Prometheus scrapes without one
    assert response.status_code == 200
    return parse(response.get_data(as_text=True))


def scrape_when(
    scraper: Callable[[], dict], name: str, expected: float, **labels: str
) -> dict | None:
    """The scraped metrics once `name` has reached `expected`, else None."""
    metrics = scraper()
    return metrics if value(metrics, name, **labels) == expected else None


def scrape_showing(client: FlaskClient, what: str, **expected: float) -> dict:
    """The first scrape of the app's metrics in which each named figure has its value."""

    def showing() -> dict | None:
        metrics = scrape(client)
        held = all(value(metrics, name) == figure for name, figure in expected.items())
        return metrics if held else None

    return wait_until(showing, what=what)


def requests_of(metrics: dict, method: str, route: str, status: int) -> float:
    return value(
        metrics,
        "ingest_http_request_duration_seconds_count",
        method=method,
        route=route,
        status=str(status),
    )


def test_requests_and_events_are_counted_as_they_were_answered(
    client: FlaskClient, pipeline: Settings
) -> None:
    before = scrape(client)
    oversize = event("m-big", payload={"blob": "x" * pipeline.max_event_bytes})
    batch = [event("m-2"), event("m-3"), event("m-bad", occurred_at="yesterday"), oversize]

    assert client.post("/v1/events", json=event("m-1"), headers=AUTH).status_code == 202
    assert (
        client.post("/v1/events", json=event("m-x", event_type=""), headers=AUTH).status_code == 422
    )
    assert client.post("/v1/events", json=event("m-y")).status_code == 401
    assert client.post("/v1/events", json=oversize, headers=AUTH).status_code == 413
    answer = client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
    assert answer.status_code == 202
    assert answer.json["accepted"] == 2
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("ingest_events_accepted_total") == 3
    assert delta("ingest_events_rejected_total", reason="invalid") == 2
    assert delta("ingest_events_rejected_total", reason="too_large") == 2
    assert delta("ingest_events_rejected_total", reason="unauthorized") == 1
    assert delta("ingest_publish_failures_total") == 0
    for method, route, status in [
        ("POST", "/v1/events", 202),
        ("POST", "/v1/events", 422),
        ("POST", "/v1/events", 401),
        ("POST", "/v1/events", 413),
        ("POST", "/v1/batch", 202),
    ]:
        assert (
            requests_of(after, method, route, status) - requests_of(before, method, route, status)
            == 1
        ), (method, route, status)
    seconds = delta(
        "ingest_http_request_duration_seconds_sum", method="POST", route="/v1/batch", status="202"
    )
    assert 0 < seconds < 10
    # What was counted as accepted is what arrives (and leaves nothing in flight for the next test).
    wait_until(lambda: projected_count(pipeline) == 3, what="the 3 accepted events in MySQL")
    assert stored_count(pipeline) == 3


def request_series(metrics: dict) -> set[frozenset[tuple[str, str]]]:
    """The label sets of the request histogram: one time series each."""
    return {
        labels for name, labels in metrics if name == "ingest_http_request_duration_seconds_count"
    }


def test_invented_http_methods_add_at_most_one_series(client: FlaskClient) -> None:
    """Any token of 3 to 20 letters is a method to an HTTP server; each one must not be a new
    series in every scrape from then on."""
    invented = [
        "".join(random.Random(n).choices(string.ascii_uppercase, k=3 + n % 18)) for n in range(50)
    ]
    assert len(set(invented) - {"GET", "PUT", "POST"}) == 50
    # The methods HTTP defines keep their own name.
    assert client.open("/v1/events", method="DELETE").status_code == 405
    scrape(client)  # the scrape's own series exists from here on
    before = scrape(client)
    assert requests_of(before, "DELETE", "<unmatched>", 405) >= 1
    for method in invented:
        assert client.open("/v1/events", method=method).status_code == 405, method
    after = scrape(client)

    added = request_series(after) - request_series(before)
    assert len(added) <= 1, sorted(added)
    other = requests_of(after, "other", "<unmatched>", 405)
    assert other - requests_of(before, "other", "<unmatched>", 405) == 50


def test_pipeline_figures_are_read_from_the_databases_and_the_broker(
    client: FlaskClient, pipeline: Settings
) -> None:
    for n in range(3):
        assert client.post("/v1/events", json=event(f"p-{n}"), headers=AUTH).status_code == 202
    wait_until(lambda: projected_count(pipeline) == 3, what="3 events in MySQL")
    # The figures are read at most every FIGURES_MAX_AGE seconds.
    metrics = scrape_showing(
        client,
        "3 stored events, none pending",
        ingest_events_stored=3,
        ingest_projection_pending=0,
    )
    assert value(metrics, "ingest_projection_lag_seconds") == 0
    assert value(metrics, "ingest_dead_letter_messages") == 0

    # An event stored two minutes ago that nothing projected, and one parked message.
    with engine_for(pipeline.postgres_url).begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO events (event_id, event_type, occurred_at, received_at, stored_at,"
            " payload, payload_sha256) VALUES ('late', 't', now(), now() - interval '121 seconds',"
            " now() - interval '120 seconds', '{}', 'x')"
        )
    with Connection(pipeline.broker_url) as connection:
        Producer(connection).publish(
            {"poison": True},
            exchange=DEAD_LETTER_EXCHANGE,
            routing_key=PERSIST_QUEUE,
            declare=[DEAD_QUEUE_DECLARATION],
        )

    # The broker's figure and the databases' are cached apart: either may be read first.
    metrics = scrape_showing(
        client,
        "the parked message and the late event in the figures",
        ingest_dead_letter_messages=1,
        ingest_events_stored=4,
    )
    assert value(metrics, "ingest_projection_pending") == 1
    assert 120 <= value(metrics, "ingest_projection_lag_seconds") < 180


def test_a_publish_the_broker_did_not_confirm_is_counted(settings: Settings) -> None:
    app = create_app(settings.replace(broker_url="amqp://guest:guest@127.0.0.1:1//"))
    try:
        client = app.test_client()
        before = scrape(client)
        assert client.post("/v1/events", json=event("f-1"), headers=AUTH).status_code == 503
        after = scrape(client)
    finally:
        close_app(app)
    assert (
        value(after, "ingest_publish_failures_total")
        - value(before, "ingest_publish_failures_total")
        == 1
    )
    assert value(after, "ingest_events_accepted_total") == value(
        before, "ingest_events_accepted_total"
    )
    assert (
        requests_of(after, "POST", "/v1/events", 503)
        - requests_of(before, "POST", "/v1/events", 503)
        == 1
    )


def healthz_count(url: str) -> float:
    response = requests.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    return requests_of(parse(response.text), "GET", "/healthz", 200)


def test_counters_add_up_over_server_workers_even_after_one_dies(
    settings: Settings, tmp_path: Path
) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # Left over from an earlier run: it must not be added in (nor break the scrape).
    (metrics_dir / "counter_999999.db").write_bytes(b"\0" * 16)

    with running_api(settings, workers=3, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as api:
        baseline = healthz_count(api.url)
        # Concurrent requests on fresh connections reach every worker, so all of them answer some.
        with ThreadPoolExecutor(max_workers=6) as pool:
            statuses = list(
                pool.map(lambda _: requests.get(f"{api.url}/healthz", timeout=10).status_code,
                         range(120))
            )  # fmt: skip
        assert statuses == [200] * 120
        pids = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("histogram_*.db")}
        assert len(pids) >= 2, "the requests should have been spread over several workers"
        assert 999999 not in {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("*.db")}
        # Whichever worker answers the scrape, the total is the same, once each worker's sums
        # page is renewed (every PAGE_MAX_AGE seconds at most).
        time.sleep(PAGE_MAX_AGE)
        assert [healthz_count(api.url) for _ in range(6)] == [baseline + 120] * 6

        workers = children(api.process.pid)
        victim = sorted(pids & set(workers))[0]
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(children(api.process.pid)) == 3 and victim not in children(api.process.pid),
            what="the server to replace the killed worker",
        )
        assert [healthz_count(api.url) for _ in range(6)] == [baseline + 120] * 6
        for line in api.json_lines():  # every line the server and the app wrote is JSON
            assert {"time", "level", "logger", "message"} <= line.keys()


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(child) for child in found.stdout.split()]


def test_workers_serve_task_outcomes(clean: Settings, private_vhost: Settings) -> None:
    # The run's emptied databases behind a vhost that only this test's workers consume.
    persist_port, projector_port = free_port(), free_port()
    persist = Worker(
        private_vhost, PERSIST_QUEUE, "persist", INGEST_WORKER_METRICS_PORT=str(persist_port)
    )
    projector = None
    app = create_app(private_vhost)
    try:
        projector = Worker(
            private_vhost,
            PROJECTION_QUEUE,
            "projector",
            INGEST_WORKER_METRICS_PORT=str(projector_port),
        )
        client = app.test_client()
        for n in range(3):  # one after the other: each is its own persist_event
            assert client.post("/v1/events", json=event(f"t-{n}"), headers=AUTH).status_code == 202
        batch = {"batch": [event("t-3"), event("t-4")]}
        assert client.post("/v1/batch", json=batch, headers=AUTH).status_code == 202
        wait_until(lambda: projected_count(private_vhost) == 5, what="5 events in MySQL")
        assert stored_count(private_vhost) == 5

        def tasks(port: int) -> dict:
            return parse(requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)

        persisted = wait_until(
            lambda: scrape_when(
                lambda: tasks(persist_port),
                "ingest_tasks_total",
                1,
                task=PERSIST_EVENTS,
                outcome="success",
            ),
            what="the batch task in the persist worker's metrics",
        )
        single = {"task": PERSIST_EVENT}
        assert value(persisted, "ingest_tasks_total", **single, outcome="success") == 3
        assert value(persisted, "ingest_task_duration_seconds_count", **single) == 3
        projection = {"task": PROJECT_TO_MYSQL}
        # The persist worker gathers the ids of tasks that end close together into one
        # projection: 1 to 4 projections for these 4 messages.
        projected = wait_until(
            lambda: (
                (figures := tasks(projector_port))
                and 1 <= value(figures, "ingest_tasks_total", **projection, outcome="success") <= 4
                and figures
            ),
            what="the projections in the projector's metrics",
        )
        assert value(projected, "ingest_tasks_total", **projection, outcome="failure") == 0
    finally:
        close_app(app)
        persist.stop()
        if projector is not None:
            projector.stop()


SCRAPE_PAUSE = 0.5
# 50 loops in a process of their own: in the test's process their threads would slow the
# POSTing threads themselves, and that delay is not the server's. Each answer must be a 200;
# the count of answers is printed when stdin closes.
SCRAPERS = """
import sys, threading, requests
url, pause = sys.argv[1], float(sys.argv[2])
stop, answers = threading.Event(), []
def scrape(path):
    with requests.Session() as session:
        while not stop.wait(pause):
            response = session.get(url + path, timeout=10)
            assert response.status_code == 200, (path, response.status_code)
            answers.append(path)
loops = [threading.Thread(target=scrape, args=("/metrics" if n % 2 else "/readyz",))
         for n in range(50)]
for loop in loops:
    loop.start()
print("scraping", flush=True)
sys.stdin.read()
stop.set()
for loop in loops:
    loop.join(timeout=30)
print(len(answers), flush=True)
"""


def test_a_scrape_storm_leaves_posts_on_time(pipeline: Settings) -> None:
    """50 loops scraping /metrics or asking /readyz twice a second each while events are
    sent: the figures are read once per interval per process, however many ask, so POSTs keep
    their pace."""
    with running_api(pipeline) as api:
        post_latencies(api.url, "warm-up", count=40)  # each worker connects to the broker
        quiet = post_latencies(api.url, "quiet")
        with subprocess.Popen(
            [sys.executable, "-c", SCRAPERS, api.url, str(SCRAPE_PAUSE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as scrapers:
            assert scrapers.stdout and scrapers.stdout.readline() == "scraping\n"
            began = time.monotonic()
            try:
                stormy = post_latencies(api.url, "storm")
            finally:
                storm_seconds = time.monotonic() - began
                answers, _ = scrapers.communicate(timeout=60)
        assert scrapers.returncode == 0
        # Each loop asks twice a second, less the time its answers take.
        assert int(answers) >= 50 * storm_seconds / SCRAPE_PAUSE / 2, answers
    quiet_p99, stormy_p99 = percentile(quiet, 99), percentile(stormy, 99)
    print(f"POST p99: {quiet_p99 * 1000:.1f} ms quiet, {stormy_p99 * 1000:.1f} ms in the storm")
    assert stormy_p99 <= 2 * quiet_p99
    # Every acknowledged event stored, and none left in flight for the next test.
    sent = 40 + len(quiet) + len(stormy)
    wait_until(
        lambda: stored_count(pipeline) == sent, timeout=120, what=f"the {sent} events stored"
    )


def post_latencies(url: str, prefix: str, count: int = 1600) -> list[float]:
    """Seconds each of `count` POSTs took, from 4 clients."""

    def send(client: int) -> list[float]:
        taken = []
        with requests.Session() as session:
            for n in range(count // 4):
                began = time.monotonic()
                response = session.post(
                    f"{url}/v1/events", json=event(f"{prefix}-{client}-{n}"), headers=AUTH
                )
                taken.append(time.monotonic() - began)
                assert response.status_code == 202
        return taken

    with ThreadPoolExecutor(4) as pool:
        return [seconds for taken in pool.map(send, range(4)) for seconds in taken]


def percentile(values: list[float], quantile: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(quantile / 100 * len(ordered)))]
