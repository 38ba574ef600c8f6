"""Publishing task messages that the broker has confirmed, or failing fast.

Each pooled connection has its own channel in confirm mode. A connection that failed or timed
out is closed, never reused: a late confirm on it could otherwise be taken for the next one's.
"""

from __future__ import annotations

import logging
import queue
import time
from typing import Any

from celery import Celery
from kombu import Connection, Producer

from ingest.canonical import compact_json
from ingest.contract import PERSIST_EVENTS, declare_topology, event_ids_of, events_repr

logger = logging.getLogger(__name__)


class PublishError(Exception):
    """The broker did not confirm the message in time; the client should retry."""


class Publisher:
    def __init__(self, celery: Celery, timeout: float, pool_size: int) -> None:
        self.celery = celery
        self.timeout = timeout
        self._idle: queue.LifoQueue[Producer] = queue.LifoQueue(maxsize=pool_size)

    def publish(
        self,
        task_name: str,
        args: list[Any],
        headers: dict[str, Any],
        deadline: float | None = None,
        argsrepr: str | None = None,
    ) -> None:
        """Return once the broker confirmed a persistent message, or raise PublishError.
        `deadline` (time.monotonic()) defaults to the configured timeout from now."""
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        producer = self._take()
        pooled = producer is not None
        while True:
            try:
                producer = producer or self._connect(deadline - time.monotonic())
                self.celery.send_task(
                    task_name,
                    args=args,
                    headers=headers,
                    argsrepr=argsrepr,
                    producer=producer,
                    retry=False,
                    confirm_timeout=max(deadline - time.monotonic(), 0.001),
                    # An unroutable message (its queue deleted) comes back instead of being
                    # confirmed and dropped; the retry below declares the queues again.
                    mandatory=True,
                )
            except Exception as exc:
                _close(producer)
                producer = None
                if pooled and deadline - time.monotonic() > 0:
                    # An idle connection may have died with a broker restart, or the queues
                    # may be gone: try a fresh connection, which declares them.
                    self._drain()
                    pooled = False
                    continue
                raise PublishError(f"the broker did not confirm within {self.timeout}s") from exc
            self._give_back(producer)
            return

    def publish_events(
        self,
        events: list[dict[str, Any]],
        headers: dict[str, Any],
        deadline: float | None = None,
    ) -> None:
        """Publish `events` as one persist_events message: their ids, and the events as one
        JSON text that the worker hands to PostgreSQL without reading it."""
        event_ids = event_ids_of(events)
        self.publish(
            PERSIST_EVENTS,
            [event_ids, compact_json(events)],
            headers,
            deadline=deadline,
            argsrepr=events_repr(event_ids),
        )

    def check(self) -> None:
        """Raise if the broker cannot be reached within the timeout."""
        _close(self._connect(self.timeout))

    def close(self) -> None:
        self._drain()

    def _connect(self, timeout: float) -> Producer:
        connection: Connection = self.celery.connection_for_write(
            connect_timeout=max(timeout, 0.001),
            # A broker that stops reading must not hold a request thread on a full socket.
            transport_options={"write_timeout": self.timeout, "max_retries": 0},
        )
        try:
            # One try per node of BROKER_URL ("amqp://a//;amqp://b//"), with no sleep between;
            # connect() would sleep 2 s and try again, past the deadline.
            connection.ensure_connection(max_retries=max(len(connection.alt), 1) - 1)
            declare_topology(connection)
        except Exception:
            _close_connection(connection)
            raise
        return self.celery.amqp.Producer(connection.default_channel)

    def _take(self) -> Producer | None:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return None

    def _give_back(self, producer: Producer) -> None:
        try:
            self._idle.put_nowait(producer)
        except queue.Full:
            _close(producer)

    def _drain(self) -> None:
        while (producer := self._take()) is not None:
            _close(producer)


def _close(producer: Producer | None) -> None:
    if producer is not None:
        _close_connection(producer.connection)


def _close_connection(connection: Connection) -> None:
    try:
        connection.collect()  # drop the socket without a handshake that could block
    except Exception:
        logger.debug("Closing a broker connection failed", exc_info=True)
