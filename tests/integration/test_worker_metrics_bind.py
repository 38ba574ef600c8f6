"""A worker's task metrics have no login: they listen on 127.0.0.1 unless told otherwise."""

from __future__ import annotations

import subprocess

import pytest

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE
from testlib.processes import Worker
from testlib.wait import free_port, wait_until


def listening_on(port: int) -> list[str]:
    """The local addresses with a TCP socket listening on `port`."""
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    return [line.split()[3] for line in listing.splitlines()]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "127.0.0.1"), ({"INGEST_WORKER_METRICS_ADDRESS": "0.0.0.0"}, "0.0.0.0")],
    ids=["default", "widened"],
)
def test_worker_metrics_listen_on_loopback_unless_widened(
    settings: Settings, env: dict[str, str], expected: str
) -> None:
    port = free_port()
    worker = Worker(settings, PERSIST_QUEUE, "persist", INGEST_WORKER_METRICS_PORT=str(port), **env)
    try:
        addresses = wait_until(lambda: listening_on(port), what="the metrics server")
    finally:
        worker.stop()

    assert addresses == [f"{expected}:{port}"]
