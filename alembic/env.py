"""One revision chain for both databases (multidb style).

PostgreSQL is always migrated; MySQL only when MYSQL_URL is set. Each database keeps its own
alembic_version table, so a projection switched on later catches up from the first revision.
"""

from __future__ import annotations

import logging
from logging.config import fileConfig

from alembic import context
from sqlalchemy import MetaData, create_engine, pool

from ingest.config import Settings
from models import Base, ProjectionBase
from models.engines import sqlalchemy_url

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
logger = logging.getLogger("alembic.env")

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
            with context.begin_transaction():
                context.run_migrations(engine_name=name)
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
