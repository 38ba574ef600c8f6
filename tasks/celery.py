"""The Celery app, `app`, which `celery -A tasks worker|beat|flower` finds here (Celery looks
for a `celery` module in the package). Its settings come from the environment when it is first
configured; it registers the tasks of the modules it includes."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

from celery import Celery, signals
from celery.worker.consumer import Consumer
from kombu import Connection
from kombu.message import Message
from kombu.serialization import registry

from ingest.canonical import compact_json, loads_json
from ingest.config import Settings
from ingest.contract import (
    EXCHANGE,
    PERSIST_QUEUE,
    RECONCILE_PROJECTION,
    TASK_QUEUES,
    WORK_QUEUES,
    declare_topology,
)
from ingest.heap import freeze_startup_objects
from models import dispose_engines

logger = logging.getLogger(__name__)


class IngestCelery(Celery):
    """A Celery app that carries the ingest Settings it was configured from."""

    def __init__(self, settings: Settings | None = None, **kwargs: Any) -> None:
        self._given_settings = settings
        super().__init__("ingest", **kwargs)
        self.on_configure.connect(self._configure, weak=False)

    @cached_property
    def settings(self) -> Settings:
        return self._given_settings or Settings.from_env()

    def _configure(self, sender: Celery, **kwargs: Any) -> None:
        self.config_from_object(celery_config(self.settings))


class IngestConsumer(Consumer):
    """Celery's consumer, changed in three ways: it declares the topology on each connection
    before any step uses it; it dead-letters a message it cannot decode instead of acking it
    away; it sends monitoring events without a publisher confirm each (a lost event costs
    Flower a blip, while a confirm per event costs the worker three broker round trips)."""

    def connect(self) -> Connection:
        # Before any step consumes or binds: a reject needs the dead-letter queue, and delayed
        # delivery binds each work queue once, at start, only if it exists by then.
        connection = super().connect()
        declare_topology(connection)
        logger.info("Declared exchanges and queues; dead letters go to ingest.dead")
        return connection

    def on_decode_error(self, message: Message, exc: Exception) -> None:
        # Celery acks such a message, and it is gone; rejected, the broker parks it.
        logger.critical(
            "Cannot decode a %s message, dead-lettering it: %s", message.content_type, exc
        )
        message.reject_log_error(logger, self.connection_errors)

    def connection_for_write(
        self, url: str | None = None, heartbeat: float | None = None
    ) -> Connection:
        return self.ensure_connected(
            self.app.connection_for_write(
                url=url, heartbeat=heartbeat, transport_options={"confirm_publish": False}
            )
        )


def celery_config(settings: Settings) -> dict[str, Any]:
    return {
        "broker_url": settings.broker_url,
        # Publisher confirms: a publish returns only once the broker has the message.
        "broker_transport_options": {"confirm_publish": True},
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": 4,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task that failed for good is rejected, so its message is dead-lettered, not dropped.
        "task_acks_on_failure_or_timeout": False,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_pool": settings.worker_pool,
        "worker_concurrency": settings.worker_concurrency,
        "worker_prefetch_multiplier": 4,
        "worker_send_task_events": True,
        "worker_consumer": "tasks.celery:IngestConsumer",
        "task_default_exchange": EXCHANGE.name,
        "task_default_exchange_type": "topic",
        "task_default_queue": PERSIST_QUEUE,
        "task_default_routing_key": PERSIST_QUEUE,
        "task_default_queue_type": "quorum",
        "task_create_missing_queues": False,
        "task_queues": WORK_QUEUES,
        "task_routes": {name: {"queue": queue} for name, queue in TASK_QUEUES.items()},
        "beat_schedule": {
            "reconcile-projection": {
                "task": RECONCILE_PROJECTION,
                # No `expires`: Celery turns it into a message TTL, and the broker dead-letters
                # every tick that waited out a projector outage. Late ticks find little to do.
                "schedule": settings.reconcile_interval_seconds,
            },
        },
        "enable_utc": True,
        "timezone": "UTC",
        "worker_hijack_root_logger": False,
    }


def register_json_codec() -> None:
    """Task messages in JSON through orjson. kombu's own codec is the standard library's with an
    object hook run for every object, which costs the workers more than their SQL, and which
    turns a payload's {"__type__": ..., "__value__": ...} into a Python object."""
    registry.register(
        "json",
        compact_json,
        loads_json,
        content_type="application/json",
        content_encoding="utf-8",
    )


def create_celery(settings: Settings | None = None) -> IngestCelery:
    """A Celery app for `settings`, or for the environment when it is first configured."""
    register_json_codec()
    return IngestCelery(settings, include=["tasks.persist", "tasks.projection", "tasks.task_log"])


app = create_celery()


@signals.worker_process_init.connect
def _dispose_inherited_engines(**kwargs: Any) -> None:
    dispose_engines()


@signals.worker_process_init.connect  # each child of a prefork pool
@signals.worker_ready.connect  # the worker itself: threads and solo pools run tasks in it
def _freeze_startup_objects(**kwargs: Any) -> None:
    freeze_startup_objects()
