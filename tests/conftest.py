"""Fixtures for the tests that need servers: the real ones on this machine, one database and one
RabbitMQ vhost per test run, real worker subprocesses.

A server that is not running makes these fixtures fail loudly; nothing is skipped. Helpers and
constants live in testlib/, shared with the scripts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ingest.config import Settings
from ingest_api.app import close_app, create_app
from ingest_cli.maintenance import migrate
from models import dispose_engines
from testlib.api import ADMIN_KEY, API_KEY, READ_KEY
from testlib.data import reset
from testlib.processes import Worker, running_workers
from testlib.servers import (
    SharedServers,
    enable_management_api,
    isolated_settings,
    isolated_vhost,
)


@pytest.fixture(scope="session")
def shared_servers() -> SharedServers:
    """The machine's PostgreSQL, MariaDB and RabbitMQ, or those INGEST_TEST_* name."""
    return SharedServers.from_env()


@pytest.fixture(scope="session")
def management_api(shared_servers: SharedServers) -> str:
    """RabbitMQ's management API (Flower's broker tab, create-roles)."""
    return enable_management_api(shared_servers)


@pytest.fixture(scope="session")
def settings(shared_servers: SharedServers) -> Iterator[Settings]:
    """Settings for this run: its own databases and vhost, migrated, dropped at the end."""
    base = Settings(
        api_keys=(API_KEY,),
        read_keys=(READ_KEY,),
        admin_keys=(ADMIN_KEY,),
        reconcile_grace_seconds=1,
        reconcile_interval_seconds=2,
        projection_max_retries=2,
    )
    with isolated_settings(shared_servers, f"ingest_test_{os.getpid()}", base) as settings:
        migrate(settings)
        yield settings
        dispose_engines()


@pytest.fixture
def private_vhost(settings: Settings) -> Iterator[Settings]:
    """The run's databases and a RabbitMQ vhost of this test's own, with no worker on it."""
    vhost = f"{settings.broker_url.rsplit('/', 1)[1]}-private"
    with isolated_vhost(settings.broker_url, vhost) as broker_url:
        yield settings.replace(broker_url=broker_url)


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    app = create_app(settings)
    yield app
    close_app(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def clean(settings: Settings) -> Settings:
    """Empty tables and queues."""
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
