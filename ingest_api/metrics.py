"""Prometheus metrics: what the API answered (counted per request, summed over every server
worker) and, at scrape time, what the pipeline holds (read from PostgreSQL and RabbitMQ).

Under `python -m ingest_api.server` each worker writes its counters to files in
PROMETHEUS_MULTIPROC_DIR (the server sets it up before the workers start) and `/metrics` sums
them; without that variable the counters live in the one process that serves `/metrics`.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping

from celery import Celery
from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import text

from ingest.config import Settings
from ingest.contract import DEAD_QUEUE
from ingest_api.cached import Cached
from models import engine_for

logger = logging.getLogger(__name__)

# Methods labelled by their name. A client may send any token as a method (gunicorn takes 3 to
# 20 letters), so every other one is labelled "other": one series, however many are invented.
LABELLED_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
OTHER_METHOD = "other"

REQUEST_SECONDS = Histogram(
    "ingest_http_request_duration_seconds",
    "HTTP requests by method, route and status, with their duration in seconds.",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENTS_ACCEPTED = Counter(
    "ingest_events_accepted", "Events the API accepted (202, confirmed by the broker)."
)
EVENTS_REJECTED = Counter(
    "ingest_events_rejected",
    "Events the API refused, by reason; a request refused as a whole counts once.",
    ["reason"],
)
PUBLISH_FAILURES = Counter(
    "ingest_publish_failures",
    "Requests answered 503 because the broker did not confirm the publish in time.",
)

# Segment libraries labelled by their name (context.library.name); any other is "other", so a
# client cannot grow the series by inventing names.
SEGMENT_LIBRARIES = frozenset(
    {
        "analytics-python",
        "@segment/analytics-node",
        "analytics-node",
        "analytics-node-next",
        "analytics.js",
        "analytics-ruby",
        "analytics-go",
        "analytics-java",
        "analytics-php",
        "analytics-ios",
        "analytics-android",
        "analytics-kotlin",
        "analytics-swift",
        "analytics-react-native",
    }
)
OTHER_LIBRARY = "other"
SEGMENT_MESSAGES = Counter(
    "ingest_segment_messages",
    "Segment messages accepted (200, confirmed by the broker), by library and type.",
    ["library", "type"],
)
SEGMENT_REJECTS = Counter(
    "ingest_segment_rejects",
    "Segment messages refused, by library: kept for `ingest segment rejects` inside a batch "
    "answered 200, or a single call answered 400.",
    ["library"],
)
SEGMENT_RETRIED_REQUESTS = Counter(
    "ingest_segment_retried_requests",
    "Segment requests that the SDK marked as a retry (X-Retry-Count above 0), by library.",
    ["library"],
)

OLDEST_UNCHECKED_AGE = """
SELECT coalesce(extract(epoch FROM now() - min(stored_at)), 0) FROM events
WHERE (insert_xid, id) > (SELECT coalesce(max(insert_xid), -1), coalesce(max(event_pk), -1)
                          FROM projection_checkpoint)
"""

FIGURES_MAX_AGE = 5.0
PAGE_MAX_AGE = 1.0
# A count that takes longer leaves its figures out of that scrape rather than holding it.
STATEMENT_TIMEOUT_MS = 2000

metrics = Blueprint("metrics", __name__)


def method_label(method: str) -> str:
    return method if method in LABELLED_METHODS else OTHER_METHOD


def library_label(name: str | None) -> str:
    return name if name in SEGMENT_LIBRARIES else OTHER_LIBRARY


@metrics.get("/metrics")
def scrape() -> Response:
    """No key needed: Prometheus scrapes it. Holds counts and ages, never event content."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    page = current_app.extensions["ingest.metrics_page"].render(encoder, content_type)
    return Response(page, content_type=content_type)


def init_metrics(app: Flask, settings: Settings, celery: Celery) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    registry = CollectorRegistry(auto_describe=False)
    if directory:
        MultiProcessCollector(registry, path=directory)
    else:
        registry.register(REGISTRY)
    registry.register(PipelineCollector(settings, celery))
    app.extensions["ingest.metrics_page"] = MetricsPage(registry, cached=bool(directory))
    app.register_blueprint(metrics)


class MetricsPage:
    """The /metrics page. Summing every server worker's counter files and writing them out is
    what a scrape costs, so with several workers each renders it at most once per
    PAGE_MAX_AGE seconds per format; a single process writes its own counters live."""

    def __init__(self, registry: CollectorRegistry, cached: bool) -> None:
        self.registry = registry
        self.cached = cached
        self._pages: dict[str, Cached[bytes]] = {}
        self._lock = threading.Lock()

    def render(self, encoder: Callable[[CollectorRegistry], bytes], content_type: str) -> bytes:
        if not self.cached:
            return encoder(self.registry)
        with self._lock:
            page = self._pages.get(content_type)
            if page is None:
                page = self._pages[content_type] = Cached(
                    lambda: encoder(self.registry), PAGE_MAX_AGE
                )
        return page.get()


class PipelineCollector(Collector):
    """Events stored, projection backlog and lag, dead letters. A source that cannot be read
    leaves its figures out of the scrape (and logs why) rather than failing the scrape."""

    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery
        # However often /metrics is scraped, each API process reads these this often at most.
        self.database_figures = Cached(self._database_figures, FIGURES_MAX_AGE)
        self.dead_letters = Cached(self._dead_letters, FIGURES_MAX_AGE)

    def collect(self) -> Iterator[Metric]:
        try:
            figures = self.database_figures.get()
        except Exception as exc:  # noqa: BLE001 - a scrape must still answer
            logger.warning("Metrics: the databases could not be read: %s", exc)
        else:
            yield _gauge("ingest_events_stored", "Events stored in PostgreSQL.", figures["stored"])
            if self.settings.mysql_url:
                yield _gauge(
                    "ingest_projection_pending",
                    "Stored events MySQL does not hold yet.",
                    figures["pending"],
                )
                yield _gauge(
                    "ingest_projection_lag_seconds",
                    "Age of the oldest stored event the reconciler has not yet found in MySQL, "
                    "while MySQL lacks events; 0 when it holds them all.",
                    figures["lag"],
                )
                yield _gauge(
                    "ingest_projection_refused",
                    "Stored events MySQL refused for good (ingest refusals list).",
                    figures["refused"],
                )
        try:
            dead = self.dead_letters.get()
        except Exception as exc:  # noqa: BLE001 - a scrape must still answer
            logger.warning("Metrics: the dead-letter queue could not be read: %s", exc)
        else:
            yield _gauge("ingest_dead_letter_messages", f"Messages parked in {DEAD_QUEUE}.", dead)

    def _database_figures(self) -> Mapping[str, float]:
        with engine_for(self.settings.postgres_url).begin() as connection:
            connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            stored = connection.execute(text("SELECT count(*) FROM events")).scalar_one()
        if not self.settings.mysql_url:
            return {"stored": stored}
        with engine_for(self.settings.mysql_url).connect() as connection:
            projected = connection.execute(
                text("SELECT count(*) FROM events_projection")
            ).scalar_one()
        pending = max(stored - projected, 0)
        lag = refused = 0.0
        if pending:
            # The oldest event the reconciler has not yet found in MySQL bounds the lag; only a
            # row MySQL lacks can be refused, and the table of them is small.
            with engine_for(self.settings.postgres_url).begin() as connection:
                connection.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
                lag = connection.execute(text(OLDEST_UNCHECKED_AGE)).scalar_one()
                refused = connection.execute(
                    text("SELECT count(*) FROM projection_refusals")
                ).scalar_one()
        return {"stored": stored, "pending": pending, "lag": float(lag), "refused": float(refused)}

    def _dead_letters(self) -> int:
        timeout = self.settings.publish_timeout
        with self.celery.connection_for_read(
            connect_timeout=timeout, transport_options={"max_retries": 0}
        ) as connection:
            connection.connect()
            # Passive: only asks for the depth, never creates the queue.
            declared = connection.default_channel.queue_declare(DEAD_QUEUE, passive=True)
        return declared.message_count


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
