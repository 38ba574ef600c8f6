"""One reconciler at a time: beat ticks every 2 s while one run is held up for about 20 s by a
MariaDB that stops answering (SIGSTOP) in the middle of it. The run that holds PostgreSQL's
advisory lock goes on; every other tick returns at once, and no event is projected twice."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from ingest.canonical import compact_json
from ingest.config import Settings
from ingest.contract import PROJECTION_QUEUE, RECONCILE_PROJECTION
from ingest_cli.maintenance import migrate
from tasks.persist import store_events
from tasks.projection import RECONCILE_LOCK
from testlib.api import event
from testlib.data import dead_letters, projected_count, reset, scalar
from testlib.faults import wait_until_projected
from testlib.private_servers import MariaDBServer
from testlib.processes import Worker, running_beat
from testlib.wait import wait_until

pytestmark = pytest.mark.slow

EVENTS = 4000
# Small chunks: a run goes on chunk after chunk for its whole budget (the beat interval).
CHUNK_SIZE = 20
HELD_SECONDS = 18


@pytest.fixture
def faulty(private_vhost: Settings, mariadb: MariaDBServer) -> Settings:
    """The run's PostgreSQL database, a private MariaDB, and a vhost that only this test's
    projector consumes (the run's own workers must not take its beat ticks)."""
    ours = private_vhost.replace(mysql_url=mariadb.url)
    migrate(ours)
    reset(ours)
    return ours


def reconciler_running(settings: Settings) -> bool:
    """Whether a session holds the reconciler's advisory lock (a bigint key below 2**32)."""
    return bool(
        scalar(
            settings.postgres_url,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = 0 AND objid = :key",
            key=RECONCILE_LOCK,
        )
    )


def task_lines(worker_log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in worker_log.splitlines() if line.startswith("{")]


def test_beat_ticks_during_a_long_reconcile_return_at_once_and_project_nothing_twice(
    faulty: Settings, mariadb: MariaDBServer
) -> None:
    received_at = datetime.now(UTC).isoformat()
    batch = [{**event(f"reconcile-{n}"), "received_at": received_at} for n in range(EVENTS)]
    store_events(faulty.postgres_url, [e["event_id"] for e in batch], compact_json(batch))
    time.sleep(faulty.reconcile_grace_seconds)

    projector = Worker(
        faulty, PROJECTION_QUEUE, "projector", INGEST_RECONCILE_CHUNK_SIZE=str(CHUNK_SIZE)
    )
    try:
        with running_beat(faulty):
            wait_until(
                lambda: projected_count(faulty) > 0 and reconciler_running(faulty),
                timeout=60,
                what="a reconcile run under way",
            )
            mariadb.pause()
            try:
                time.sleep(HELD_SECONDS)
            finally:
                mariadb.resume()
            wait_until_projected(faulty, timeout=180)
    finally:
        projector.stop()

    lines = task_lines(projector.output())
    durations = {
        line["task_id"]: line["duration_ms"] / 1000
        for line in lines
        if line.get("task") == RECONCILE_PROJECTION and line["message"] == "task"
    }
    stepped_aside = {
        line["task_id"] for line in lines if line["message"].startswith("Another reconciler")
    }
    worked = {
        line["task_id"]: line["projected"]
        for line in lines
        if line["message"] == "Reconciled the projection"
    }
    long_runs = [task_id for task_id, seconds in durations.items() if seconds > HELD_SECONDS - 3]
    print(
        f"{len(durations)} ticks: {len(worked)} ran (longest {max(durations.values()):.1f}s), "
        f"{len(stepped_aside)} stepped aside (slowest "
        f"{max(durations[task_id] for task_id in stepped_aside):.2f}s)"
    )
    assert len(long_runs) == 1, "one run held up by MariaDB"
    assert long_runs[0] in worked
    # Beat ticked every 2 s meanwhile: each of those ticks saw the lock taken and returned.
    assert len(stepped_aside) >= HELD_SECONDS // 2 - 2
    assert all(durations[task_id] < 1 for task_id in stepped_aside)
    assert not stepped_aside & set(worked)
    # Runs never took the same chunk: together they projected each event once.
    assert sum(worked.values()) == EVENTS
    assert projected_count(faulty) == EVENTS
    assert dead_letters(faulty) == []
