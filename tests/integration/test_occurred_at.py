"""occurred_at: the range both stores hold, leap seconds, and a PostgreSQL in another time zone.

A database whose `timezone` is ahead of UTC hands 9999-12-31T23:59:59Z back as a time in the
year 10000, which Python cannot hold: the API's GET and the projection failed on such an event.
The test below runs the whole pipeline against a database set to Asia/Tokyo.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from kombu import Connection
from sqlalchemy import create_engine, text

from ingest.config import Settings
from ingest.contract import declare_topology
from ingest_api.app import close_app, create_app
from ingest_cli.dead_letters import peek
from ingest_cli.maintenance import migrate
from models import engine_for
from models.engines import sqlalchemy_url
from testlib.api import AUTH, READ_AUTH, assert_problem, event
from testlib.data import projected_count, rows
from testlib.processes import VENV_BIN, running_workers, service_env
from testlib.servers import SharedServers, admin_sql, isolated_settings
from testlib.wait import wait_until

ZONE = "Asia/Tokyo"
RANGE = (
    "The time is out of range: in UTC it must be from 1000-01-01T00:00:00Z to "
    "9999-12-31T23:59:59.999999Z, the times both PostgreSQL and MySQL hold."
)
LEAP = "A leap second (:60) exists only at 23:59:60 UTC on the last day of a month."
# Accepted: what was sent, and the UTC time both databases must hold for it.
ACCEPTED = {
    "last-second": ("9999-12-31T23:59:59Z", datetime(9999, 12, 31, 23, 59, 59)),
    "max": ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999_999)),
    "max-west": ("9999-12-31T22:59:59.999999-01:00", datetime(9999, 12, 31, 23, 59, 59, 999_999)),
    "min": ("1000-01-01T00:00:00Z", datetime(1000, 1, 1)),
    "min-east": ("1000-01-01T09:00:00+09:00", datetime(1000, 1, 1)),
    # A leap second is stored as the next second, as PostgreSQL itself takes it.
    "leap": ("2016-12-31T23:59:60Z", datetime(2017, 1, 1)),
    "leap-west": ("2016-12-31T15:59:60.5-08:00", datetime(2017, 1, 1, 0, 0, 0, 500_000)),
}
# Refused with a 422 naming occurred_at: what was sent, and the error.
REFUSED = {
    "0001-01-01T00:00:00Z": RANGE,
    "0999-12-31T23:59:59.999999Z": RANGE,
    "1000-01-01T00:30:00+01:00": RANGE,  # 0999-12-31T23:30:00Z
    "9999-12-31T23:59:59-00:01": RANGE,  # the year 10000 in UTC
    "9999-12-31T23:59:60Z": RANGE,  # its next second is the year 10000
    "2016-12-30T23:59:60Z": LEAP,
    "2016-06-30T12:00:60Z": LEAP,
}


@pytest.fixture(scope="module")
def tokyo(shared_servers: SharedServers, settings: Settings) -> Iterator[Settings]:
    """Databases and a vhost of their own, the PostgreSQL database set to Asia/Tokyo."""
    name = f"ingest_tokyo_{os.getpid()}"
    with isolated_settings(shared_servers, name, settings) as own:
        # Only this test's database: the server and every other database keep their time zone.
        admin_sql(
            shared_servers.postgres_admin_url, f"ALTER DATABASE {name} SET timezone TO '{ZONE}'"
        )
        try:
            migrate(own)
            with Connection(own.broker_url) as connection:
                declare_topology(connection)
            yield own
        finally:
            for url in (own.postgres_url, own.mysql_url or ""):
                engine_for(url).dispose()


@pytest.fixture(scope="module")
def api(tokyo: Settings) -> Iterator[FlaskClient]:
    app = create_app(tokyo)
    yield app.test_client()
    close_app(app)


def database_time_zone(url: str) -> str:
    """The time zone a connection without ingest's options gets: the database's own."""
    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as connection:
            return connection.execute(text("SHOW timezone")).scalar_one()
    finally:
        engine.dispose()


@pytest.mark.parametrize(("occurred_at", "error"), REFUSED.items())
def test_a_time_outside_what_both_stores_hold_is_a_422_that_says_why(
    api: FlaskClient, occurred_at: str, error: str
) -> None:
    response = api.post("/v1/events", json=event("out-1", occurred_at=occurred_at), headers=AUTH)

    body = assert_problem(response, 422)
    assert body["errors"] == {"occurred_at": [error]}


def test_with_postgres_in_tokyo_time_the_bounds_are_stored_projected_and_read_back(
    api: FlaskClient, tokyo: Settings, tmp_path: Path
) -> None:
    assert database_time_zone(tokyo.postgres_url) == ZONE  # the fault is in place
    batch = [event(event_id, occurred_at=sent) for event_id, (sent, _) in ACCEPTED.items()]

    with running_workers(tokyo):
        response = api.post("/v1/batch", json={"batch": batch}, headers=AUTH)
        assert response.status_code == 202
        assert response.json["accepted"] == len(ACCEPTED)
        wait_until(
            lambda: projected_count(tokyo) == len(ACCEPTED),
            timeout=60,
            what=f"all {len(ACCEPTED)} events in MySQL",
        )
        for event_id in ACCEPTED:
            status = api.get(f"/v1/events/{event_id}", headers=READ_AUTH)
            assert status.status_code == 200, (event_id, status.get_data(as_text=True))
            assert status.json["event_id"] == event_id

    expected = {event_id: stored for event_id, (_, stored) in ACCEPTED.items()}
    in_postgres = rows(
        tokyo.postgres_url,
        "SELECT event_id, occurred_at AT TIME ZONE 'UTC' AS utc FROM events",
    )
    assert {row["event_id"]: row["utc"] for row in in_postgres} == expected
    assert mysql_times(tokyo) == expected
    with Connection(tokyo.broker_url) as connection:
        dead, _ = peek(connection, limit=10)
    assert dead == 0, "a message was dead-lettered"

    # The reconciler reads the same rows: MySQL lost them all, and it puts them back as they were.
    admin_sql(tokyo.mysql_url or "", "DELETE FROM events_projection")
    reconciled = subprocess.run(
        [str(VENV_BIN / "ingest"), "reconcile", "--since", "0", "--from-start"],
        cwd=tmp_path,  # no .env here
        env=service_env(tokyo),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert reconciled.returncode == 0, reconciled.stderr
    assert f"Projected {len(ACCEPTED)} events" in reconciled.stdout
    assert mysql_times(tokyo) == expected


def mysql_times(settings: Settings) -> dict[str, datetime]:
    """Each event's occurred_at as MySQL holds it: UTC, without an offset."""
    found = rows(settings.mysql_url or "", "SELECT event_id, occurred_at FROM events_projection")
    return {row["event_id"]: row["occurred_at"] for row in found}
