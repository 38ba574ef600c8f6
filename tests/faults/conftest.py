"""Fixtures of the fault tests: private servers a test may stop, kill or pause, one of each per
module, and the run's settings moved onto them. A module that needs its server set up otherwise
(a consumer timeout) or more than the private broker in `faulty` defines its own of that name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ingest.config import Settings
from testlib.data import reset
from testlib.private_servers import (
    MariaDBServer,
    PostgresServer,
    RabbitNode,
    private_mariadb,
    private_postgres,
    private_rabbitmq,
)


@pytest.fixture(scope="module")
def broker() -> Iterator[RabbitNode]:
    with private_rabbitmq() as node:
        yield node


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDBServer]:
    with private_mariadb() as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with private_postgres() as server:
        yield server


@pytest.fixture
def faulty(settings: Settings, broker: RabbitNode) -> Settings:
    """The run's databases on the private broker, everything empty."""
    ours = settings.replace(broker_url=broker.url)
    reset(ours)
    return ours
