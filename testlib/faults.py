"""What the fault tests and the soak share: traffic through the API, what must hold after a
fault, row locks, whose connection is whose."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from flask import Flask
from sqlalchemy import text

from ingest.config import Settings
from ingest_api.app import close_app, create_app
from models import engine_for
from testlib.api import AUTH, event
from testlib.data import projected_ids, rows, scalar, stored_ids
from testlib.wait import wait_until


@contextmanager
def api(settings: Settings) -> Iterator[Flask]:
    """The Flask app for `settings`, its broker connections closed on exit."""
    app = create_app(settings)
    try:
        yield app
    finally:
        close_app(app)


@dataclass
class Traffic:
    """Events posted through the API from several threads, as clients would: mostly single
    events, every fourth request a batch. Records which events got a 202 and which a 503."""

    app: Flask
    prefix: str
    threads: int = 4
    batch_size: int = 10
    # Pause between one thread's requests, to keep a fault test's volume bounded.
    pause: float = 0.0
    acknowledged: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    slowest_refusal: float = 0.0
    unexpected: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def sent(self) -> set[str]:
        return self.acknowledged | self.refused

    def start(self, limit: int | None = None) -> Traffic:
        """Post until stop(), or until `limit` events were sent in all."""
        per_thread = None if limit is None else -(-limit // self.threads)
        for number in range(self.threads):
            worker = threading.Thread(target=self._run, args=(number, per_thread), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self) -> Traffic:
        """Stop posting; fail if a request hung or got an answer other than 202 or 503."""
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=60)
            assert not worker.is_alive(), "a request hung for a minute"
        assert not self.unexpected, self.unexpected[:5]
        return self

    def run(self, limit: int) -> Traffic:
        """Post `limit` events and return when every request was answered."""
        self.start(limit)
        for worker in self._workers:
            worker.join(timeout=600)
        return self.stop()

    def _run(self, number: int, limit: int | None) -> None:
        client = self.app.test_client()
        sent = request = 0
        while not self._stop.is_set() and (limit is None or sent < limit):
            size = self.batch_size if request % 4 == 3 else 1
            if limit is not None:
                size = min(size, limit - sent)
            ids = [f"{self.prefix}-{number}-{sent + i}" for i in range(size)]
            began = time.monotonic()
            if size == 1:
                response = client.post("/v1/events", json=event(ids[0]), headers=AUTH)
            else:
                batch = [event(event_id) for event_id in ids]
                response = client.post("/v1/batch", json={"batch": batch}, headers=AUTH)
            self._record(ids, response.status_code, response.headers, time.monotonic() - began)
            sent += size
            request += 1
            if self.pause:
                time.sleep(self.pause)

    def _record(self, ids: list[str], status: int, headers: Any, seconds: float) -> None:
        with self._lock:
            if status == 202:
                self.acknowledged.update(ids)
            elif status == 503 and headers.get("Retry-After"):
                self.refused.update(ids)
                self.slowest_refusal = max(self.slowest_refusal, seconds)
            else:
                self.unexpected.append(f"{status} for {ids[0]}")


def wait_until_stored(settings: Settings, acknowledged: set[str], timeout: float = 120) -> None:
    """Until every acknowledged event is in PostgreSQL."""
    wait_until(
        lambda: acknowledged <= stored_ids(settings),
        timeout=timeout,
        interval=0.5,
        what=f"{len(acknowledged)} acknowledged events in PostgreSQL",
    )


def assert_stored_exactly_once(settings: Settings, acknowledged: set[str], sent: set[str]) -> None:
    """Every acknowledged event is stored once, and nothing that was not sent. An event answered
    503 may be stored too (the broker took it, but its confirm came too late): the client sends
    it again and the copy is ignored."""
    total = scalar(settings.postgres_url, "SELECT count(*) FROM events")
    distinct = scalar(settings.postgres_url, "SELECT count(DISTINCT event_id) FROM events")
    stored = stored_ids(settings)
    assert total == distinct == len(stored)
    lost = acknowledged - stored
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:5]}"
    assert stored <= sent, f"stored but never sent: {sorted(stored - sent)[:5]}"


def wait_until_projected(settings: Settings, timeout: float = 120) -> None:
    """Until MySQL holds exactly what PostgreSQL holds."""
    try:
        wait_until(
            lambda: projected_ids(settings) == stored_ids(settings), timeout=timeout, interval=0.5
        )
    except AssertionError:
        stored, projected = stored_ids(settings), projected_ids(settings)
        raise AssertionError(
            f"after {timeout}s MySQL lacks {len(stored - projected)} of {len(stored)} stored "
            f"events and holds {len(projected - stored)} others"
        ) from None


@contextmanager
def event_held(settings: Settings, event_id: str) -> Iterator[None]:
    """An uncommitted row with `event_id`: a worker inserting that event waits on its lock
    (in the middle of its task) until the block exits and the row is rolled back."""
    with engine_for(settings.postgres_url).connect() as connection:
        connection.execute(
            text(
                "INSERT INTO events (event_id, event_type, occurred_at, received_at, payload, "
                "payload_sha256) VALUES (:event_id, 'held', now(), now(), '{}', '')"
            ),
            {"event_id": event_id},
        )
        try:
            yield
        finally:
            connection.rollback()


def lock_waiters(settings: Settings) -> list[int]:
    """Client ports of this database's sessions that wait on a lock."""
    return [
        row["client_port"]
        for row in rows(
            settings.postgres_url,
            "SELECT client_port FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
    ]


def process_on_port(port: int) -> int | None:
    """The pid of the local process whose TCP connection has source port `port`, if any is
    left (a killed process leaves its server session behind for a while)."""
    listing = subprocess.run(
        ["ss", "-tnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"pid=(\d+)", listing)
    return int(found.group(1)) if found else None
