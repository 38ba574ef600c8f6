"""Soak run: events over HTTP, with concurrency, while faults strike at random moments.

It starts its own RabbitMQ, PostgreSQL and MariaDB on free ports (testlib.private_servers), the
API as `ingest serve` runs it, a persist worker, a projection worker and celery beat. While
it sends events it kills the persist worker and the projection worker with -9, restarts RabbitMQ,
and takes PostgreSQL and MySQL down for a while, each once, in random order. Then it waits
until the pipeline is quiet and prints what survived. Everything it started is stopped and
removed at the end. The exit status is 0 only when no acknowledged event was lost, no row is
duplicated, MySQL holds what PostgreSQL holds and nothing was dead-lettered.

    .venv/bin/python scripts/soak.py                      # 20,000 events
    .venv/bin/python scripts/soak.py --events 2000 --seconds 45 --outage 8 --seed 7
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, PROJECTION_QUEUE
from testlib.data import dead_letters, scalar, stored_ids
from testlib.private_servers import (
    MariaDBServer,
    PostgresServer,
    RabbitNode,
    private_mariadb,
    private_postgres,
    private_rabbitmq,
)
from testlib.processes import ROOT, VENV_BIN, HttpService, Worker, running_beat, service_env
from testlib.wait import HarnessError, wait_until

API_KEY = "soak-key"
BATCH_SIZE = 10
ATTEMPTS = 60
RETRY_PAUSE = 1.0
# A connection idle for longer may have been closed by the server: it is not reused.
IDLE_REUSE = 1.0
# Seconds the faults other than the two outages take: a RabbitMQ restart, a worker restart.
FAULT_OVERHEAD = 15.0


def event(event_id: str, number: int) -> dict[str, object]:
    return {
        "event_id": event_id,
        "event_type": "order.created",
        "occurred_at": "2026-11-27T10:00:00+01:00",
        "source": "soak",
        "payload": {"order": number, "total": round(number * 0.37, 2), "items": [{"qty": 2}]},
    }


@dataclass
class Answers:
    sent: set[str] = field(default_factory=set)
    acknowledged: set[str] = field(default_factory=set)
    # 503s, and requests that got no answer at all (connection cut): the event was not
    # acknowledged by that request, though the broker may have it.
    refusals: int = 0
    unanswered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, ids: list[str], status: int | None) -> None:
        with self.lock:
            self.sent.update(ids)
            if status == 202:
                self.acknowledged.update(ids)
            elif status == 503:
                self.refusals += 1
            elif status is None:
                self.unanswered += 1
            else:
                raise RuntimeError(f"unexpected HTTP {status} for {ids[0]}")


class Sender(threading.Thread):
    """One client: keep-alive HTTP, single events and every fourth request a batch of ten. Like
    a well-behaved client it sends a request again after a 503 or a cut connection (waiting
    RETRY_PAUSE, shorter than Retry-After so the run keeps moving), at most ATTEMPTS times."""

    def __init__(self, port: int, number: int, count: int, rate: float, answers: Answers):
        super().__init__(name=f"sender-{number}", daemon=True)
        self.port, self.number, self.count, self.rate = port, number, count, rate
        self.answers = answers
        self.failure: Exception | None = None
        self.connection: http.client.HTTPConnection | None = None
        self.used = 0.0

    def run(self) -> None:
        try:
            self._send()
        except Exception as exc:  # noqa: BLE001 - the main thread raises it
            self.failure = exc
        finally:
            if self.connection is not None:
                self.connection.close()

    def _send(self) -> None:
        sent = request = 0
        began = time.monotonic()
        while sent < self.count:
            size = min(BATCH_SIZE if request % 4 == 3 else 1, self.count - sent)
            ids = [f"soak-{self.number}-{sent + i}" for i in range(size)]
            if size == 1:
                path, body = "/v1/events", json.dumps(event(ids[0], sent))
            else:
                path, body = "/v1/batch", json.dumps({"batch": [event(i, sent) for i in ids]})
            for _ in range(ATTEMPTS):
                status = self._post(path, body)
                self.answers.record(ids, status)
                if status == 202:
                    break
                time.sleep(RETRY_PAUSE)
            sent += size
            request += 1
            # Keep to this client's share of the rate.
            time.sleep(max(0.0, began + sent / self.rate - time.monotonic()))

    def _post(self, path: str, body: str) -> int | None:
        if self.connection is not None and time.monotonic() - self.used > IDLE_REUSE:
            self.connection.close()  # the server may be closing it right now
            self.connection = None
        self.connection = self.connection or http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30
        )
        try:
            self.connection.request(
                "POST",
                path,
                body,
                {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"},
            )
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = None
            return None
        finally:
            self.used = time.monotonic()
        return response.status


@dataclass
class Pipeline:
    settings: Settings
    broker: RabbitNode
    postgres: PostgresServer
    mariadb: MariaDBServer
    persist: Worker
    projector: Worker
    outage: float
    answers: Answers
    timeline: list[str] = field(default_factory=list)
    recoveries: list[str] = field(default_factory=list)
    watchers: list[threading.Thread] = field(default_factory=list)

    def faults(self) -> dict[str, Callable[[], None]]:
        return {
            "kill -9 of the persist worker, then a new one": self.kill_worker,
            "kill -9 of the projection worker, then a new one": self.kill_projector,
            "RabbitMQ restart": self.restart_broker,
            "PostgreSQL down": self.postgres_outage,
            "MySQL down": self.mysql_outage,
        }

    def kill_projector(self) -> None:
        self.projector.kill()
        time.sleep(2)
        self.projector = Worker(self.settings, PROJECTION_QUEUE, "projector")

    def kill_worker(self) -> None:
        self.persist.kill()
        time.sleep(2)
        self.persist = Worker(self.settings, PERSIST_QUEUE, "persist")

    def restart_broker(self) -> None:
        self.broker.stop()
        self.broker.start()

    def postgres_outage(self) -> None:
        self.postgres.stop()
        try:
            time.sleep(self.outage)
        finally:
            self.postgres.start()
        with self.answers.lock:
            acknowledged = set(self.answers.acknowledged)
        self.watch(
            f"every event acknowledged by then ({len(acknowledged)}) stored",
            "PostgreSQL came back",
            lambda: acknowledged <= stored_ids(self.settings),
        )

    def mysql_outage(self) -> None:
        self.mariadb.kill()
        try:
            time.sleep(self.outage)
        finally:
            self.mariadb.start()
        stored = count(self.settings.postgres_url, "SELECT count(*) FROM events")
        self.watch(
            f"every event stored by then ({stored}) in MySQL",
            "MySQL came back",
            lambda: (
                count(self.settings.mysql_url, "SELECT count(*) FROM events_projection") >= stored
            ),
        )

    def watch(self, what: str, since: str, done: Callable[[], bool]) -> None:
        """Record, from a thread, how long after `since` the pipeline caught up."""
        began = time.monotonic()

        def wait() -> None:
            while not done():
                time.sleep(0.5)
            self.recoveries.append(f"{what} {time.monotonic() - began:.0f}s after {since}")

        self.watchers.append(threading.Thread(target=wait, daemon=True))
        self.watchers[-1].start()


def strike(pipeline: Pipeline, rng: random.Random, seconds: float, began: float) -> None:
    """Every fault once, in random order, each after a random pause, all within `seconds`."""
    faults = list(pipeline.faults().items())
    rng.shuffle(faults)
    gap = max(1.0, (seconds - 2 * pipeline.outage - FAULT_OVERHEAD) / len(faults))
    for name, fault in faults:
        time.sleep(rng.uniform(0, gap))
        started = time.monotonic() - began
        fault()
        pipeline.timeline.append(
            f"t+{started:.0f}s {name} ({time.monotonic() - began - started:.0f}s)"
        )


@contextmanager
def running_pipeline(
    outage: float, answers: Answers, logs: Path
) -> Iterator[tuple[Pipeline, HttpService]]:
    with ExitStack() as stack:
        broker = stack.enter_context(private_rabbitmq())
        postgres = stack.enter_context(private_postgres())
        mariadb = stack.enter_context(private_mariadb())
        settings = Settings(
            broker_url=broker.url,
            postgres_url=postgres.url,
            mysql_url=mariadb.url,
            api_keys=(API_KEY,),
            reconcile_grace_seconds=5,
            reconcile_interval_seconds=5,
        )
        subprocess.run(
            [str(VENV_BIN / "ingest"), "--env-file", os.devnull, "migrate"],
            cwd=ROOT, env=service_env(settings), check=True, capture_output=True,
        )  # fmt: skip
        pipeline = Pipeline(
            settings, broker, postgres, mariadb, Worker(settings, PERSIST_QUEUE, "persist"),
            Worker(settings, PROJECTION_QUEUE, "projector"), outage, answers,
        )  # fmt: skip
        stack.callback(lambda: pipeline.persist.stop())
        stack.callback(lambda: pipeline.projector.stop())
        stack.enter_context(running_beat(settings))
        api = HttpService("api", serve_command, service_env(settings), logs / "api.log")
        stack.callback(api.stop)
        yield pipeline, api


def serve_command(port: int) -> list[str]:
    """`ingest serve` on `port`."""
    return [
        str(VENV_BIN / "ingest"),
        "--env-file",
        os.devnull,
        "serve",
        "--bind",
        f"127.0.0.1:{port}",
    ]


def count(url: str | None, sql: str) -> int:
    assert url
    return int(scalar(url, sql))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--events", type=int, default=20_000, help="events to send")
    add("--concurrency", type=int, default=16, help="clients sending at once")
    add("--seconds", type=float, default=180.0, help="spread the events over this long")
    add("--outage", type=float, default=30.0, help="seconds PostgreSQL and MySQL stay down")
    add("--quiet-timeout", type=float, default=900.0, help="most seconds to wait for quiet")
    add("--seed", type=int, default=None, help="random seed of the fault order and moments")
    options = parser.parse_args()
    seed = options.seed if options.seed is not None else random.randrange(1_000_000)
    rng = random.Random(seed)
    answers = Answers()
    logs = Path(tempfile.mkdtemp(prefix="ingest-soak-"))

    with running_pipeline(options.outage, answers, logs) as (pipeline, api):
        settings = pipeline.settings
        began = time.monotonic()
        per_client = -(-options.events // options.concurrency)
        senders = [
            Sender(api.port, number, min(per_client, options.events - number * per_client),
                   options.events / options.seconds / options.concurrency, answers)
            for number in range(options.concurrency)
            if options.events - number * per_client > 0
        ]  # fmt: skip
        for sender in senders:
            sender.start()
        strike(pipeline, rng, options.seconds, began)
        for sender in senders:
            sender.join()
            if sender.failure is not None:
                raise sender.failure
        sent_in = time.monotonic() - began
        quiet_from = time.monotonic()

        def quiet() -> bool:
            stored = count(settings.postgres_url, "SELECT count(*) FROM events")
            projected = count(settings.mysql_url, "SELECT count(*) FROM events_projection")
            return answers.acknowledged <= stored_ids(settings) and projected == stored

        try:
            wait_until(quiet, timeout=options.quiet_timeout, interval=1)
            settled_in = f"{time.monotonic() - quiet_from:.0f}"
        except HarnessError:
            settled_in = f"not within {options.quiet_timeout:.0f}"

        for watcher in pipeline.watchers:
            watcher.join(timeout=5)
        stored = stored_ids(settings)
        rows = count(settings.postgres_url, "SELECT count(*) FROM events")
        projected_rows = count(settings.mysql_url, "SELECT count(*) FROM events_projection")
        projected = count(
            settings.mysql_url, "SELECT count(DISTINCT event_id) FROM events_projection"
        )
        letters = dead_letters(settings)
        dead = len(letters)
        dead_reasons = sorted(
            f"{letter.task} {letter.reason} in {letter.queue}" for letter in letters
        )
        lost = len(answers.acknowledged - stored)
        duplicates = rows - len(stored) + projected_rows - projected
        stray = len(stored - answers.sent)

    report = [
        ("seed", seed),
        ("events sent", len(answers.sent)),
        ("acknowledged (202)", len(answers.acknowledged)),
        ("never acknowledged (gave up after retries)", len(answers.sent - answers.acknowledged)),
        ("requests answered 503 (then sent again)", answers.refusals),
        ("requests without an answer (then sent again)", answers.unanswered),
        ("stored in PostgreSQL", len(stored)),
        ("projected into MySQL", projected),
        ("duplicate rows", duplicates),
        ("lost (acknowledged, not stored)", lost),
        ("stored but never sent", stray),
        ("dead-lettered", f"{dead} {dead_reasons[:5] if dead else ''}".strip()),
        ("seconds sending", f"{sent_in:.0f}"),
        ("seconds to full projection after the last event", settled_in),
    ]
    width = max(len(name) for name, _ in report)
    for name, value in report:
        print(f"{name:<{width}}  {value}")
    print("faults:")
    for line in pipeline.timeline:
        print(f"  {line}")
    for line in pipeline.recoveries:
        print(f"  {line}")
    print(f"logs: {logs}, {pipeline.persist.log.parent}/persist-*.log, projector-*.log")
    healthy = (
        lost == 0 and duplicates == 0 and stray == 0 and dead == 0 and projected == len(stored)
    )
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
