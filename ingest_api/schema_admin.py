"""Data contracts over HTTP: `/v1/schemas`, where admin keys read and change each event type's
JSON Schema versions and mode (ingest_api.schema_check applies them to events)."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, current_app, request
from marshmallow import ValidationError, fields, validate, validates_schema

from ingest.config import Settings
from ingest.event_schemas import SchemaRefused
from ingest_api.auth import ADMIN, require_key
from ingest_api.body import json_body
from ingest_api.errors import Problem
from ingest_api.schema_check import LiveRegistry
from ingest_api.schemas import StrictSchema
from models.postgres import MODES
from models.schema_registry import (
    RegistryError,
    add_version,
    list_types,
    retire_version,
    schema_version,
    set_mode,
    type_schemas,
)

logger = logging.getLogger(__name__)

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


def init_contracts(app: Flask, settings: Settings) -> None:
    app.extensions["ingest.contracts"] = LiveRegistry(settings)
    app.register_blueprint(contracts)
