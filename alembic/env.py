"""One revision chain for both databases (multidb style).

PostgreSQL is always migrated; MySQL only when MYSQL_URL is set. Each database keeps its own
alembic_version table, so a projection switched on later catches up from the first revision.
Each database is migrated under a lock of its own, so migrations started at once (two
containers, say) run one after the other: the second finds the first's work done.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, MetaData, create_engine, pool, text
from sqlalchemy.exc import OperationalError

from ingest.config import Settings
from models import Base, ProjectionBase
from models.engines import sqlalchemy_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

# The PostgreSQL advisory lock key of a migration; advisory locks are per database.
POSTGRES_LOCK_KEY = 7_396_514_000_000_001
LOCK_NOT_AVAILABLE = "55P03"
# Seconds a migration waits for another one to finish before it gives up.
LOCK_TIMEOUT_SECONDS = 600
LOCK_BUSY = f"Another migration held this database's migration lock for {LOCK_TIMEOUT_SECONDS} s"

target_metadata: dict[str, MetaData] = {
    "postgres": Base.metadata,
    "mysql": ProjectionBase.metadata,
}


def database_urls() -> dict[str, str]:
    settings = config.attributes.get("settings") or Settings.from_env()
    urls = {"postgres": settings.postgres_url}
    if settings.mysql_url:
        urls["mysql"] = settings.mysql_url
    return urls


def run_migrations_offline() -> None:
    for name, url in database_urls().items():
        logger.info("Migrating database %s (offline)", name)
        context.configure(
            url=sqlalchemy_url(url),
            target_metadata=target_metadata[name],
            literal_binds=True,
            upgrade_token=f"{name}_upgrades",
            downgrade_token=f"{name}_downgrades",
        )
        with context.begin_transaction():
            context.run_migrations(engine_name=name)


def take_migration_lock(connection: Connection) -> None:
    """Wait up to LOCK_TIMEOUT_SECONDS for the database's migration lock. The session holds it
    until its connection closes, after the migration's commit (the engine pools nothing)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_SECONDS}s'"))
        try:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
        except OperationalError as exc:
            if getattr(exc.orig, "pgcode", None) == LOCK_NOT_AVAILABLE:
                raise RuntimeError(LOCK_BUSY) from exc
            raise
    else:
        name = "LEFT(CONCAT('ingest.migrate:', DATABASE()), 64)"  # GET_LOCK's names are per server
        taken = connection.execute(
            text(f"SELECT GET_LOCK({name}, :timeout)"), {"timeout": LOCK_TIMEOUT_SECONDS}
        ).scalar()
        if taken != 1:
            raise RuntimeError(LOCK_BUSY)
    # Only the lock belongs to the session; the migration's own transaction comes next.
    connection.commit()


def run_migrations_online() -> None:
    for name, url in database_urls().items():
        logger.info("Migrating database %s", name)
        engine = create_engine(sqlalchemy_url(url), poolclass=pool.NullPool)
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata[name],
                upgrade_token=f"{name}_upgrades",
                downgrade_token=f"{name}_downgrades",
                compare_type=True,
            )
            take_migration_lock(connection)
            with context.begin_transaction():
                context.run_migrations(engine_name=name)
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
