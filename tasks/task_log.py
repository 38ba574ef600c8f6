"""The workers' logs and metrics: JSON lines, one per task run, and task outcomes for Prometheus.

Celery imports this module with the tasks (`include`), before it sets up logging, so the
`setup_logging` handler below replaces Celery's own log format in workers and beat.

With INGEST_WORKER_METRICS_PORT set, the worker's main process serves `/metrics` on that port
of INGEST_WORKER_METRICS_ADDRESS (127.0.0.1 by default: they have no login); the pool's child
processes count into files of a private multiprocess directory that the main process sums at
each scrape.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from contextvars import Token
from typing import Any

from celery import Task, signals

from ingest.contract import event_ids_of
from ingest.logs import bind, configure_logging, unbind

logger = logging.getLogger(__name__)

# Celery's own "received" and "succeeded in" lines say again what the task line says.
QUIET_LOGGERS = ("celery.app.trace", "celery.worker.strategy")

_running: dict[str, tuple[float, Token[dict[str, Any] | None]]] = {}
_metrics: TaskMetrics | None = None


@signals.setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **kwargs: Any) -> None:
    configure_logging(loglevel or "INFO", quiet=QUIET_LOGGERS)


@signals.task_prerun.connect
def _task_started(task_id: str, task: Task, **kwargs: Any) -> None:
    context: dict[str, Any] = {"task_id": task_id, "task": task.name}
    for header in ("request_id", "request_ids"):
        value = getattr(task.request, header, None)
        if value is not None:
            context[header] = value
    _running[task_id] = (time.perf_counter(), bind(**context))


@signals.task_postrun.connect
def _task_finished(
    task_id: str, task: Task, args: Any = None, state: str | None = None, **kwargs: Any
) -> None:
    started, token = _running.pop(task_id, (None, None))
    seconds = time.perf_counter() - started if started is not None else None
    outcome = (state or "unknown").lower()
    try:
        logger.log(
            logging.INFO if outcome in ("success", "retry") else logging.WARNING,
            "task",
            extra={
                "outcome": outcome,
                "duration_ms": round(seconds * 1000, 3) if seconds is not None else None,
                "event_ids": event_ids_of(args[0] if args else None),
                "retries": task.request.retries,
            },
        )
        if _metrics is not None:
            _metrics.observe(task.name, outcome, seconds)
    finally:
        if token is not None:
            unbind(token)


class TaskMetrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.runs = Counter(
            "ingest_tasks",
            "Task runs by task name and outcome (success, failure, retry, ...).",
            ["task", "outcome"],
        )
        self.seconds = Histogram(
            "ingest_task_duration_seconds",
            "Duration of task runs in seconds.",
            ["task"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )

    def observe(self, task: str, outcome: str, seconds: float | None) -> None:
        self.runs.labels(task, outcome).inc()
        if seconds is not None:
            self.seconds.labels(task).observe(seconds)


@signals.worker_init.connect
def _serve_metrics(sender: Any, **kwargs: Any) -> None:
    """In the main process, before the pool forks: a private directory for the children's
    counter files, summed by an HTTP server in this process."""
    global _metrics
    settings = sender.app.settings
    port = settings.worker_metrics_port
    if port is None:
        return
    directory = tempfile.mkdtemp(prefix="ingest-worker-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    # prometheus_client chose its in-process values when it was imported (the celery command
    # imports Flower's plugin, which imports it); metrics created from here on use files.
    values.ValueClass = values.get_value_class()

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    start_http_server(port, addr=settings.worker_metrics_address, registry=registry)
    _metrics = TaskMetrics()
    signals.worker_shutdown.connect(
        lambda **_: shutil.rmtree(directory, ignore_errors=True), weak=False
    )
    logger.info(
        "Serving task metrics",
        extra={"address": settings.worker_metrics_address, "port": port},
    )
