"""The Flask app: `create_app()` builds it; `python -m ingest_api.server` serves it (granian)."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from flask import Flask, Response, g, request
from flask.json.provider import DefaultJSONProvider

from ingest.canonical import compact_json, loads_json
from ingest.config import Settings
from ingest_api.cors import init_cors
from ingest_api.errors import register_error_handlers
from ingest_api.grouping import EventGrouper
from ingest_api.metrics import init_metrics
from ingest_api.openapi import init_openapi
from ingest_api.publisher import Publisher
from ingest_api.request_log import init_request_log
from tasks.celery import create_celery

logger = logging.getLogger(__name__)

# Single events published together in one message, at most; a worker inserts them in one statement.
GROUP_MAX_EVENTS = 100
# How long a group of single events may wait for more once several arrive together.
GROUP_LINGER_SECONDS = 0.010
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class CompactJSONProvider(DefaultJSONProvider):
    """Answers as compact JSON through orjson: a batch's answer holds a result per event."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return compact_json(obj)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads_json(s)


def create_app(settings: Settings | None = None) -> Flask:
    """Defaults, then the given settings (or the environment), then extensions, then routes."""
    settings = settings or Settings.from_env()
    settings.check_api()
    # The package's name, as Flask advises for an app built in a submodule; no /static route.
    app = Flask("ingest_api", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json = CompactJSONProvider(app)
    app.extensions["ingest.settings"] = settings
    publisher = Publisher(
        create_celery(settings), settings.publish_timeout, settings.publisher_pool_size
    )
    app.extensions["ingest.publisher"] = publisher
    app.extensions["ingest.grouper"] = EventGrouper(
        publisher,
        max_events=GROUP_MAX_EVENTS,
        max_bytes=settings.max_body_bytes,
        linger=GROUP_LINGER_SECONDS,
    )
    logger.info("Starting the API", extra={"settings": settings.redacted()})

    app.before_request(_assign_request_id)
    app.after_request(_echo_request_id)
    register_error_handlers(app)
    # The request log first: the CORS preflight answer stops the other before_request hooks.
    init_request_log(app)
    init_cors(app, settings.cors_origins)

    from ingest_api.events import events
    from ingest_api.health import init_health
    from ingest_api.schema_admin import init_contracts
    from ingest_api.segment import init_segment

    app.register_blueprint(events)
    init_segment(app)
    init_contracts(app, settings)
    init_health(app, settings, publisher)
    init_metrics(app, settings, publisher.celery)
    init_openapi(app, settings)
    return app


def close_app(app: Flask) -> None:
    """Stop what the app runs beside its requests: the publishing thread and the schema
    registry's reloads."""
    app.extensions["ingest.publisher"].close()
    app.extensions["ingest.contracts"].close()


def _assign_request_id() -> None:
    offered = request.headers.get("X-Request-ID", "")
    g.request_id = offered if REQUEST_ID.match(offered) else uuid.uuid4().hex


def _echo_request_id(response: Response) -> Response:
    response.headers["X-Request-ID"] = g.get("request_id") or uuid.uuid4().hex
    return response
