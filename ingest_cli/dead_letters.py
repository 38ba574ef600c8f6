"""`ingest dead-letters list|replay`: look at what was parked in ingest.dead, and send it back.

Listing takes messages without acknowledging them and then closes its channel, so the broker
puts every one back: nothing is lost. (A quorum queue may then hand them out in another order;
nothing in ingest depends on the order of dead letters.) Replay publishes a copy to the
exchange and routing key the message died from (as its x-death header records), waits for the
broker's confirm, and only then acknowledges the dead message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import amqp
import click
from amqp.exceptions import MessageNacked
from kombu import Connection
from kombu.exceptions import OperationalError

from ingest.contract import DEAD_QUEUE, declare_topology, event_ids_of
from ingest_cli.context import CliContext, pass_cli

CONFIRM_TIMEOUT = 10
# Headers the broker sets on delivery; a copy published again must start without them.
BROKER_HEADERS = ("x-delivery-count",)


@dataclass(frozen=True)
class DeadLetter:
    task: str | None
    task_id: str | None
    event_ids: list[str]
    reason: str | None
    queue: str | None
    exchange: str | None
    routing_key: str | None
    count: int
    died_at: datetime | None

    @classmethod
    def of(cls, message: amqp.Message) -> DeadLetter:
        headers = message.properties.get("application_headers") or {}
        # The broker keeps the most recent death first.
        death = (headers.get("x-death") or [{}])[0]
        routing_keys = death.get("routing-keys") or [None]
        return cls(
            task=headers.get("task"),
            task_id=headers.get("id"),
            event_ids=event_ids_of(first_argument(message.body)),
            reason=death.get("reason"),
            queue=death.get("queue"),
            exchange=death.get("exchange"),
            routing_key=routing_keys[0],
            count=death.get("count", 0),
            died_at=death.get("time"),
        )

    def describe(self) -> str:
        shown = ", ".join(self.event_ids[:5])
        more = f" (+{len(self.event_ids) - 5} more)" if len(self.event_ids) > 5 else ""
        died_at = f"{self.died_at:%Y-%m-%d %H:%M:%S} UTC" if self.died_at else "unknown time"
        origin = (
            f"{self.reason} in {self.queue}, {self.count} time{'s' if self.count != 1 else ''},"
            f" last at {died_at}"
            if self.queue
            else "no x-death header: not dead-lettered by the broker, cannot be replayed"
        )
        return (
            f"{self.task or '(not a task)'} {self.task_id or '-'}\n"
            f"  events: {shown or '-'}{more}\n"
            f"  died: {origin}"
        )


def first_argument(body: bytes | str) -> Any:
    """The first argument of a Celery task message ([args, kwargs, embed]), None if it has none."""
    try:
        args = json.loads(body)[0]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return args[0] if isinstance(args, list) and args else None


@contextmanager
def broker(url: str) -> Iterator[Connection]:
    try:
        with Connection(url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            declare_topology(connection)
            yield connection
    except (OSError, amqp.AMQPError, MessageNacked, OperationalError) as exc:
        raise click.ClickException(f"broker error: {exc}") from None


def peek(connection: Connection, limit: int) -> tuple[int, list[DeadLetter]]:
    """How many messages ingest.dead holds, and the first `limit` of them, left in place."""
    channel = connection.channel()
    try:
        total = channel.queue_declare(DEAD_QUEUE, passive=True).message_count
        letters = []
        while len(letters) < min(limit, total):
            message = channel.basic_get(DEAD_QUEUE, no_ack=False)
            if message is None:
                break
            letters.append(DeadLetter.of(message))
    finally:
        # Every unacknowledged message goes back to the queue when its channel closes.
        channel.close()
    return total, letters


def replay(
    connection: Connection, limit: int | None, on_replayed: Callable[[DeadLetter], None]
) -> tuple[int, list[DeadLetter]]:
    """Send dead messages back where they died, in queue order, at most `limit` (looking at no
    more than the queue held at the start, so a message that dies again is not replayed twice).
    Returns how many were replayed and the ones that could not be."""
    source = connection.channel()
    target = connection.channel()
    try:
        total = source.queue_declare(DEAD_QUEUE, passive=True).message_count
        replayed, skipped = 0, []
        for _ in range(total):
            if replayed == limit:
                break
            message = source.basic_get(DEAD_QUEUE, no_ack=False)
            if message is None:
                break
            letter = DeadLetter.of(message)
            if letter.queue is None or letter.routing_key is None:
                skipped.append(letter)  # stays unacknowledged: back in the queue on close
                continue
            target.basic_publish_confirm(
                copy_of(message),
                exchange=letter.exchange or "",
                routing_key=letter.routing_key,
                # Unroutable (the queue is gone) raises instead of dropping the copy.
                mandatory=True,
                confirm_timeout=CONFIRM_TIMEOUT,
            )
            source.basic_ack(message.delivery_tag)
            replayed += 1
            on_replayed(letter)
    finally:
        target.close()
        source.close()
    return replayed, skipped


def copy_of(message: amqp.Message) -> amqp.Message:
    properties: dict[str, Any] = dict(message.properties)
    headers = dict(properties.get("application_headers") or {})
    for name in BROKER_HEADERS:
        headers.pop(name, None)
    properties["application_headers"] = headers
    properties["delivery_mode"] = 2
    return amqp.Message(message.body, **properties)


@click.group("dead-letters")
def dead_letters() -> None:
    """List or replay messages parked in ingest.dead.

    A message lands there when its task failed for good, or after it killed its worker 10
    times. Fix the cause first (see the worker's log for the task id), then replay.
    """


@dead_letters.command("list")
@click.option(
    "--limit", type=click.IntRange(1), default=100, show_default=True, help="Show at most N."
)
@pass_cli
def list_command(cli: CliContext, limit: int) -> None:
    """Show the dead messages, leaving them in place.

    For each: task, task id, event ids, and why, where, how often and when it died. Nothing
    is taken off the queue: every message listed goes back to it.
    """
    with broker(cli.settings().broker_url) as connection:
        total, letters = peek(connection, limit)
    for number, letter in enumerate(letters, 1):
        click.echo(f"{number}. {letter.describe()}")
    shown = f" (showing {len(letters)})" if len(letters) < total else ""
    click.echo(f"{DEAD_QUEUE} holds {total} message{'s' if total != 1 else ''}{shown}.")


@dead_letters.command("replay")
@click.option("--limit", type=click.IntRange(1), default=None, help="Replay at most N.")
@pass_cli
def replay_command(cli: CliContext, limit: int | None) -> None:
    """Send dead messages back to where they died.

    In queue order, each to the exchange and routing key that delivered it to the queue it
    died in (its x-death header).
    Each copy is confirmed by the broker before the dead message is removed, so a failure
    part way loses nothing. A message that fails again is dead-lettered again.
    """

    def report(letter: DeadLetter) -> None:
        ids = ", ".join(letter.event_ids[:5]) or "-"
        click.echo(f"replayed {letter.task} {letter.task_id} to {letter.queue} (events: {ids})")

    with broker(cli.settings().broker_url) as connection:
        replayed, skipped = replay(connection, limit, report)
    for letter in skipped:
        click.echo(f"skipped {letter.describe()}", err=True)
    click.echo(
        f"Replayed {replayed} message{'s' if replayed != 1 else ''}"
        + (f"; {len(skipped)} could not be replayed and stay in {DEAD_QUEUE}." if skipped else ".")
    )
