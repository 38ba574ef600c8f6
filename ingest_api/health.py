"""Liveness (no I/O) and readiness (PostgreSQL and the broker)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, current_app
from sqlalchemy import text

from models import engine_for

logger = logging.getLogger(__name__)

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health.get("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    settings = current_app.extensions["ingest.settings"]
    checks = {
        "postgres": _check(lambda: _ping_postgres(settings.postgres_url)),
        "broker": _check(current_app.extensions["ingest.publisher"].check),
    }
    ready = all(state == "ok" for state in checks.values())
    return {"status": "ready" if ready else "unavailable", "checks": checks}, 200 if ready else 503


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
