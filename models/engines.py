"""One engine per database URL per process, created on first use and disposed after fork."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import URL, Engine, Row, create_engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

# The drivers this project installs; SQLAlchemy 2.1 would pick psycopg 3 for a bare scheme.
_DEFAULT_DRIVERS = {"postgresql": "postgresql+psycopg2", "mysql": "mysql+mysqldb"}

_engines: dict[tuple[str, bool], Engine] = {}
_lock = threading.Lock()


# Connections each engine keeps open, as many as a process has threads by default (an API
# worker's 16, INGEST_WORKER_CONCURRENCY's 16); it opens them as its threads need them. With 5,
# the threads past them each opened and closed a connection per statement, and PostgreSQL
# forked a backend each time: scripts/drain.py measured PostgreSQL at 52-64 us/event with 5,
# 40-44 with 16.
POOL_SIZE = 16


def engine_for(url: str, *, autocommit: bool = False) -> Engine:
    """The process's engine for `url`; with `autocommit`, the one whose statements commit
    themselves and run without a ping first (see `execute`)."""
    with _lock:
        engine = _engines.get((url, autocommit))
        if engine is None:
            engine = _engines[(url, autocommit)] = create_engine(
                sqlalchemy_url(url), **_engine_options(url, autocommit)
            )
        return engine


def sqlalchemy_url(url: str) -> URL:
    """The URL with this project's driver made explicit (postgresql:// -> psycopg2)."""
    parsed = make_url(url)
    return parsed.set(drivername=_DEFAULT_DRIVERS.get(parsed.drivername, parsed.drivername))


def _engine_options(url: str, autocommit: bool) -> dict[str, object]:
    options: dict[str, object] = {
        "pool_pre_ping": not autocommit,
        "pool_size": POOL_SIZE,
        "max_overflow": 5,
        # Errors go into logs: their message must not carry the statement's values (payloads).
        "hide_parameters": True,
    }
    if url.startswith("postgresql"):
        # A statement that cannot get its locks in time is a transient error, not a hang; UTC
        # sessions, since in a zone ahead of UTC 9999-12-31T23:59:59Z reads back as year 10000.
        options["connect_args"] = {
            "connect_timeout": 5,
            "options": "-c lock_timeout=10000 -c timezone=UTC",
        }
    elif url.startswith("mysql"):
        options["connect_args"] = {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30}
        options["pool_recycle"] = 3600
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return options


def dispose_engines() -> None:
    """Forget connections inherited from a parent process, without closing the parent's."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)


def execute(url: str, statement: str, parameters: Any = ()) -> list[Row[Any]]:
    """Run one statement that commits by itself and return its rows. `parameters` in the
    driver's own style; a list of them runs the statement for each (executemany).

    No ping precedes it, which saves a round trip per statement: a pooled connection that died
    since its last use fails, the pool is renewed, and the statement runs once more. Only
    statements that are safe to run twice belong here.
    """
    try:
        return _execute_once(url, statement, parameters)
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
    return _execute_once(url, statement, parameters)


def _execute_once(url: str, statement: str, parameters: Any) -> list[Row[Any]]:
    with engine_for(url, autocommit=True).connect() as connection:
        result = connection.exec_driver_sql(statement, parameters)
        return result.all() if result.returns_rows else []


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """One session, committed on success and rolled back on error."""
    with Session(engine_for(url)) as session, session.begin():
        yield session
