"""Liveness (no I/O) and readiness (PostgreSQL and the broker, checked at most every 2 s)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Flask, current_app
from sqlalchemy import text

from ingest.config import Settings
from ingest_api.cached import Cached
from ingest_api.publisher import Publisher
from models import engine_for

logger = logging.getLogger(__name__)

health = Blueprint("health", __name__)

# However often /readyz is asked, each API process checks its dependencies this often at most.
READINESS_MAX_AGE = 2.0


def init_health(app: Flask, settings: Settings, publisher: Publisher) -> None:
    app.extensions["ingest.readiness"] = Cached(
        lambda: readiness(settings, publisher), READINESS_MAX_AGE
    )
    app.register_blueprint(health)


@health.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    checks = current_app.extensions["ingest.readiness"].get()
    ready = all(state == "ok" for state in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def readiness(settings: Settings, publisher: Publisher) -> dict[str, str]:
    return {
        "postgres": _check(lambda: _ping_postgres(settings.postgres_url)),
        "broker": _check(publisher.check),
    }


def _ping_postgres(url: str) -> None:
    with engine_for(url).connect() as connection:
        connection.execute(text("SELECT 1"))


def _check(probe: Callable[[], None]) -> str:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
        logger.warning("Readiness check failed: %s", exc)
        return "down"
    return "ok"
