"""The Celery app. Its settings come from the environment when it is first configured."""

from __future__ import annotations

import logging
from functools import cached_property
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals
from celery.worker.consumer import Consumer
from kombu import Connection

from ingest.config import Settings
from models import dispose_engines
from tasks.topology import EXCHANGE, PERSIST_QUEUE, PROJECTION_QUEUE, WORK_QUEUES, declare_topology

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
    """Sends monitoring events without a publisher confirm each: a lost event costs Flower a
    blip, while a confirm per event costs the worker three broker round trips per task."""

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
        "worker_prefetch_multiplier": 4,
        "worker_send_task_events": True,
        "worker_consumer": "tasks.celery_app:IngestConsumer",
        "task_default_exchange": EXCHANGE.name,
        "task_default_exchange_type": "topic",
        "task_default_queue": PERSIST_QUEUE,
        "task_default_routing_key": PERSIST_QUEUE,
        "task_default_queue_type": "quorum",
        "task_create_missing_queues": False,
        "task_queues": WORK_QUEUES,
        "task_routes": {
            "ingest.persist_event": {"queue": PERSIST_QUEUE},
            "ingest.persist_events": {"queue": PERSIST_QUEUE},
            "ingest.project_to_mysql": {"queue": PROJECTION_QUEUE},
            "ingest.reconcile_projection": {"queue": PROJECTION_QUEUE},
        },
        "beat_schedule": {
            "reconcile-projection": {
                "task": "ingest.reconcile_projection",
                # No `expires`: Celery turns it into a message TTL, and the broker dead-letters
                # every tick that waited out a projector outage. Late ticks find little to do.
                "schedule": settings.reconcile_interval_seconds,
            },
        },
        "enable_utc": True,
        "timezone": "UTC",
        "worker_hijack_root_logger": False,
    }


def create_celery(settings: Settings | None = None) -> IngestCelery:
    """A Celery app for `settings`, or for the environment when it is first configured."""
    return IngestCelery(
        settings, include=["tasks.persist", "tasks.projection", "tasks.observability"]
    )


app = create_celery()


@signals.worker_process_init.connect
def _dispose_inherited_engines(**kwargs: Any) -> None:
    dispose_engines()


class DeclareTopology(bootsteps.StartStopStep):
    """On every broker connection, before consuming: the dead-letter queue must exist first."""

    requires: ClassVar[set[str]] = {"celery.worker.consumer.connection:Connection"}

    def start(self, consumer: Any) -> None:
        declare_topology(consumer.connection)
        logger.info("Declared exchanges and queues; dead letters go to ingest.dead")


app.steps["consumer"].add(DeclareTopology)
