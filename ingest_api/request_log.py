"""One JSON log line and the metrics of every request, taken from what the client was answered.

Counting from the response (not from inside the views) means the figures say exactly what
clients were told, and the views stay free of bookkeeping. It costs a few microseconds: only
the event routes' small JSON answers are read back.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

import orjson
from flask import Flask, Response, g, request

from ingest.logs import bind, unbind
from ingest_api.metrics import (
    EVENTS_ACCEPTED,
    EVENTS_REJECTED,
    PUBLISH_FAILURES,
    REQUEST_SECONDS,
    method_label,
)

logger = logging.getLogger(__name__)

EVENT_ROUTES = frozenset({("POST", "/v1/events"), ("POST", "/v1/batch")})

# Why a request to an event route was refused as a whole, by its status.
REJECTION_REASONS = {
    400: "malformed",
    401: "unauthorized",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid",
}


def init_request_log(app: Flask) -> None:
    app.before_request(_start)
    app.after_request(_finish)
    app.teardown_request(_unbind)


def _start() -> None:
    g.started = time.perf_counter()
    g.log_token = bind(request_id=g.request_id)


def _unbind(error: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        unbind(token)


def _finish(response: Response) -> Response:
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    current = request._get_current_object()  # one proxy lookup instead of one per attribute
    rule = current.url_rule
    route = rule.rule if rule is not None else "<unmatched>"
    method = current.method
    status = response.status_code
    REQUEST_SECONDS.labels(method_label(method), route, str(status)).observe(seconds)
    line: dict[str, Any] = {
        "method": method,
        "route": route,
        "path": current.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 3),
    }
    if (method, route) in EVENT_ROUTES:
        line.update(_count_events(response))
    elif current.view_args and "event_id" in current.view_args:
        line["event_ids"] = [current.view_args["event_id"]]
    logger.info("request", extra=line)
    return response


def _count_events(response: Response) -> dict[str, Any]:
    """Count the accepted and refused events of an answer to POST /v1/events or /v1/batch."""
    status = response.status_code
    if status == 503:
        PUBLISH_FAILURES.inc()
        return {"outcome": "publish_failed"}
    try:
        body = orjson.loads(response.get_data())
    except orjson.JSONDecodeError:
        body = None
    body = body if isinstance(body, dict) else {}
    if "results" in body:  # a batch: 202, or 422 when no event in it was valid
        return _count_batch(body["results"])
    if status == 202:
        EVENTS_ACCEPTED.inc()
        return {"outcome": "accepted", "event_ids": [body.get("event_id")]}
    reason = REJECTION_REASONS.get(status, "other")
    EVENTS_REJECTED.labels(reason).inc()
    return {"outcome": "rejected", "reason": reason}


def _count_batch(results: list[dict[str, Any]]) -> dict[str, Any]:
    accepted = 0
    reasons: Counter[str] = Counter()
    for result in results:
        if result.get("status") == "accepted":
            accepted += 1
        else:
            reasons[_item_reason(result.get("errors"))] += 1
    if accepted:
        EVENTS_ACCEPTED.inc(accepted)
    for reason, count in reasons.items():
        EVENTS_REJECTED.labels(reason).inc(count)
    return {
        "outcome": "accepted" if accepted else "rejected",
        "event_ids": [result.get("event_id") for result in results],
        "accepted": accepted,
        "rejected": sum(reasons.values()),
    }


def _item_reason(errors: Any) -> str:
    # An event over the size limit is the one item error that names INGEST_MAX_EVENT_BYTES.
    messages = errors.get("_event", []) if isinstance(errors, dict) else []
    if any("INGEST_MAX_EVENT_BYTES" in str(message) for message in messages):
        return "too_large"
    return "invalid"
