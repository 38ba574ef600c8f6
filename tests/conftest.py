"""Real servers, one database and one RabbitMQ vhost per test run, real worker subprocesses.

A server that is not running makes these fixtures fail loudly; nothing is skipped.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from kombu import Connection
from sqlalchemy import create_engine, text

from ingest.config import Settings
from ingest.contract import DEAD_QUEUE_DECLARATION, WORK_QUEUES, declare_topology
from ingest_api.app import create_app
from ingest_cli.maintenance import migrate
from models import dispose_engines, engine_for
from models.engines import sqlalchemy_url
from tests.support import Worker, running_workers, wait_until

POSTGRES_ADMIN_URL = os.environ.get(
    "INGEST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MYSQL_ADMIN_URL = os.environ.get("INGEST_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/")
BROKER_HOST = os.environ.get("INGEST_TEST_BROKER", "guest:guest@127.0.0.1:5672")
API_KEY = "test-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
# A read key: event status and /openapi.json; the write key above only sends.
READ_KEY = "test-read-key"
READ_AUTH = {"Authorization": f"Bearer {READ_KEY}"}


# RabbitMQ's management API on the shared node (Flower's broker tab, create-roles).
MANAGEMENT_API = f"http://{BROKER_HOST.replace('5672', '15672')}/api/"


def management_api_up() -> bool:
    try:
        return requests.get(MANAGEMENT_API + "overview", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@pytest.fixture(scope="session")
def management_api() -> str:
    """RabbitMQ's management API. Enabling the plugin on the shared node only adds a listener on
    15672 (and stays enabled); nothing else of the node changes."""
    if not management_api_up():
        subprocess.run(
            ["rabbitmq-plugins", "enable", "rabbitmq_management"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_until(management_api_up, timeout=60, what="RabbitMQ's management API")
    return MANAGEMENT_API


def admin_sql(url: str, *statements: str) -> None:
    engine = create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    except Exception as exc:
        raise RuntimeError(f"cannot reach the test server at {url}: {exc}") from exc
    finally:
        engine.dispose()


def _rabbitmqctl(*args: str) -> None:
    result = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}")


@pytest.fixture(scope="session")
def settings() -> Iterator[Settings]:
    """Settings for this run: its own databases and vhost, dropped at the end."""
    name = f"ingest_test_{os.getpid()}"
    vhost = name.replace("_", "-")
    admin_sql(POSTGRES_ADMIN_URL, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    admin_sql(MYSQL_ADMIN_URL, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    settings = Settings(
        broker_url=f"amqp://{BROKER_HOST}/{vhost}",
        postgres_url=POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        mysql_url=MYSQL_ADMIN_URL.rstrip("/") + f"/{name}",
        api_keys=(API_KEY,),
        read_keys=(READ_KEY,),
        reconcile_grace_seconds=1,
        reconcile_interval_seconds=2,
        projection_max_retries=2,
    )
    migrate(settings)
    yield settings
    dispose_engines()
    admin_sql(POSTGRES_ADMIN_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin_sql(MYSQL_ADMIN_URL, f"DROP DATABASE IF EXISTS {name}")
    _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture
def private_vhost(settings: Settings) -> Iterator[Settings]:
    """The run's databases and a RabbitMQ vhost of this test's own, with no worker on it."""
    vhost = f"{settings.broker_url.rsplit('/', 1)[1]}-private"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield settings.replace(broker_url=settings.broker_url.rsplit("/", 1)[0] + f"/{vhost}")
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    app.extensions["ingest.publisher"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def reset(settings: Settings) -> None:
    """Empty both tables and every queue."""
    with engine_for(settings.postgres_url).begin() as connection:
        connection.execute(text("TRUNCATE events, projection_checkpoint, projection_refusals"))
    assert settings.mysql_url
    with engine_for(settings.mysql_url).begin() as connection:
        connection.execute(text("TRUNCATE events_projection"))
    with Connection(settings.broker_url) as connection:
        declare_topology(connection)
        channel = connection.default_channel
        for queue in (*WORK_QUEUES, DEAD_QUEUE_DECLARATION):
            queue.bind(channel).purge()


@pytest.fixture
def clean(settings: Settings) -> Settings:
    reset(settings)
    return settings


@pytest.fixture(scope="session")
def workers(settings: Settings) -> Iterator[tuple[Worker, Worker]]:
    """A persist worker and a projection worker for the whole run."""
    with running_workers(settings) as pair:
        yield pair


@pytest.fixture
def pipeline(workers: tuple[Worker, Worker], clean: Settings) -> Settings:
    """Running workers and empty tables and queues."""
    return clean


def event(event_id: str, **fields: Any) -> dict[str, Any]:
    """A valid event; `fields` override or add to it."""
    return {
        "event_id": event_id,
        "event_type": "order.created",
        "occurred_at": "2026-11-27T10:00:00+01:00",
        "source": "shop",
        "payload": {"order_id": event_id, "total": 12.5, "items": [{"sku": "A-1", "qty": 2}]},
        **fields,
    }
