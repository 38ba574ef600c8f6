"""The shared PostgreSQL, MariaDB and RabbitMQ on this machine, and databases and vhosts of one
run's own on them, dropped when the run ends (also when it fails).

Only DROP/CREATE DATABASE and vhosts of the given names: nothing else on the servers changes.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from sqlalchemy import create_engine, text

from ingest.config import Settings
from models.engines import sqlalchemy_url
from testlib.wait import HarnessError, wait_until


@dataclass(frozen=True)
class SharedServers:
    """How to reach the shared servers as their administrator."""

    postgres_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    mysql_admin_url: str = "mysql://root@127.0.0.1:3306/"
    broker: str = "guest:guest@127.0.0.1:5672"  # user:password@host:port

    @classmethod
    def from_env(cls) -> SharedServers:
        """The servers the tests use: the defaults, or INGEST_TEST_POSTGRES_URL,
        INGEST_TEST_MYSQL_URL and INGEST_TEST_BROKER."""
        return cls(
            postgres_admin_url=os.environ.get("INGEST_TEST_POSTGRES_URL", cls.postgres_admin_url),
            mysql_admin_url=os.environ.get("INGEST_TEST_MYSQL_URL", cls.mysql_admin_url),
            broker=os.environ.get("INGEST_TEST_BROKER", cls.broker),
        )

    @property
    def broker_url(self) -> str:
        """The broker's default vhost."""
        return f"amqp://{self.broker}//"

    @property
    def management_api(self) -> str:
        """RabbitMQ's management API on the broker's node, as the broker's user."""
        return f"http://{self.broker.replace('5672', '15672')}/api/"


def with_database(url: str, database: str) -> str:
    """`url` (a server's URL, with or without a database) naming `database` instead."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


def with_vhost(broker_url: str, vhost: str) -> str:
    return urlunsplit(urlsplit(broker_url)._replace(path=f"/{vhost}"))


def admin_sql(url: str, *statements: str) -> None:
    """Run each statement outside a transaction, on a connection of its own."""
    engine = create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    except Exception as exc:
        raise RuntimeError(f"cannot reach the test server at {url}: {exc}") from exc
    finally:
        engine.dispose()


def rabbitmqctl(*args: str, timeout: float = 120) -> str:
    """rabbitmqctl on the shared node; fails loudly when it does."""
    try:
        result = subprocess.run(
            ["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        raise HarnessError(f"rabbitmqctl {' '.join(args)} took more than {timeout:.0f}s") from None
    if result.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr or result.stdout}")
    return result.stdout


def management_api_up(servers: SharedServers) -> bool:
    try:
        return requests.get(servers.management_api + "overview", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def enable_management_api(servers: SharedServers) -> str:
    """RabbitMQ's management API. Enabling the plugin on the shared node only adds a listener on
    15672 (and stays enabled); nothing else of the node changes."""
    if not management_api_up(servers):
        subprocess.run(
            ["rabbitmq-plugins", "enable", "rabbitmq_management"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        wait_until(lambda: management_api_up(servers), timeout=60, what="the management API")
    return servers.management_api


@contextmanager
def isolated_databases(servers: SharedServers, name: str) -> Iterator[tuple[str, str]]:
    """Empty PostgreSQL and MySQL databases called `name`; yields their URLs."""
    postgres_url = with_database(servers.postgres_admin_url, name)
    mysql_url = with_database(servers.mysql_admin_url, name)
    with ExitStack() as cleanup:
        # Each drop is registered before its create: a create that half happened is undone.
        cleanup.callback(
            admin_sql, servers.postgres_admin_url, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )
        admin_sql(
            servers.postgres_admin_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"
        )
        cleanup.callback(admin_sql, servers.mysql_admin_url, f"DROP DATABASE IF EXISTS {name}")
        admin_sql(
            servers.mysql_admin_url, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}"
        )
        yield postgres_url, mysql_url


@contextmanager
def isolated_vhost(broker_url: str, vhost: str) -> Iterator[str]:
    """A vhost of its own on the node of `broker_url`, open to that URL's user; yields its URL."""
    user = unquote(urlsplit(broker_url).username or "guest")
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield with_vhost(broker_url, vhost)
    finally:
        rabbitmqctl("delete_vhost", vhost)


@contextmanager
def isolated_settings(servers: SharedServers, name: str, base: Settings) -> Iterator[Settings]:
    """`base` on databases called `name` and a vhost of that name (with dashes), unmigrated."""
    with (
        isolated_databases(servers, name) as (postgres_url, mysql_url),
        isolated_vhost(servers.broker_url, name.replace("_", "-")) as broker_url,
    ):
        yield base.replace(broker_url=broker_url, postgres_url=postgres_url, mysql_url=mysql_url)
