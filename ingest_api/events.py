"""POST /v1/events, POST /v1/batch and GET /v1/events/<event_id>."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, current_app, g, request
from marshmallow import ValidationError

from ingest.canonical import compact_json_size, utc_now
from ingest.config import Settings
from ingest_api.auth import READ, WRITE, require_key
from ingest_api.body import json_body
from ingest_api.errors import Problem
from ingest_api.publisher import PublishError
from ingest_api.schema_check import check_event, live_registry, recorded, refusal, refused
from ingest_api.schemas import BatchSchema, is_event_id
from ingest_api.validation import load_event
from models.schema_registry import Verdict
from models.status import event_status

logger = logging.getLogger(__name__)

events = Blueprint("events", __name__, url_prefix="/v1")
batch_schema = BatchSchema()

# Routes whose one wait is the grouper's confirm: they run on the server's event loop
# (ingest_api.on_loop), not in an app thread.
ON_LOOP_ROUTES = frozenset({("POST", "/v1/events")})

# Seconds a client should wait before retrying after the broker failed to confirm.
RETRY_AFTER = "5"


def settings() -> Settings:
    return current_app.extensions["ingest.settings"]


@events.before_request
def _authenticate() -> None:
    # GET (and its HEAD) reads an event's status; every other method here sends events.
    require_key(settings(), READ if request.method in ("GET", "HEAD") else WRITE)


@events.post("/events")
def post_event() -> tuple[dict[str, str], int]:
    limits = settings()
    document = json_body(limits.max_body_bytes)
    if not isinstance(document, dict):
        raise Problem(422, "The body must be one event, a JSON object.")
    size = compact_json_size(document)
    too_big = oversize_error(size, limits.max_event_bytes)
    if too_big:
        raise Problem(
            413, too_big, limit="INGEST_MAX_EVENT_BYTES", limit_value=limits.max_event_bytes
        )
    try:
        event = load_event(document)
    except ValidationError as exc:
        raise Problem(422, "The event is not valid.", errors=exc.messages) from None
    verdict = check_event(live_registry(), event)
    if verdict is not None and verdict.refuses:
        raise refusal(verdict)
    with broker_confirm():
        current_app.extensions["ingest.grouper"].publish(
            message_event(event, utc_now().isoformat(), verdict), size, g.request_id
        )
    return {"event_id": event["event_id"], "status": "accepted", **recorded(verdict)}, 202


@events.post("/batch")
def post_batch() -> tuple[dict[str, Any], int]:
    limits = settings()
    document = json_body(limits.max_body_bytes)
    if not isinstance(document, dict):
        raise Problem(422, 'The body must be a JSON object like {"batch": [event, ...]}.')
    if isinstance(document.get("batch"), list) and len(document["batch"]) > limits.max_batch_events:
        raise Problem(
            413,
            f"The batch holds {len(document['batch'])} events, over the limit of "
            f"{limits.max_batch_events}.",
            limit="INGEST_MAX_BATCH_EVENTS",
            limit_value=limits.max_batch_events,
        )
    batch = document.get("batch")
    # A plain envelope needs no schema; anything else gets marshmallow's errors.
    if not (type(batch) is list and batch and len(document) == 1):
        try:
            batch = batch_schema.load(document)["batch"]
        except ValidationError as exc:
            raise Problem(422, "The batch is not valid.", errors=exc.messages) from None

    results: list[dict[str, Any]] = []
    accepted: list[dict[str, Any]] = []
    received_at = utc_now().isoformat()
    registry = live_registry()
    for index, item in enumerate(batch):
        event, errors = validate_batch_item(item, limits.max_event_bytes)
        result: dict[str, Any] = {"index": index, "event_id": event_id_of(item)}
        verdict = None if errors else check_event(registry, event)
        if errors:
            result.update(status="rejected", errors=errors)
        elif verdict is not None and verdict.refuses:
            result.update(status="rejected", **refused(verdict))
        else:
            result.update(status="accepted", **recorded(verdict))
            accepted.append(message_event(event, received_at, verdict))
        results.append(result)
    if not accepted:
        raise Problem(422, "No event in the batch is valid.", results=results)
    with broker_confirm():
        current_app.extensions["ingest.publisher"].publish_events(
            accepted, {"request_id": g.request_id}
        )
    return {
        "accepted": len(accepted),
        "rejected": len(results) - len(accepted),
        "results": results,
    }, 202


@events.get("/events/<event_id>")
def get_event(event_id: str) -> dict[str, Any]:
    if not is_event_id(event_id):
        # Such an id cannot be stored, and a NUL in it would make the driver raise.
        raise Problem(
            404, "No event is stored under that id: an event_id is 1 to 128 letters, digits or ._:-"
        )
    status = event_status(settings(), event_id)
    if status is None:
        raise Problem(404, f"No event {event_id!r} is stored (yet).")
    return status


def validate_batch_item(item: Any, max_event_bytes: int) -> tuple[dict[str, Any], Any]:
    if not isinstance(item, dict):
        return {}, {"_event": ["Each event must be a JSON object."]}
    too_big = oversize_error(compact_json_size(item), max_event_bytes)
    if too_big:
        return {}, {"_event": [too_big]}
    try:
        return load_event(item), None
    except ValidationError as exc:
        return {}, exc.messages


def oversize_error(size: int, limit: int) -> str | None:
    """Why an event of `size` bytes as compact JSON (the measure of INGEST_MAX_EVENT_BYTES) is
    too big, if it is."""
    if size <= limit:
        return None
    return f"The event is {size} bytes, over the INGEST_MAX_EVENT_BYTES limit of {limit}."


def event_id_of(item: Any) -> Any:
    event_id = item.get("event_id") if isinstance(item, dict) else None
    return event_id if isinstance(event_id, str) else None


def message_event(
    event: dict[str, Any], received_at: str, verdict: Verdict | None
) -> dict[str, Any]:
    """The event as the workers receive it: plain JSON, times in UTC ISO 8601, and what its
    check against its type's schema found (the version it was checked against, not the one a
    client pinned and was refused)."""
    message = {**event, "occurred_at": event["occurred_at"].isoformat(), "received_at": received_at}
    message.pop("schema_version", None)  # a pin is not a check: only the verdict's version
    message.update(recorded(verdict))
    return message


@contextmanager
def broker_confirm() -> Iterator[None]:
    """Turn a publish the broker did not confirm into a 503 the client can retry."""
    try:
        yield
    except PublishError as exc:
        logger.warning("Publish failed: %s", exc, extra={"request_id": g.request_id})
        raise Problem(
            503,
            "The broker did not confirm the event in time; nothing was accepted. Retry later.",
            headers={"Retry-After": RETRY_AFTER},
        ) from exc
