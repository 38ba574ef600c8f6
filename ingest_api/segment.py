"""Segment's HTTP tracking API under /segment/v1, for the SDKs people already use.

Every Segment SDK counts only a 2xx as delivered and drops a whole batch on a 4xx, so a batch
answers exactly 200 {"success": true} once the broker confirmed its valid messages; an invalid
message is kept in segment_rejects (`ingest segment rejects`) instead of failing the others.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, json, request
from marshmallow import ValidationError

from ingest.canonical import compact_json, compact_json_size, utc_now
from ingest.config import Settings
from ingest_api.auth import SEGMENT, WRITE, check_key, require_segment_key, segment_header_key
from ingest_api.body import json_body
from ingest_api.errors import Problem
from ingest_api.events import RETRY_AFTER, broker_confirm, message_event
from ingest_api.metrics import (
    PUBLISH_FAILURES,
    SEGMENT_MESSAGES,
    SEGMENT_REJECTS,
    SEGMENT_RETRIED_REQUESTS,
    library_label,
)
from ingest_api.schema_check import check_event, live_registry
from ingest_api.schemas import is_event_id
from ingest_api.segment_schemas import (
    MAX_BATCH_MESSAGES,
    MAX_BODY_BYTES,
    MAX_MESSAGE_BYTES,
    MESSAGE_TYPES,
    SegmentBatchSchema,
    SegmentMessageSchema,
)
from ingest_api.validation import load_event
from models.engines import execute
from models.schema_registry import Registry

segment = Blueprint("segment", __name__, url_prefix="/segment/v1")
batch_schema = SegmentBatchSchema()
message_schema = SegmentMessageSchema()

# An ingest event's field, named as the Segment message's field that it comes from.
SEGMENT_FIELD = {
    "event_id": "messageId",
    "event_type": "event",
    "occurred_at": "timestamp",
    "source": "context.library.name",
    "payload": "_message",
}
INSERT_REJECT = """
INSERT INTO segment_rejects (received_at, key_sha256, library, message_id, reasons, message)
VALUES (%s, %s, %s, %s, %s::jsonb, %s)
"""


def settings() -> Settings:
    return current_app.extensions["ingest.settings"]


@segment.before_request
def _authenticate_header() -> None:
    # A wrong key in the header is refused before the body is read; a body's writeKey later.
    g.segment_key = segment_header_key()
    if g.segment_key is not None:
        check_key(settings(), WRITE, g.segment_key, SEGMENT)


@segment.after_request
def _segment_error_fields(response: Response) -> Response:
    """Segment's SDKs read `code` and `message` from an error body: add them to the problem."""
    if response.mimetype == "application/problem+json":
        problem = json.loads(response.get_data())
        problem.update(code=problem["title"].lower().replace(" ", "_"), message=problem["detail"])
        response.set_data(json.dumps(problem))
    return response


@segment.post("/batch", strict_slashes=False)
@segment.post("/import", strict_slashes=False)
def post_batch() -> tuple[dict[str, bool], int]:
    document = read_body()
    if not isinstance(document, dict):
        raise Problem(400, 'The body must be a JSON object like {"batch": [message, ...]}.')
    write_key = authenticate(document)
    messages = document.get("batch")
    if isinstance(messages, list) and len(messages) > MAX_BATCH_MESSAGES:
        raise Problem(
            413,
            f"The batch holds {len(messages)} messages, over Segment's limit of "
            f"{MAX_BATCH_MESSAGES}.",
            limit="segment batch messages",
            limit_value=MAX_BATCH_MESSAGES,
        )
    try:
        envelope = batch_schema.load(document)
    except ValidationError as exc:
        raise Problem(400, "The batch is not valid.", errors=exc.messages) from None
    received_at = utc_now()
    registry = live_registry()
    accepted: list[tuple[dict[str, Any], dict[str, Any]]] = []
    rejected: list[tuple[Any, dict[str, Any]]] = []
    for message in envelope["batch"]:
        event, errors = to_event(message, envelope, received_at, registry)
        if errors:
            rejected.append((message, errors))
        else:
            accepted.append((message, event))
    count_retry(envelope)
    store_rejects(rejected, received_at, write_key)
    publish([event for _, event in accepted])
    for message, event in accepted:
        SEGMENT_MESSAGES.labels(library_label(event["source"]), message["type"]).inc()
    return {"success": True}, 200


def post_call(call: str) -> tuple[dict[str, bool], int]:
    document = read_body()
    if not isinstance(document, dict):
        raise Problem(400, f"The body must be one {call} message, a JSON object.")
    authenticate(document)
    envelope = {"sentAt": None, "context": None, "integrations": None}
    event, errors = to_event({**document, "type": call}, envelope, utc_now(), live_registry())
    count_retry(document)
    if errors:
        SEGMENT_REJECTS.labels(library_label(library_of(document))).inc()
        raise Problem(400, f"The {call} message is not valid.", errors=errors)
    publish([event])
    SEGMENT_MESSAGES.labels(library_label(event["source"]), call).inc()
    return {"success": True}, 200


def _call_view(call: str) -> Callable[[], tuple[dict[str, bool], int]]:
    return lambda: post_call(call)


for _call in MESSAGE_TYPES:
    segment.add_url_rule(
        f"/{_call}",
        endpoint=_call,
        view_func=_call_view(_call),
        methods=["POST"],
        strict_slashes=False,
    )


def read_body() -> Any:
    """The JSON body within Segment's limit. A body cut short is answered 503, not 408: older
    SDKs drop a batch on any 4xx but 429, and retry a 5xx."""
    try:
        return json_body(min(MAX_BODY_BYTES, settings().max_body_bytes))
    except Problem as problem:
        if problem.status != 408:
            raise
        raise Problem(503, problem.detail, headers={"Retry-After": RETRY_AFTER}) from None


def authenticate(document: dict[str, Any]) -> str | None:
    """Check the key (header, body or both); return it, or None with auth off."""
    body_key = document.get("writeKey")
    require_segment_key(settings(), g.segment_key, body_key)
    key = g.segment_key if g.segment_key is not None else body_key
    return key if settings().auth_enabled and isinstance(key, str) else None


def to_event(
    message: Any, envelope: dict[str, Any], received_at: datetime, registry: Registry
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The ingest event a Segment message becomes, as the workers receive it, or why not
    (its contract in `registry` included)."""
    if not isinstance(message, dict):
        return {}, {"_message": ["Each message must be a JSON object."]}
    size = compact_json_size(message)
    if size > MAX_MESSAGE_BYTES:
        return {}, {
            "_message": [
                f"The message is {size} bytes as compact JSON, over Segment's limit of "
                f"{MAX_MESSAGE_BYTES} bytes (32 KB) per message."
            ]
        }
    merged = {name: value for name, value in message.items() if name != "writeKey"}
    for name in ("context", "integrations"):
        outer, inner = envelope.get(name), merged.get(name)
        if isinstance(outer, dict) and (inner is None or isinstance(inner, dict)):
            merged[name] = {**outer, **(inner or {})}
    try:
        loaded = message_schema.load(merged)
    except ValidationError as exc:
        return {}, exc.messages
    try:
        occurred_at = corrected_time(loaded, envelope.get("sentAt"), received_at)
    except OverflowError:
        return {}, {"timestamp": ["The time, corrected by sentAt, is out of range."]}
    document = {
        "event_id": event_id_for(loaded.get("messageId")),
        "event_type": loaded["event"] if loaded["type"] == "track" else loaded["type"],
        "occurred_at": occurred_at.isoformat(),
        "source": library_of(merged),
        "payload": {**merged, "receivedAt": received_at.isoformat()},
    }
    try:
        event = load_event(document)
    except ValidationError as exc:
        return {}, {SEGMENT_FIELD.get(name, name): errors for name, errors in exc.messages.items()}
    verdict = check_event(registry, event)
    if verdict is not None and verdict.refuses:
        return {}, {segment_pointer(at): why for at, why in verdict.errors().items()}
    return message_event(event, received_at.isoformat(), verdict), None


def segment_pointer(pointer: str) -> str:
    """A JSON pointer into the ingest event, as one into the Segment message it came from: the
    payload is the message, and the event_type its `event` (or its type)."""
    if pointer.startswith("/payload"):
        return pointer.removeprefix("/payload") or "/"
    return "/event" if pointer == "/event_type" else pointer


def corrected_time(
    message: dict[str, Any], batch_sent_at: datetime | None, received_at: datetime
) -> datetime:
    """Segment's clock-skew correction: the client's clock is off by sentAt - receivedAt."""
    timestamp = message.get("timestamp")
    if timestamp is None:
        return received_at
    sent_at = message.get("sentAt") or batch_sent_at
    return timestamp if sent_at is None else received_at - (sent_at - timestamp)


def event_id_for(message_id: str | None) -> str:
    """messageId when ingest's event_id takes it as is; else an id derived from it, stable over
    retries; without one, a new id (such a message sent twice is stored twice)."""
    if not message_id:
        return f"segment-{uuid.uuid4().hex}"
    if is_event_id(message_id):
        return message_id
    return f"segment-sha256:{hashlib.sha256(message_id.encode()).hexdigest()}"


def library_of(message: dict[str, Any]) -> str | None:
    context = message.get("context")
    library = context.get("library") if isinstance(context, dict) else None
    name = library.get("name") if isinstance(library, dict) else None
    return name if isinstance(name, str) else None


def count_retry(document: dict[str, Any]) -> None:
    """Count a request the SDK marks as a retry (X-Retry-Count), by the library that sent it."""
    if request.headers.get("X-Retry-Count", "0").strip() in ("", "0"):
        return
    messages = document.get("batch")
    first = messages[0] if isinstance(messages, list) and messages else None
    library = (library_of(first) if isinstance(first, dict) else None) or library_of(document)
    SEGMENT_RETRIED_REQUESTS.labels(library_label(library)).inc()


def store_rejects(
    rejected: list[tuple[Any, dict[str, Any]]], received_at: datetime, write_key: str | None
) -> None:
    """Keep each invalid message where an operator lists it; a database that cannot take them
    fails the request with a 503 the SDK retries, so no reject goes unseen."""
    if not rejected:
        return
    key_hash = hashlib.sha256(write_key.encode()).hexdigest() if write_key else None
    rows = []
    for message, errors in rejected:
        library = library_of(message) if isinstance(message, dict) else None
        message_id = message.get("messageId") if isinstance(message, dict) else None
        rows.append(
            (
                received_at,
                key_hash,
                without_nul(library),
                without_nul(message_id if isinstance(message_id, str) else None),
                compact_json(without_nul(errors)),
                compact_json(message),  # text, where a NUL is the escape \u0000
            )
        )
    try:
        execute(settings().postgres_url, INSERT_REJECT, rows)
    except Exception as exc:
        raise Problem(
            503,
            "The invalid messages of the batch could not be recorded; nothing was accepted. "
            "Retry later.",
            headers={"Retry-After": RETRY_AFTER},
        ) from exc
    for _, _, library, *_ in rows:
        SEGMENT_REJECTS.labels(library_label(library)).inc()


def without_nul(value: Any) -> Any:
    """`value` with each NUL character in its strings and keys written as the six characters
    `\\u0000`: PostgreSQL's text and jsonb hold no NUL, and a reject is kept whatever it holds."""
    if isinstance(value, str):
        return value.replace("\x00", "\\u0000")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def publish(events: list[dict[str, Any]]) -> None:
    if not events:
        return
    try:
        with broker_confirm():
            current_app.extensions["ingest.publisher"].publish_events(
                events, {"request_id": g.request_id}
            )
    except Problem:
        PUBLISH_FAILURES.inc()  # counted like the native routes' 503s
        raise


def init_segment(app: Flask) -> None:
    app.register_blueprint(segment)
    app.after_request(_point_segment_bodies_here)


def _point_segment_bodies_here(response: Response) -> Response:
    """A Segment batch sent to ingest's own /v1/batch: say where it belongs."""
    if request.endpoint != "events.post_batch" or response.status_code != 422:
        return response
    problem = json.loads(response.get_data())
    named = set(problem.get("errors") or {})
    for result in problem.get("results") or ():
        named.update(result.get("errors") or {})
    if named & {"type", "messageId", "userId", "anonymousId", "sentAt", "writeKey"}:
        problem["detail"] += " This is a Segment batch: send it to /segment/v1/batch."
        problem["see"] = "/segment/v1/batch"
        response.set_data(json.dumps(problem))
    return response
