"""Loading events fast: a direct check of the common case, valid events, beside marshmallow.

`EventSchema` stays the contract (and the OpenAPI description comes from it). An event that the
direct check accepts loads to exactly what `EventSchema().load` returns (tests/test_validation.py
holds both to the same inputs); anything else goes through marshmallow, which names every
error. Only marshmallow's machinery is skipped, never one of its rules.
"""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError

from ingest_api.schemas import (
    MAX_SCHEMA_VERSION,
    EventSchema,
    OccurredAtError,
    check_payload,
    is_event_id,
    parse_occurred_at,
)

event_schema = EventSchema()
FIELDS = frozenset(event_schema.fields)
REQUIRED = frozenset(name for name, field in event_schema.fields.items() if field.required)
MAX_TEXT = 128


def load_event(document: Any) -> dict[str, Any]:
    """The event as EventSchema loads it; raises marshmallow's ValidationError if invalid."""
    event = quick_load(document)
    return event if event is not None else event_schema.load(document)


def quick_load(document: Any) -> dict[str, Any] | None:
    """The loaded event if `document` is plainly valid; None to let marshmallow decide."""
    if type(document) is not dict or not REQUIRED <= document.keys() <= FIELDS:
        return None
    event_id = document["event_id"]
    event_type = document["event_type"]
    source = document.get("source")
    payload = document["payload"]
    if not (
        type(event_id) is str
        and is_event_id(event_id)
        and _is_text(event_type, minimum=1)
        and (source is None or _is_text(source, minimum=0))
        and type(payload) is dict
    ):
        return None
    try:
        occurred_at = parse_occurred_at(document["occurred_at"])
        check_payload(payload)
    except (OccurredAtError, ValidationError):
        return None
    event = {
        "event_id": event_id,
        "event_type": event_type,
        "occurred_at": occurred_at,
        "source": source,
        "payload": dict(payload),
    }
    if "schema_version" in document:
        version = document["schema_version"]
        if type(version) is not int or not 1 <= version <= MAX_SCHEMA_VERSION:
            return None
        event["schema_version"] = version
    return event


def _is_text(value: Any, minimum: int) -> bool:
    return type(value) is str and minimum <= len(value) <= MAX_TEXT and "\x00" not in value
