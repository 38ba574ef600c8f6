"""Each event checked against its type's contract on the way in, by the routes that accept
events (/v1/events, /v1/batch, /segment/v1/...).

Each API process keeps the registry compiled in memory (models.schema_registry.Registry) and a
thread of its own looks every INGEST_SCHEMA_RELOAD_SECONDS whether its generation moved: a
version added or retired, or a mode changed, reaches every process within that time, with no
restart, and no request waits for the database to do it. The server reads it once in each
worker before serving (ingest_api.rsgi); elsewhere the first requests wait for the first read.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from flask import current_app
from prometheus_client import Counter

from ingest.config import Settings
from ingest_api.errors import Problem
from models.schema_registry import (
    OFF,
    Registry,
    Verdict,
    load_registry,
    registry_generation,
)

logger = logging.getLogger(__name__)

SCHEMA_VIOLATIONS = Counter(
    "ingest_schema_violations",
    "Events that broke their type's schema, by event type (a type without an active schema is "
    "'unregistered') and mode: warn (accepted, recorded) or enforce (refused).",
    ["event_type", "mode"],
)
UNREGISTERED = "unregistered"


def live_registry() -> Registry:
    """The contracts this process holds now: taken once per request, for all of its events."""
    return current_app.extensions["ingest.contracts"].current()


def check_event(registry: Registry, event: dict[str, Any]) -> Verdict | None:
    """The verdict of the event's contract, counted when it broke something; None when its
    type is not checked."""
    event_type = event["event_type"]
    verdict = registry.check(event_type, event["payload"], event.get("schema_version"))
    if verdict is not None and verdict.violations:
        label = event_type if event_type in registry.contracts else UNREGISTERED
        SCHEMA_VIOLATIONS.labels(label, verdict.mode).inc()
    return verdict


def recorded(verdict: Verdict | None) -> dict[str, Any]:
    """The contract fields of an accepted event, stored with it and said in its answer."""
    return {} if verdict is None else verdict.recorded()


def refused(verdict: Verdict) -> dict[str, Any]:
    """Why an event that breaks its enforced contract is refused: `errors` maps the JSON pointer
    of each failing value to the rules it broke; `violations` says the same, one by one."""
    return {
        "errors": verdict.errors(),
        "violations": [violation.as_dict() for violation in verdict.violations],
        "schema_version": verdict.version,
    }


def refusal(verdict: Verdict) -> Problem:
    """The 422 of an event that breaks its enforced contract."""
    version = f"version {verdict.version} of " if verdict.version is not None else ""
    return Problem(
        422,
        f"The event breaks {version}its type's schema (mode enforce); `errors` names each "
        "failing value by its JSON pointer in the event.",
        **refused(verdict),
    )


class LiveRegistry:
    """The registry of this process, reloaded by a thread of its own when its generation moves.
    A registry that cannot be read keeps the last one read; until the first read succeeds no
    event is checked (and that is logged)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._registry: Registry | None = None
        self._owner_pid = 0
        self._lock = threading.Lock()
        # Logged once when reading starts failing, and once when it works again.
        self._unreadable = False
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop reloading, once the app serves no more (a test drops its database next)."""
        self._closed.set()

    def current(self) -> Registry:
        registry = self._registry
        if registry is not None and self._owner_pid == os.getpid():
            return registry
        with self._lock:
            if self._registry is None or self._owner_pid != os.getpid():
                # The first read is this caller's; later ones are the thread's (a thread does
                # not survive a fork, so each process starts its own).
                self._registry = self._reload(self._registry, force=True)
                self._owner_pid = os.getpid()
                threading.Thread(
                    target=self._poll, name="ingest-schema-registry", daemon=True
                ).start()
            return self._registry

    def _poll(self) -> None:
        while not self._closed.wait(self.settings.schema_reload_seconds):
            self._registry = self._reload(self._registry, force=False)

    def _reload(self, previous: Registry | None, force: bool) -> Registry:
        url, mode = self.settings.postgres_url, self.settings.schema_default_mode
        try:
            unchanged = (
                previous is not None
                and not force
                and registry_generation(url) == previous.generation
            )
            if unchanged:
                return previous
            registry = load_registry(url, mode, previous)
        except Exception as exc:  # noqa: BLE001 - events keep flowing on the last registry
            if not self._unreadable:
                logger.warning("The schema registry cannot be read; keeping the last: %s", exc)
                self._unreadable = True
            # Nothing read yet: check nothing rather than refuse every event for want of it.
            return previous or Registry(generation=-1, default_mode=OFF)
        if self._unreadable:
            logger.info("The schema registry can be read again")
            self._unreadable = False
        if previous is None or registry.generation != previous.generation:
            logger.info(
                "Schema registry loaded",
                extra={"generation": registry.generation, "event_types": len(registry.contracts)},
            )
        return registry
