"""Fault 5: PostgreSQL down for a minute mid-run, or read-only for a while (a failover onto a
standby, `default_transaction_read_only`). The API keeps accepting, persist retries with
backoff and no cap, every event is stored once PostgreSQL takes writes again, nothing is
dead-lettered.

The broker here has a 5 s consumer_timeout, so the retries (delays up to 60 s) also show
fault 8 under real load: no worker holds a message while it waits."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ingest.config import Settings
from ingest_api.health import READINESS_MAX_AGE
from ingest_cli.maintenance import migrate
from testlib.data import dead_letters, reset, stored_count
from testlib.faults import (
    Traffic,
    api,
    assert_stored_exactly_once,
    wait_until_projected,
    wait_until_stored,
)
from testlib.private_servers import PostgresServer, RabbitNode, private_rabbitmq
from testlib.processes import running_beat, running_workers
from testlib.servers import admin_sql
from testlib.wait import wait_until

pytestmark = pytest.mark.slow

OUTAGE_SECONDS = 60
# Celery's default max_retries: a task retried more often than this has no small cap.
CELERY_DEFAULT_MAX_RETRIES = 3


@pytest.fixture(scope="module")
def broker() -> Iterator[RabbitNode]:
    with private_rabbitmq(consumer_timeout_ms=5000) as node:
        yield node


@pytest.fixture
def faulty(settings: Settings, postgres: PostgresServer, broker: RabbitNode) -> Settings:
    ours = settings.replace(broker_url=broker.url, postgres_url=postgres.url)
    migrate(ours)
    reset(ours)
    return ours


def retries_by_task(worker_log: str) -> dict[str, int]:
    """How often each task was retried, from the worker's JSON task lines."""
    retries: dict[str, int] = defaultdict(int)
    for line in worker_log.splitlines():
        record = json.loads(line) if line.startswith("{") else {}
        if record.get("outcome") == "retry":
            retries[record["task_id"]] = max(retries[record["task_id"]], record["retries"] + 1)
    return retries


def test_a_postgres_outage_mid_run_is_retried_with_backoff_and_loses_nothing(
    faulty: Settings, postgres: PostgresServer
) -> None:
    with api(faulty) as app, running_workers(faulty) as (persist, _), running_beat(faulty):
        client = app.test_client()
        traffic = Traffic(app, "outage", pause=0.2).start()
        wait_until(lambda: stored_count(faulty) >= 200, what="the run to be under way")

        postgres.stop()  # immediate: a crash, connections cut
        try:
            accepted_at_stop = len(traffic.acknowledged)
            # Readiness is checked at most every READINESS_MAX_AGE seconds per process.
            ready = wait_until(
                lambda: (answer := client.get("/readyz")).status_code == 503 and answer,
                timeout=READINESS_MAX_AGE + 10,
                what="/readyz to say PostgreSQL is down",
            )
            time.sleep(OUTAGE_SECONDS)
            accepted_during_outage = len(traffic.acknowledged) - accepted_at_stop
        finally:
            postgres.start()
        recovered = time.monotonic()
        traffic.stop()

        # Retries back off to at most 60 s, so the backlog clears within about a minute.
        wait_until_stored(faulty, traffic.acknowledged, timeout=120)
        print(f"stored every event {time.monotonic() - recovered:.1f}s after the recovery")
        assert_stored_exactly_once(faulty, traffic.acknowledged, traffic.sent)
        # Projections that ran out of retries during the outage are the reconciler's.
        wait_until_projected(faulty)
        assert persist.process.poll() is None

    assert ready.status_code == 503
    assert ready.json["checks"] == {"postgres": "down", "broker": "ok"}
    assert accepted_during_outage > 100, "the API stopped accepting while PostgreSQL was down"
    assert not traffic.refused
    assert dead_letters(faulty) == []

    retries = retries_by_task(persist.output())
    print(
        f"postgres outage: {accepted_during_outage} events accepted during it, "
        f"{len(retries)} tasks retried, at most {max(retries.values(), default=0)} times"
    )
    assert retries, "no task was retried"
    # No small retry cap, and backoff: a minute of outage is a handful of tries, not a spin.
    assert max(retries.values()) > CELERY_DEFAULT_MAX_RETRIES
    assert max(retries.values()) <= 15
    assert "PRECONDITION_FAILED" not in persist.output()


READ_ONLY_SECONDS = 5


@contextmanager
def read_only(postgres: PostgresServer, database: str) -> Iterator[None]:
    """`database` read-only, as a standby after a failover is: every session, new or pooled,
    gets SQLSTATE 25006 on a write until the block exits."""
    # The admin session works from another database, so the setting never binds it.
    admin = postgres.url.rsplit("/", 1)[0] + "/template1"
    admin_sql(admin, f"ALTER DATABASE {database} SET default_transaction_read_only = on")
    try:
        # Sessions read the setting when they start: end the pooled ones.
        admin_sql(
            admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        )
        yield
    finally:
        admin_sql(admin, f"ALTER DATABASE {database} RESET default_transaction_read_only")
        admin_sql(
            admin,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()",
        )


def test_a_read_only_postgres_mid_run_is_retried_and_dead_letters_nothing(
    faulty: Settings, postgres: PostgresServer
) -> None:
    database = faulty.postgres_url.rsplit("/", 1)[1]
    with api(faulty) as app, running_workers(faulty) as (persist, _):
        traffic = Traffic(app, "read-only", pause=0.05).start()
        wait_until(lambda: stored_count(faulty) >= 200, what="the run to be under way")

        with read_only(postgres, database):
            stored_before = stored_count(faulty)
            time.sleep(READ_ONLY_SECONDS)
            # Read while writes are refused: a reader's session is read-only too, and fine.
            stored_during = stored_count(faulty) - stored_before
        traffic.stop()

        wait_until_stored(faulty, traffic.acknowledged, timeout=120)
        assert_stored_exactly_once(faulty, traffic.acknowledged, traffic.sent)
        wait_until_projected(faulty)
        assert persist.process.poll() is None

    # PostgreSQL's own log says what it refused.
    refusals = (
        (postgres.base / "pg.log")
        .read_text()
        .count("cannot execute INSERT in a read-only transaction")
    )
    retries = retries_by_task(persist.output())
    print(
        f"read-only for {READ_ONLY_SECONDS}s: {len(traffic.acknowledged)} events acknowledged, "
        f"{refusals} inserts refused, {len(retries)} tasks retried, "
        f"{stored_during} stored meanwhile"
    )
    assert stored_during == 0, "PostgreSQL took writes while read-only"
    assert refusals > 0 and retries, "no insert met the read-only database"
    assert not traffic.refused
    assert dead_letters(faulty) == []
