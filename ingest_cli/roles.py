"""`ingest create-roles`: the least-privileged accounts that ingest's processes log in as.

An administrator's URL for each server, and the URLs the processes will use, say what to make:
a PostgreSQL role and a MySQL user that may only read and write rows of ingest's database, an
owner of that database that runs the migrations, and a RabbitMQ user with permissions on its
own vhost only. Names, passwords and databases come from those URLs, so the accounts are exactly
the ones the processes log in as. Safe to run again: passwords and rights are set anew.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import click
from kombu.utils.url import url_to_parts
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from ingest_cli.context import CliContext, pass_cli
from models.engines import sqlalchemy_url

logger = logging.getLogger(__name__)

# Rights of the application role on rows; no DDL, no TRUNCATE, no roles.
DML = "SELECT, INSERT, UPDATE, DELETE"
# MySQL accounts are per client host; containers connect from addresses nobody knows ahead.
MYSQL_HOST = "%"
# Flower's Broker page reads queue depths through the management API; this tag sees only the
# vhosts the user has permissions on, unlike `monitoring` or `administrator`.
BROKER_USER_TAGS = "management"
HTTP_TIMEOUT_SECONDS = 30


def required(environ: Mapping[str, str], name: str) -> str:
    value = environ.get(name, "")
    if not value:
        raise click.ClickException(f"{name} is not set: create-roles needs it")
    return value


def account(environ: Mapping[str, str], name: str) -> URL:
    """A database URL that names a user, a password and a database."""
    try:
        url = make_url(required(environ, name))
    except ValueError:
        raise click.ClickException(f"{name} is not a database URL") from None
    for part in ("username", "password", "database"):
        if not getattr(url, part):
            raise click.ClickException(f"{name} must name a {part.removesuffix('name')}")
    return url


def owner_and_app(environ: Mapping[str, str], owner_name: str, app_name: str) -> tuple[URL, URL]:
    owner, app = account(environ, owner_name), account(environ, app_name)
    if owner.database != app.database:
        raise click.ClickException(
            f"{owner_name} and {app_name} must name the same database, not "
            f"{owner.database!r} and {app.database!r}"
        )
    if owner.username == app.username:
        raise click.ClickException(f"{owner_name} and {app_name} must name different users")
    return owner, app


@contextmanager
def admin_connection(url: str | URL) -> Iterator[Connection]:
    # No pool, no parameters in error messages: the statements carry passwords.
    plain = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    engine = create_engine(
        sqlalchemy_url(plain),
        isolation_level="AUTOCOMMIT",
        hide_parameters=True,
    )
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as exc:
        raise click.ClickException(f"database error: {getattr(exc, 'orig', None) or exc}") from None
    finally:
        engine.dispose()


def create_postgres_roles(admin_url: str, owner: URL, app: URL) -> None:
    """Owner of the database (LOGIN, nothing more) and an application role with DML only."""
    database = owner.database
    with admin_connection(admin_url) as connection:
        quote_name = connection.dialect.identifier_preparer.quote_identifier
        for role in (owner, app):
            exists = connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :name"), {"name": role.username}
            ).scalar()
            connection.execute(
                text(
                    f"{'ALTER' if exists else 'CREATE'} ROLE {quote_name(role.username)} LOGIN"
                    " NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
                    " PASSWORD :password"
                ),
                {"password": role.password},
            )
        db, owner_role, app_role = (
            quote_name(name) for name in (database, owner.username, app.username)
        )
        if connection.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": database}
        ).scalar():
            connection.execute(text(f"ALTER DATABASE {db} OWNER TO {owner_role}"))
        else:
            connection.execute(text(f"CREATE DATABASE {db} OWNER {owner_role}"))
        # Only the owner and the application connect; no temporary tables for anyone else.
        connection.execute(text(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC"))
        connection.execute(text(f"GRANT CONNECT ON DATABASE {db} TO {app_role}"))
    with admin_connection(make_url(admin_url).set(database=database)) as connection:
        for statement in (
            # PostgreSQL before 15 lets every role create tables in public.
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
            f"GRANT USAGE ON SCHEMA public TO {app_role}",
            f"GRANT {DML} ON ALL TABLES IN SCHEMA public TO {app_role}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {app_role}",
            # Tables that later migrations create, as the owner, come with the same rights.
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} IN SCHEMA public"
            f" GRANT {DML} ON TABLES TO {app_role}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner_role} IN SCHEMA public"
            f" GRANT USAGE, SELECT ON SEQUENCES TO {app_role}",
        ):
            connection.execute(text(statement))


def create_mysql_users(admin_url: str, owner: URL, app: URL) -> None:
    """An owner with every right on the database only, and an application user with DML only."""
    with admin_connection(admin_url) as connection:
        quote_name = connection.dialect.identifier_preparer.quote_identifier
        database = owner.database
        connection.execute(
            text(
                f"CREATE DATABASE IF NOT EXISTS {quote_name(database)}"
                " CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            )
        )
        # `_` and `%` in a database name are wildcards in GRANT ... ON db.*: match this one only.
        on = quote_name(database.replace("_", r"\_").replace("%", r"\%")) + ".*"
        for user, rights in ((owner, "ALL PRIVILEGES"), (app, DML)):
            params = {"user": user.username, "host": MYSQL_HOST, "password": user.password}
            connection.execute(
                text("CREATE USER IF NOT EXISTS :user@:host IDENTIFIED BY :password"), params
            )
            connection.execute(text("ALTER USER :user@:host IDENTIFIED BY :password"), params)
            # Rights granted by an earlier run (or by hand) do not outlive this one.
            connection.execute(text("REVOKE ALL PRIVILEGES, GRANT OPTION FROM :user@:host"), params)
            connection.execute(text(f"GRANT {rights} ON {on} TO :user@:host"), params)


class ManagementApi:
    """RabbitMQ's management HTTP API, with the login that its URL carries."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname:
            raise click.ClickException(
                "RABBITMQ_ADMIN_URL must be http(s)://user:password@host:15672/api/"
            )
        login = f"{parts.username}:{parts.password or ''}".encode()
        self.authorization = "Basic " + base64.b64encode(login).decode()
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.base = urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/", "", ""))

    def call(self, method: str, path: str, body: object = None) -> object:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": self.authorization, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
                content = response.read()
        except urllib.error.HTTPError as exc:
            raise click.ClickException(
                f"RabbitMQ's management API refused {method} {path}: {exc.code} "
                f"{exc.read().decode(errors='replace')[:200]}"
            ) from None
        except OSError as exc:
            raise click.ClickException(
                f"cannot reach RabbitMQ's management API at {self.base}: {exc}"
            ) from None
        return json.loads(content) if content else None


def broker_account(environ: Mapping[str, str]) -> tuple[str, str, str]:
    """(user, password, vhost) of BROKER_URL."""
    # BROKER_URL may list cluster nodes separated by ";"; they share their users.
    parts = url_to_parts(required(environ, "BROKER_URL").split(";")[0])
    if not parts.username or not parts.password:
        raise click.ClickException("BROKER_URL must name a user and a password")
    return parts.username, parts.password, parts.path or "/"


def create_broker_user(api: ManagementApi, user: str, password: str, vhost: str) -> None:
    """A user with every permission on `vhost`, and on no other vhost."""
    quoted_user, quoted_vhost = quote(user, safe=""), quote(vhost, safe="")
    api.call("PUT", f"vhosts/{quoted_vhost}", {})
    api.call("PUT", f"users/{quoted_user}", {"password": password, "tags": BROKER_USER_TAGS})
    everything = {"configure": ".*", "write": ".*", "read": ".*"}
    api.call("PUT", f"permissions/{quoted_vhost}/{quoted_user}", everything)
    for permission in api.call("GET", f"users/{quoted_user}/permissions") or []:
        if permission["vhost"] != vhost:
            api.call("DELETE", f"permissions/{quote(permission['vhost'], safe='')}/{quoted_user}")


@click.command("create-roles")
@pass_cli
def create_roles_command(cli: CliContext) -> None:
    """Create the least-privileged accounts the service runs as (needs admin logins).

    Reads, from the environment: POSTGRES_ADMIN_URL (a superuser), POSTGRES_OWNER_URL (the
    database's owner, for `alembic upgrade head`) and POSTGRES_URL (the application role: rows
    only); when MYSQL_URL is set, MYSQL_ADMIN_URL (root) and MYSQL_OWNER_URL likewise;
    RABBITMQ_ADMIN_URL (the management API with an administrator's login) and BROKER_URL (a
    user with permissions on its vhost only). Creates the databases and the vhost if missing.
    """
    env = cli.environ
    # Every variable is checked before the first server is touched.
    postgres_admin = required(env, "POSTGRES_ADMIN_URL")
    postgres_owner, postgres_app = owner_and_app(env, "POSTGRES_OWNER_URL", "POSTGRES_URL")
    mysql = None
    if env.get("MYSQL_URL"):
        mysql_admin = required(env, "MYSQL_ADMIN_URL")
        mysql = owner_and_app(env, "MYSQL_OWNER_URL", "MYSQL_URL")
    broker_api = ManagementApi(required(env, "RABBITMQ_ADMIN_URL"))
    broker_user, broker_password, vhost = broker_account(env)

    create_postgres_roles(postgres_admin, postgres_owner, postgres_app)
    click.echo(
        f"PostgreSQL: {postgres_owner.username} owns {postgres_owner.database}; "
        f"{postgres_app.username} may read and write its rows."
    )
    if mysql is not None:
        create_mysql_users(mysql_admin, *mysql)
        click.echo(
            f"MySQL: {mysql[0].username} owns {mysql[0].database}; "
            f"{mysql[1].username} may read and write its rows."
        )
    else:
        click.echo("MySQL: MYSQL_URL is unset, skipped.")
    create_broker_user(broker_api, broker_user, broker_password, vhost)
    click.echo(f"RabbitMQ: {broker_user} may use vhost {vhost} only.")
