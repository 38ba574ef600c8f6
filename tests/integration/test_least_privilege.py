"""The service runs here as the accounts `ingest create-roles` makes, and they can do no more.

Each test run makes, on the local servers and with their administrators' logins, a PostgreSQL
role and a MySQL user of its own that may only read and write rows, the databases' owners that
run the migrations, and a RabbitMQ user with permissions on one vhost: the same command the
compose file's `roles` step runs. Everything it made is removed afterwards.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from amqp.exceptions import NotAllowed
from kombu import Connection
from kombu.utils.url import url_to_parts
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ingest.config import Settings
from ingest.contract import PERSIST_QUEUE, PROJECTION_QUEUE
from ingest_cli.maintenance import migrate
from models import dispose_engines
from models.engines import sqlalchemy_url
from testlib.api import AUTH, READ_AUTH, event
from testlib.data import projected_count, rows, scalar, stored_count
from testlib.processes import VENV_BIN, running_api, running_workers, service_env
from testlib.servers import SharedServers, admin_sql
from testlib.wait import wait_until

# SQLSTATE insufficient_privilege; MySQL's "command denied to user".
POSTGRES_DENIED = "42501"
MYSQL_DENIED = 1142


@dataclass(frozen=True)
class Accounts:
    app: Settings  # what every ingest process runs with: the least-privileged accounts
    owner: Settings  # the databases' owners, as `migrate` runs
    app_user: str
    owner_user: str
    vhost: str


def create_roles(environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """`ingest create-roles` as an operator runs it, in a folder without a .env."""
    return subprocess.run(
        [str(VENV_BIN / "ingest"), "create-roles"],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def accounts(
    shared_servers: SharedServers, settings: Settings, management_api: str
) -> Iterator[Accounts]:
    name = f"ingest_least_{os.getpid()}"
    app_user, owner_user, vhost = f"{name}_app", f"{name}_owner", name.replace("_", "-")
    app_password, owner_password = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    broker_address = shared_servers.broker.rsplit("@", 1)[1]

    def database_url(admin: str, user: str, password: str) -> str:
        url = make_url(admin).set(username=user, password=password, database=name)
        return url.render_as_string(hide_password=False)

    app = settings.replace(
        broker_url=f"amqp://{app_user}:{app_password}@{broker_address}/{vhost}",
        postgres_url=database_url(shared_servers.postgres_admin_url, app_user, app_password),
        mysql_url=database_url(shared_servers.mysql_admin_url, app_user, app_password),
    )
    owner = settings.replace(
        postgres_url=database_url(shared_servers.postgres_admin_url, owner_user, owner_password),
        mysql_url=database_url(shared_servers.mysql_admin_url, owner_user, owner_password),
    )
    environment = service_env(
        app,
        POSTGRES_ADMIN_URL=shared_servers.postgres_admin_url,
        MYSQL_ADMIN_URL=shared_servers.mysql_admin_url,
        RABBITMQ_ADMIN_URL=management_api,
        POSTGRES_OWNER_URL=owner.postgres_url,
        MYSQL_OWNER_URL=str(owner.mysql_url),
    )
    try:
        with tempfile.TemporaryDirectory() as directory:  # no .env there
            result = create_roles(environment, Path(directory))
        assert result.returncode == 0, result.stdout + result.stderr
        migrate(owner)
        yield Accounts(app, owner, app_user, owner_user, vhost)
    finally:
        dispose_engines()
        admin_sql(
            shared_servers.postgres_admin_url,
            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)",
            f"DROP ROLE IF EXISTS {app_user}",
            f"DROP ROLE IF EXISTS {owner_user}",
        )
        admin_sql(
            shared_servers.mysql_admin_url,
            f"DROP DATABASE IF EXISTS {name}",
            f"DROP USER IF EXISTS '{app_user}'@'%', '{owner_user}'@'%'",
        )
        rabbitmqctl("delete_vhost", vhost)
        rabbitmqctl("delete_user", app_user)


def denied_code(url: str, statement: str) -> object:
    """The error code with which the server refuses `statement`, or None if it ran."""
    engine = create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text(statement))
    except DBAPIError as exc:
        orig = exc.orig
        return getattr(orig, "pgcode", None) or (orig.args[0] if orig.args else None)
    finally:
        engine.dispose()
    return None


def test_the_pipeline_runs_end_to_end_as_the_least_privileged_accounts(
    shared_servers: SharedServers, accounts: Accounts
) -> None:
    app = accounts.app
    with running_workers(app), running_api(app) as api:
        for n in range(3):
            response = requests.post(
                f"{api.url}/v1/events", json=event(f"lp-{n}"), headers=AUTH, timeout=10
            )
            assert response.status_code == 202, response.text
        batch = {"batch": [event("lp-3"), event("lp-4")]}
        response = requests.post(f"{api.url}/v1/batch", json=batch, headers=AUTH, timeout=10)
        assert response.status_code == 202, response.text

        wait_until(lambda: stored_count(app) == 5, what="5 events in PostgreSQL")
        wait_until(lambda: projected_count(app) == 5, what="5 events in MySQL")
        status = requests.get(f"{api.url}/v1/events/lp-4", headers=READ_AUTH, timeout=10)
        assert status.status_code == 200, status.text
        assert (status.json()["status"], status.json()["projection"]) == ("projected", "done")
        # The API, the workers and this test are logged in as the application's role only.
        logins = rows(
            shared_servers.postgres_admin_url,
            "SELECT DISTINCT usename FROM pg_stat_activity WHERE datname = :name",
            name=make_url(app.postgres_url).database,
        )
        assert {row["usename"] for row in logins} == {accounts.app_user}


def test_the_database_accounts_are_neither_superusers_nor_role_makers(
    shared_servers: SharedServers, accounts: Accounts
) -> None:
    for user in (accounts.app_user, accounts.owner_user):
        found = rows(
            shared_servers.postgres_admin_url,
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
            " FROM pg_roles WHERE rolname = :user",
            user=user,
        )
        assert found == [dict.fromkeys(found[0], False)], user
    owner = scalar(
        shared_servers.postgres_admin_url,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = :name",
        name=make_url(accounts.app.postgres_url).database,
    )
    assert owner == accounts.owner_user
    tables = rows(
        accounts.app.postgres_url, "SELECT tableowner FROM pg_tables WHERE schemaname = 'public'"
    )
    assert {row["tableowner"] for row in tables} == {accounts.owner_user}


def test_the_application_role_changes_rows_but_no_schema_and_no_roles(accounts: Accounts) -> None:
    url = accounts.app.postgres_url
    for statement in (
        "CREATE TABLE intruder (id int)",
        "DROP TABLE events",
        "ALTER TABLE events ADD COLUMN intruder int",
        "TRUNCATE events",
        "CREATE ROLE intruder",
        f"CREATE DATABASE {make_url(url).database}_intruder",
        "COPY events TO PROGRAM 'true'",
    ):
        assert denied_code(url, statement) == POSTGRES_DENIED, statement
    assert denied_code(url, "SELECT count(*) FROM events") is None


def test_the_application_mysql_user_changes_rows_but_no_schema(accounts: Accounts) -> None:
    url = str(accounts.app.mysql_url)
    for statement in (
        "DROP TABLE events_projection",
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE events_projection ADD COLUMN intruder int",
    ):
        assert denied_code(url, statement) == MYSQL_DENIED, statement
    grants = [next(iter(grant.values())) for grant in rows(url, "SHOW GRANTS")]
    # USAGE on *.* is the right to log in, nothing more.
    on_database = [grant for grant in grants if not grant.startswith("GRANT USAGE ON *.* TO ")]
    database = make_url(url).database.replace("_", r"\_")
    assert on_database == [
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON `{database}`.* TO `{accounts.app_user}`@`%`"
    ]


def test_the_broker_user_reaches_its_own_vhost_only_and_administers_nothing(
    accounts: Accounts, management_api: str
) -> None:
    login = (accounts.app_user, str(url_to_parts(accounts.app.broker_url).password))
    api = management_api.split("@", 1)[1]
    user = requests.get(f"{management_api}users/{accounts.app_user}", timeout=10).json()
    assert user["tags"] in (["management"], "management"), "no administrator, no monitoring"

    own = requests.get(f"http://{api}queues/{accounts.vhost}", auth=login, timeout=10)
    assert own.status_code == 200
    assert {queue["name"] for queue in own.json()} >= {PERSIST_QUEUE, PROJECTION_QUEUE}
    for method, path in (
        ("GET", "queues/%2F"),
        ("GET", "users"),
        ("PUT", "vhosts/intruder"),
        ("PUT", f"permissions/%2F/{accounts.app_user}"),
    ):
        response = requests.request(method, f"http://{api}{path}", auth=login, json={}, timeout=10)
        assert response.status_code == 401, (method, path, response.status_code)

    other_vhost = accounts.app.broker_url.rsplit("/", 1)[0] + "//"
    with (
        pytest.raises(NotAllowed, match=r"access to vhost '/' refused"),
        Connection(other_vhost, connect_timeout=10) as connection,
    ):
        connection.ensure_connection(max_retries=1)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"POSTGRES_ADMIN_URL": ""}, "POSTGRES_ADMIN_URL is not set"),
        (
            {"POSTGRES_OWNER_URL": "postgresql://owner@db/events"},
            "POSTGRES_OWNER_URL must name a password",
        ),
        ({"POSTGRES_URL": "postgresql://app:pw@db/other"}, "must name the same database"),
        ({"POSTGRES_URL": "postgresql://owner:pw@db/events"}, "must name different users"),
        ({"MYSQL_OWNER_URL": ""}, "MYSQL_OWNER_URL is not set"),
        ({"RABBITMQ_ADMIN_URL": "amqp://admin:pw@mq//"}, "RABBITMQ_ADMIN_URL must be http(s)://"),
        ({"BROKER_URL": "amqp://mq//"}, "BROKER_URL must name a user and a password"),
    ],
)
def test_create_roles_names_the_variable_that_is_wrong(
    change: dict[str, str], message: str, tmp_path: Path
) -> None:
    # Port 1 listens nowhere: every variable is checked before the first login.
    environment = {
        "PATH": os.environ["PATH"],
        "POSTGRES_ADMIN_URL": "postgresql://postgres:pw@127.0.0.1:1/postgres",
        "POSTGRES_OWNER_URL": "postgresql://owner:pw@127.0.0.1:1/events",
        "POSTGRES_URL": "postgresql://app:pw@127.0.0.1:1/events",
        "MYSQL_ADMIN_URL": "mysql://root:pw@127.0.0.1:1/",
        "MYSQL_OWNER_URL": "mysql://owner:pw@127.0.0.1:1/events",
        "MYSQL_URL": "mysql://app:pw@127.0.0.1:1/events",
        "RABBITMQ_ADMIN_URL": "http://admin:pw@127.0.0.1:1/api/",
        "BROKER_URL": "amqp://app:pw@127.0.0.1:1/ingest",
        **change,
    }
    result = create_roles(environment, tmp_path)
    assert result.returncode == 1
    assert message in result.stderr
