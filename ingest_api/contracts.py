"""Data contracts over HTTP: `/v1/schemas` (admin keys), and each event checked against its type's
schema on the way in.

Each API process keeps the registry compiled in memory (models.schema_registry.Registry) and a
thread of its own looks every INGEST_SCHEMA_RELOAD_SECONDS whether its generation moved: a
version added or retired, or a mode changed, reaches every process within that time, with no
restart, and no request waits for the database to do it. Only the first requests of a process
wait for the first read.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from typing import Any

from flask import Blueprint, Flask, current_app, request
from marshmallow import ValidationError, fields, validate, validates_schema
from prometheus_client import Counter

from ingest.config import Settings
from ingest.event_schemas import SchemaRefused
from ingest_api.auth import ADMIN, require_key
from ingest_api.body import json_body
from ingest_api.errors import Problem
from ingest_api.schemas import StrictSchema
from models.contracts import MODES
from models.schema_registry import (
    OFF,
    Registry,
    RegistryError,
    Verdict,
    add_version,
    list_types,
    load_registry,
    registry_generation,
    retire_version,
    schema_version,
    set_mode,
    type_schemas,
)

logger = logging.getLogger(__name__)

SCHEMA_VIOLATIONS = Counter(
    "ingest_schema_violations",
    "Events that broke their type's schema, by event type (a type without an active schema is "
    "'unregistered') and mode: warn (accepted, recorded) or enforce (refused).",
    ["event_type", "mode"],
)
UNREGISTERED = "unregistered"
MAX_EVENT_TYPE = 128

contracts = Blueprint("contracts", __name__, url_prefix="/v1/schemas")


class SchemaChangeSchema(StrictSchema):
    """PUT /v1/schemas/<event_type>: a new version, a new mode, or both."""

    schema = fields.Raw(
        metadata={
            "description": "A JSON Schema (draft 2020-12) for the payload. The same as the "
            "newest active version adds nothing; anything else becomes the next version."
        }
    )
    mode = fields.String(
        validate=validate.OneOf(MODES),
        metadata={
            "description": "off: not checked; warn: accepted, violations recorded with the "
            "event; enforce: refused with 422. A new type starts in warn."
        },
    )

    @validates_schema
    def _something(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Send a schema, a mode, or both.", "_schema")


change_schema = SchemaChangeSchema()


def settings() -> Settings:
    return current_app.extensions["ingest.settings"]


@contracts.before_request
def _authenticate() -> None:
    require_key(settings(), ADMIN)


@contracts.get("")
def list_schemas() -> dict[str, Any]:
    return {"event_types": [item.as_dict() for item in list_types(settings().postgres_url)]}


@contracts.get("/<path:event_type>")
def get_schemas(event_type: str) -> dict[str, Any]:
    found = type_schemas(settings().postgres_url, checked_type(event_type))
    if found is None:
        raise Problem(404, f"No schema is registered for {event_type!r}.")
    return found.as_dict()


@contracts.put("/<path:event_type>")
def put_schemas(event_type: str) -> tuple[dict[str, Any], int]:
    event_type = checked_type(event_type)
    document = json_body(settings().max_body_bytes)
    if not isinstance(document, dict):
        raise Problem(422, 'The body must be a JSON object like {"schema": {...}, "mode": "warn"}.')
    try:
        change = change_schema.load(document)
    except ValidationError as exc:
        raise Problem(422, "The change is not valid.", errors=exc.messages) from None
    url, by = settings().postgres_url, actor()
    added = False
    try:
        if "schema" in change:
            version, added = add_version(url, event_type, change["schema"], by, change.get("mode"))
            logger.info(
                "Schema version %s of %r %s by %s",
                version.version,
                event_type,
                "added" if added else "unchanged",
                by,
            )
        else:
            set_mode(url, event_type, change["mode"], by)
            logger.info("Schema mode of %r set to %s by %s", event_type, change["mode"], by)
    except SchemaRefused as exc:
        raise Problem(422, str(exc), errors={"schema": [str(exc)]}) from None
    except RegistryError as exc:
        raise Problem(404, str(exc)) from None
    found = type_schemas(url, event_type)
    assert found is not None
    return found.as_dict(), 201 if added else 200


@contracts.get("/<path:event_type>/versions/<version>")
def get_version(event_type: str, version: str) -> dict[str, Any]:
    found = schema_version(
        settings().postgres_url, checked_type(event_type), version_number(version)
    )
    if found is None:
        raise Problem(404, f"{event_type!r} has no schema version {version}.")
    return found.as_dict()


@contracts.delete("/<path:event_type>/versions/<version>")
def retire(event_type: str, version: str) -> dict[str, Any]:
    """Retire a version (it stays readable, and is never deleted)."""
    try:
        retired = retire_version(
            settings().postgres_url, checked_type(event_type), version_number(version), actor()
        )
    except RegistryError as exc:
        raise Problem(404, str(exc)) from None
    logger.info("Schema version %s of %r retired by %s", version, event_type, retired.retired_by)
    return retired.as_dict()


def checked_type(event_type: str) -> str:
    if not 1 <= len(event_type) <= MAX_EVENT_TYPE or "\x00" in event_type:
        raise Problem(404, "An event_type is 1 to 128 characters, none of them NUL.")
    return event_type


def version_number(version: str) -> int:
    """A version in a URL: digits only (the route takes any text, so no method is refused)."""
    if not (version.isascii() and version.isdigit()) or len(version) > 9:
        raise Problem(404, f"No schema version {version!r}: versions are numbered 1, 2, ...")
    return int(version)


def actor() -> str:
    """Who changes the registry: the admin key's place in INGEST_ADMIN_KEYS, never the key."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    offered = token.strip().encode() if scheme.lower() == "bearer" else b""
    for number, key in enumerate(settings().admin_keys, start=1):
        if hmac.compare_digest(offered, key.encode()):
            return f"INGEST_ADMIN_KEYS #{number}"
    return "HTTP, INGEST_AUTH=off"


def check_event(event: dict[str, Any]) -> Verdict | None:
    """The verdict of the event's contract, counted when it broke something; None when its
    type is not checked."""
    registry: Registry = current_app.extensions["ingest.contracts"].current()
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
        while True:
            time.sleep(self.settings.schema_reload_seconds)
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


def init_contracts(app: Flask, settings: Settings) -> None:
    app.extensions["ingest.contracts"] = LiveRegistry(settings)
    app.register_blueprint(contracts)
